"""Probe of the demo's pretrained encoder on the embedded synthetic motion task (8 directions, chance 12.5%).

  jepa probe --config configs/probe/demo.py --workdir runs/demo/probe_grid
  jepa probe --config configs/probe/demo.py:smoke --workdir /tmp/probe     # seconds, for tests
"""
import ml_collections

from jepa.data.synthetic import synthetic_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    smoke = arg == "smoke"
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.encoder_bundle = "runs/demo/pretrain/model"
    c.task = "classification"
    c.num_classes = (8,)
    c.layers = ()  # encoder blocks whose outputs are concatenated as features; () = the final output
    c.future_steps = 0  # the pretrained predictor's tokens of this many future tubelet steps appended (0: none)
    c.features = "cache"  # no augmentation here: encode the training clips once, to disk ("online": every step)
    # Training clips: the whole clip, 8 frames, no flip (a flip would change the direction labels).
    c.data = synthetic_config("runs/demo/data", num_frames=8, crop_size=32 if smoke else 64, batch_size=0)
    c.eval = ml_collections.ConfigDict(dict(split="validation", num_views=1, num_segments=1, batch_size=32,
                                            max_clips=0))  # 0: every record
    c.probe = ml_collections.ConfigDict(dict(depth=0, num_heads=4))  # the reference: depth 3, 16 heads
    c.grid = ml_collections.ConfigDict(dict(lrs=[1e-2, 3e-3] if smoke else [1e-2, 3e-3, 1e-3, 3e-4, 1e-4],
                                            wds=[0.05] if smoke else [0.01, 0.1, 0.4, 0.8]))
    c.train = ml_collections.ConfigDict(dict(epochs=2 if smoke else 8, batch_size=16 if smoke else 32,
                                             warmup_epochs=0.0 if smoke else 1.0,
                                             epoch_clips=64 if smoke else 1024,  # clips per epoch (0: all records)
                                             checkpoint_every=0))
    c.mesh = ml_collections.ConfigDict(dict(data=-1))
    return c
