"""Pretraining on simulated 8-device meshes equals the single-device run; FSDP shards parameters."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ["--config.model.encoder.width=64", "--config.model.predictor.embed_dim=64",
             "--config.model.encoder.num_heads=4", "--config.model.predictor.width=32"]


def _run(devices: int, meshes: list[dict], steps: int = 3) -> list[dict]:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "mesh_worker.py"), json.dumps(meshes),
                          str(steps), *OVERRIDES], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_meshes_match_single_device_and_fsdp_shards_params():
    (single,) = _run(1, [{"data": 1, "fsdp": 1}])
    multi = _run(8, [{"data": 8, "fsdp": 1}, {"data": 2, "fsdp": 4}, {"data": 1, "fsdp": 8}])
    print("single device:", single["losses"])
    for r in multi:
        diff = max(abs(a - b) for a, b in zip(r["losses"], single["losses"]))
        print(f"mesh {r['mesh']}: losses {r['losses']} max |diff| {diff:.2e}; "
              f"per-device param bytes {r['param_bytes']} of {r['total_param_bytes']}")
        assert len(r["losses"]) == len(single["losses"]) == 3
        assert diff <= 1e-5, (r["mesh"], r["losses"], single["losses"])
    # The losses must move (the test would be vacuous on a frozen model).
    assert single["losses"][0] != single["losses"][-1]
    fsdp8 = multi[2]
    ratio = fsdp8["param_bytes"] / fsdp8["total_param_bytes"]
    data8 = multi[0]
    assert data8["param_bytes"] == data8["total_param_bytes"]  # pure data parallel replicates
    assert 1 / 8 <= ratio < 1 / 8 * 1.25, ratio  # FSDP: about 1/8 per device (small vectors stay replicated)
