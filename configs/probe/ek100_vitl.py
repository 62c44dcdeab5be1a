"""EPIC-KITCHENS-100 action anticipation on a frozen ViT-L, V-JEPA 2's protocol: 32 frames at 8 fps ending
tau_a = 1 s before the action starts, three queries (verb, noun, action), sigmoid focal loss (alpha 0.25, gamma 2),
class-mean recall@5 per head with the actions restricted to (verb, noun) pairs seen in training; 20 probes.

  jepa data shard --format ek100 --root /data/ek100 --split train --out /data/shards --name ek100-train ...
  jepa data shard --format ek100 --root /data/ek100 --split validation --out /data/shards --name ek100-validation ...
  jepa probe --config configs/probe/ek100_vitl.py --workdir runs/probe/ek100_vitl

`future_steps`: the reference's option of appending the pretrained predictor's tokens of the next frames to the
observed clip's (the bundle must hold the pretraining run's `predictor`; e.g. --config.future_steps=1).
"""
import ml_collections

from jepa.data.pipeline import default_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.encoder_bundle = "bundles/vitl"
    c.task = "anticipation"
    c.num_classes = (97, 300, 3568)  # verbs, nouns, actions (the shards' metadata: num_verb_classes, ...)
    c.layers = ()
    c.future_steps = 0  # > 0: the pretrained predictor's tokens of that many future tubelet steps appended
    c.features = "online"  # computed inside the step (augmented clips); "cache": encoded once to disk
    c.data = default_config()
    c.data.sources = [{"glob": "/data/shards/ek100-{split}-*.array_record"}]
    c.data.update(num_frames=32, fps=8.0, mode="anticipation", tau_a=1.0, crop_size=256, scale=(0.08, 1.0),
                  flip=True, randaugment=(4, 7), erase_prob=0.25, num_workers=8, batch_size=0)
    c.eval = ml_collections.ConfigDict(dict(split="validation", num_views=1, num_segments=1, batch_size=16,
                                            max_clips=0))
    c.probe = ml_collections.ConfigDict(dict(depth=3, num_heads=16))
    c.grid = ml_collections.ConfigDict(dict(lrs=[5e-3, 3e-3, 1e-3, 3e-4, 1e-4], wds=[0.01, 0.1, 0.4, 0.8]))
    c.train = ml_collections.ConfigDict(dict(epochs=20, batch_size=128, warmup_epochs=0.0, epoch_clips=0,
                                             checkpoint_every=1000))
    c.mesh = ml_collections.ConfigDict(dict(data=-1))
    return c
