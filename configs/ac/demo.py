"""Demo AC-predictor training on simulated robot episodes (`jepa collect`) with the demo's pretrained encoder.

  jepa collect --task jepa/Push-v0 --episodes 200 --out runs/demo/robot
  jepa train-ac --config configs/ac/demo.py --workdir runs/demo/ac
"""
import ml_collections

from jepa.models.config import ACPredictorConfig
from jepa.sharding import DEFAULT_RULES


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    smoke = arg == "smoke"
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.encoder_bundle = "runs/demo/pretrain/model"
    c.features = "cache"  # 'cache': encode every frame once; 'online': encode inside the step
    c.data = ml_collections.ConfigDict(dict(
        paths=["runs/demo/robot"], split="train", camera="exterior_image_1_left", frame_stride=1, size=64,
        clip_frames=4, val_fraction=0.15,
        normalize=True))  # standardise actions/states with training-set statistics (kept in the bundle)
    # residual=True: the predictor outputs frame t plus a change, its output layer zero-initialised, so it starts as
    # the copy-last-frame model (the released V-JEPA 2-AC predicts frames directly: residual=False).
    # pos_embed=True: a learned absolute position per patch token (the released model has RoPE only); with the
    # fixed camera it lets the predictor place the arm from its state. rope='rotation': a true relative rotation
    # (the released model's 'reference' RoPE is kept for checkpoints trained with it).
    # Measured on held-out episodes (same encoder, 600 steps): 1.13x below copy-last without these, 1.18x with.
    c.model = ACPredictorConfig(width=64 if smoke else 128, depth=1 if smoke else 4, num_heads=4,
                                mlp_dim=128 if smoke else 512, residual=not smoke, pos_embed=True,
                                rope="rotation").to_dict()
    # The held-out ratio (copy-last L1 / rollout L1) rises slowly, then fast once the predictor places the arm at
    # token precision (measured, this config): 1.11x at 250 steps, 1.21x at 1000, 1.34x at 1500, 1.60x at 2000,
    # 1.76x at 2500 (end of the constant lr), 2.00x at 2750, 2.12x at 3000. 2000 steps (300 cooldown) end at 1.74x.
    c.optim = ml_collections.ConfigDict(dict(lr=1e-3, start_lr=1e-4, warmup_steps=10 if smoke else 100,
                                             cooldown_steps=10 if smoke else 600, weight_decay=0.04, clip_norm=0.0))
    c.train = ml_collections.ConfigDict(dict(steps=20 if smoke else 3000, batch_size=8 if smoke else 16,
                                             rollout_steps=2, eval_every=10 if smoke else 250,
                                             checkpoint_every=10 if smoke else 500, keep_checkpoints=2))
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
    c.rules = [list(r) for r in DEFAULT_RULES]
    return c
