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
    # the forward's and the step's ratio goals carry the XLA:CPU ceiling measured from their products alone
    ceilings = {t["name"]: t["ceiling"] for t in targets if t["name"] in ("tiny forward vs PyTorch", "tiny step vs PyTorch")}
    assert len(ceilings) == 2 and all(math.isfinite(c) and c > 0 for c in ceilings.values()), ceilings
    md = (out / "BENCHMARKS.md").read_text()
    assert md.startswith("# Benchmarks") and "## Machine" in md and "## Targets" in md
    assert "f32 matmul peak" in md and "jax" in md


def test_bench_refuses_an_unknown_benchmark(capfd):
    from jepa.cli import main

    assert main(["bench", "--only", "nope"]) == 2
    err = capfd.readouterr().err
    assert "unknown benchmarks ['nope']" in err and "Traceback" not in err


def test_products_alone_are_timed_in_both_frameworks_and_sum_their_flops():
    """`jepa.bench.products` times each shape of a product list in XLA and in PyTorch and sums count x time: the
    FLOPs are the list's, alike products are timed once with their counts added, every shape gets a positive time."""
    from jepa.bench.products import _calls, time_products
    from jepa.train.flops import Product

    prods = [Product(64, 32, 48, count=3), Product(16, 8, 16, count=4, group=2), Product(64, 32, 48)]
    out = time_products(prods, threads=1)
    assert out["flops"] == sum(p.flops for p in prods) == 2 * (4 * 64 * 32 * 48 + 4 * 16 * 8 * 16)
    assert len(out["shapes"]) == 2 and {s["count"] for s in out["shapes"]} == {4}
    assert all(s["jax_flops_per_s"] > 0 and s["torch_flops_per_s"] > 0 for s in out["shapes"])
    assert out["jax_s"] > 0 and out["torch_s"] > 0
    # small products are repeated within a call; a large one runs alone, and a group too large to batch is not
    assert max(_calls(64, 32, 48, 1)) > 1 and _calls(4096, 4096, 4096, 1) == [1]
    assert max(_calls(1568, 64, 1568, 24)) < 24
