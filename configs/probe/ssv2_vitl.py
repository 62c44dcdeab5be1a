"""SSv2 attentive probe on a frozen ViT-L, V-JEPA 2's protocol: 16 frames at stride 4 (fps None), 2 temporal
segments x 3 spatial views at 256 px in evaluation, the tokens of a view's segments concatenated, softmax averaged
over views; RandAugment m7 n4, random resized crop 0.08-1 and random erasing 0.25 in training; 20 probes (lr x wd)
trained together, the best reported.

  jepa data shard --format ssv2 --root /data/ssv2 --split train --out /data/shards --name ssv2-train ...
  jepa data shard --format ssv2 --root /data/ssv2 --split validation --out /data/shards --name ssv2-validation ...
  jepa convert --from original --src vitl.pt --out bundles/vitl
  jepa probe --config configs/probe/ssv2_vitl.py --workdir runs/probe/ssv2_vitl

Training clips are 2 segments too (one random clip in each half of the video, one spatial augmentation for both).
"""
import ml_collections

from jepa.data.pipeline import default_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.encoder_bundle = "bundles/vitl"
    c.task = "classification"
    c.num_classes = (174,)
    c.layers = ()
    c.future_steps = 0  # the pretrained predictor's tokens of this many future tubelet steps appended (0: none)
    c.features = "online"  # computed inside the step (augmented clips); "cache": encoded once to disk
    c.data = default_config()
    c.data.sources = [{"glob": "/data/shards/ssv2-{split}-*.array_record"}]
    c.data.update(num_frames=16, fps=None, stride=4, num_segments=2, crop_size=256, scale=(0.08, 1.0), flip=True,
                  randaugment=(4, 7), erase_prob=0.25, num_workers=8, batch_size=0)
    c.eval = ml_collections.ConfigDict(dict(split="validation", num_views=3, num_segments=2, batch_size=16,
                                            max_clips=0))
    c.probe = ml_collections.ConfigDict(dict(depth=3, num_heads=16))
    c.grid = ml_collections.ConfigDict(dict(lrs=[5e-3, 3e-3, 1e-3, 3e-4, 1e-4], wds=[0.01, 0.1, 0.4, 0.8]))
    c.train = ml_collections.ConfigDict(dict(epochs=20, batch_size=256, warmup_epochs=0.0, epoch_clips=0,
                                             checkpoint_every=1000))
    c.mesh = ml_collections.ConfigDict(dict(data=-1))
    return c
