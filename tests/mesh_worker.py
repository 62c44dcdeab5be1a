"""Subprocess worker for the mesh tests: runs a few pretraining steps on fixed random batches on the given meshes
and prints one JSON line per mesh: {"mesh": ..., "losses": [...], "param_bytes": per-device parameter bytes}.

Run with XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX starts.
"""
import json
import sys

import jax
import numpy as np

from jepa import sharding
from jepa.config import load_config
from jepa.train import pretrain as P


def run(mesh: dict, steps: int, overrides: list[str]) -> dict:
    cfg = load_config("configs/pretrain/demo.py:smoke", overrides)
    with cfg.unlocked():
        cfg.mesh.update(mesh)
    exp = P.build(cfg)
    state, shard = P.create_state(exp, cfg.seed)
    spec = P.batch_spec(exp)
    compiled, _ = P.compile_step(exp, shard, spec)
    rng = np.random.default_rng(0)
    losses = []
    with exp.mesh:
        for _ in range(steps):
            b = {"video": rng.normal(size=spec["video"].shape).astype(np.float32),
                 **exp.masker(spec["video"].shape[0], rng)}
            state, m = compiled(state, sharding.global_batch(b, exp.mesh))
            losses.append(float(m["loss"]))
    return {"mesh": mesh, "losses": losses, "param_bytes": sharding.per_device_bytes(state["params"]),
            "total_param_bytes": sum(x.nbytes for x in jax.tree.leaves(state["params"]))}


if __name__ == "__main__":
    meshes = json.loads(sys.argv[1])
    steps = int(sys.argv[2])
    overrides = sys.argv[3:]
    for mesh in meshes:
        print(json.dumps(run(mesh, steps, overrides)), flush=True)
