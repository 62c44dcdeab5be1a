"""Demo pretraining: a small ViT on the embedded synthetic motion videos, on a 2-core CPU in a few minutes.

  jepa pretrain --config configs/pretrain/demo.py --workdir runs/demo/pretrain
  jepa pretrain --config configs/pretrain/demo.py:smoke --workdir /tmp/smoke     # seconds, for tests
"""
import ml_collections

from jepa.data.synthetic import synthetic_config
from jepa.masking import BlockSpec
from jepa.models.config import PredictorConfig, encoder_preset
from jepa.sharding import DEFAULT_RULES


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    smoke = arg == "smoke"
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = ml_collections.ConfigDict()
    c.model.encoder = encoder_preset("vit_test", width=96, depth=4, num_heads=4, mlp_dim=384, patch_size=8).to_dict()
    c.model.predictor = PredictorConfig(embed_dim=96, width=64, depth=2, num_heads=4, mlp_dim=256,
                                        num_mask_tokens=2).to_dict()
    if smoke:
        c.model.encoder.update(width=32, depth=1, num_heads=2, mlp_dim=64)
        c.model.predictor.update(embed_dim=32, width=32, depth=1, num_heads=2, mlp_dim=64)
    # Multi-block masks: short-range 8 x 0.15 and long-range 2 x 0.70, all time steps, aspect 0.75-1.5.
    c.mask = [vars(BlockSpec(8, (0.15, 0.15))), vars(BlockSpec(2, (0.7, 0.7)))]

    # The embedded synthetic videos (jepa.data.synthetic), read through the same grain path as real datasets.
    c.data = synthetic_config("runs/demo/data", num_frames=8, crop_size=32 if smoke else 64, flip=True,
                              batch_size=0,  # set per process from train.batch_size
                              num_workers=0 if smoke else 1)  # one decoding process overlaps the train step

    # Not in the reference: a C-JEPA-style (Mo et al. 2024) variance/covariance term on the context encoder's and the
    # predictor's tokens. Without it this short run collapses the features to a few directions (effective rank ~4 of
    # 96) and its probe lost to a random-init encoder; see README "Pretraining". reg.on=[] gives the reference.
    c.reg = ml_collections.ConfigDict(dict(var_weight=1.0, cov_weight=0.1, std_target=1.0,
                                           on=["context", "predictor"]))
    # EMA 0.99 -> 0.999: over a run this short, 0.996 -> 0.9995 would leave about half of the random init in the
    # exported EMA encoder (the product of the momenta is ~e^-0.68). The reference runs 0.99925 for ~250k steps.
    c.optim = ml_collections.ConfigDict(dict(
        lr=1e-3, start_lr=2e-4, final_lr=1e-5, warmup_steps=40, cooldown_steps=100, weight_decay=0.04,
        b1=0.9, b2=0.999, eps=1e-8, clip_norm=0.0, ema_start=0.99, ema_end=0.999))
    c.train = ml_collections.ConfigDict(dict(
        steps=6 if smoke else 500, batch_size=8 if smoke else 16, accum_steps=1, mask_index=0,
        checkpoint_every=3 if smoke else 100, keep_checkpoints=2, peak_tflops=0.0, export_model=True, data_shards=0))
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
    c.rules = [list(r) for r in DEFAULT_RULES]
    return c
