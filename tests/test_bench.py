"""`jepa bench --quick` runs every benchmark on the tiny config and writes BENCHMARKS.md and benchmarks.json.

Benchmarks are not tests: nothing here checks a speed. It checks that the one command runs end to end, that every
benchmark produced its section with finite ratios and the targets it checks, and that the report says what it
measured on."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.reference_extra import require

require(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.xdist_group("bench")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "jepa.cli", "bench", "--quick", "--out", str(out),
                           "--workdir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    return out, proc


def test_quick_bench_writes_its_report(quick_run):
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "benchmarks.json").read_text())
    assert report["errors"] == {}
    keys = {s["key"] for s in report["sections"]}
    for needed in ("forward", "step", "mixed", "data", "memory", "profile"):
        assert needed in keys, keys
    assert any(k.startswith("world_model") for k in keys), keys
    assert report["peak"]["peak_flops"] > 1e9
    targets = [t for s in report["sections"] for t in s["targets"]]
    assert len(targets) >= 5
    for t in targets:
        assert math.isfinite(t["value"]) and t["value"] > 0, t
    md = (out / "BENCHMARKS.md").read_text()
    assert md.startswith("# Benchmarks") and "## Machine" in md and "## Targets" in md
    assert "f32 matmul peak" in md and "jax" in md


def test_bench_refuses_an_unknown_benchmark(capfd):
    from jepa.cli import main

    assert main(["bench", "--only", "nope"]) == 2
    err = capfd.readouterr().err
    assert "unknown benchmarks ['nope']" in err and "Traceback" not in err
