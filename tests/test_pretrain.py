"""Pretraining end to end on the embedded synthetic data: 2-process training, non-finite guard, config validation,
gradient accumulation, the regulariser. (Faults: kill -9, SIGTERM, damaged checkpoints and records: test_faults.py.)"""
import json
import os
import signal
import subprocess
import sys

import pytest

from tests.processes import logged_losses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/pretrain/demo.py") + ":smoke"


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    from jepa.data.synthetic import write_synthetic

    d = tmp_path_factory.mktemp("synthetic")
    write_synthetic(str(d), num_train=96, num_val=16, num_shards=2, seed=0, size=32, frames=8, progress=False)
    return str(d)


def _pretrain(workdir, data_dir, *overrides, env=None, devices=1):
    cmd = [sys.executable, "-m", "jepa.cli", "pretrain", "--config", CONFIG, "--workdir", str(workdir),
           f"--config.data.sources=[{{'glob': '{data_dir}/synthetic-{{split}}-*.array_record'}}]", *overrides]
    e = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
         **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_agree_and_match_single_process(tmp_path, synthetic_dir):
    steps = ["--config.train.steps=3", "--config.train.checkpoint_every=0", "--config.train.export_model=False"]
    single = _pretrain(tmp_path / "single", synthetic_dir, *steps, "--config.train.data_shards=2")
    assert single.returncode == 0, single.stderr[-3000:]

    cmd = ["bash", os.path.join(ROOT, "launch/local.sh"), "2", "2", "--", sys.executable, "-m", "jepa.cli",
           "pretrain", "--config", CONFIG, "--workdir", str(tmp_path / "multi"),
           f"--config.data.sources=[{{'glob': '{synthetic_dir}/synthetic-{{split}}-*.array_record'}}]", *steps]
    multi = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "LOGDIR": str(tmp_path)})
    assert multi.returncode == 0, multi.stderr[-3000:]
    p0, p1 = logged_losses(tmp_path / "multi"), logged_losses(tmp_path / "multi", "metrics.p1.jsonl")
    ref = logged_losses(tmp_path / "single")
    print("single process:", ref, "\nprocess 0:", p0, "\nprocess 1:", p1)
    assert p0 == p1  # both processes see the same global loss
    assert sorted(p0) == sorted(ref) == [1, 2, 3]
    for s in ref:
        assert abs(p0[s] - ref[s]) <= 1e-5, (s, p0[s], ref[s])


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, synthetic_dir):
    # Step 1 trains at start_lr; from step 2 the learning rate is absurd and the parameters overflow.
    r = _pretrain(tmp_path / "nan", synthetic_dir, "--config.train.steps=5", "--config.train.checkpoint_every=1",
                  "--config.optim.warmup_steps=1", "--config.optim.lr=1e38", "--config.optim.start_lr=1e-4")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "non-finite loss, gradient or parameters at step 2" in r.stderr
    assert "Last good checkpoint: step 1" in r.stderr
    assert sorted(os.listdir(tmp_path / "nan" / "checkpoints")) == ["1"]


@pytest.mark.parametrize("override,message", [
    ("--config.data.crop_size=36", "crop_size 36 is not divisible by model.encoder.patch_size 8"),
    ("--config.data.num_frames=7", "num_frames 7 is not divisible by model.encoder.tubelet_size 2"),
    ("--config.mesh.fsdp=3", "does not divide the 1 available devices"),
    ("--config.train.accum_steps=3", "train.batch_size 8 is not divisible by train.accum_steps 3"),
    ("--config.reg.on=['context','target']", "reg.on: ['context', 'target'] has places other than"),
    ("--config.reg.var_weight=-1.0", "reg: weights must be >= 0"),
])
def test_invalid_configs_fail_before_compiling(override, message):
    from jepa.config import load_config
    from jepa.train.pretrain import build

    cfg = load_config(CONFIG, [override])
    with pytest.raises(ValueError, match="invalid config") as e:
        build(cfg)
    assert message in str(e.value)


def test_gradient_accumulation_matches_full_batch_and_bf16_runs():
    import jax
    import numpy as np

    from jepa import sharding
    from jepa.config import load_config
    from jepa.train.pretrain import batch_spec, build, compile_step, create_state

    def one_step(overrides):
        exp = build(load_config(CONFIG, overrides))
        state, shard = create_state(exp, 0)
        spec = batch_spec(exp)
        compiled, _ = compile_step(exp, shard, spec)
        rng = np.random.default_rng(0)
        batch = {"video": rng.normal(size=spec["video"].shape).astype(np.float32), **exp.masker(8, rng)}
        with exp.mesh:
            new, m = compiled(state, sharding.global_batch(batch, exp.mesh))
        return float(m["loss"]), jax.device_get(new["params"])

    # The variance/covariance regulariser takes its statistics per micro-batch, so the equality holds without it.
    loss1, p1 = one_step(["--config.reg.on=[]"])
    loss2, p2 = one_step(["--config.reg.on=[]", "--config.train.accum_steps=2"])
    print(f"full batch loss {loss1:.7f}, 2 micro-batches {loss2:.7f}")
    assert abs(loss1 - loss2) < 1e-6
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p1, p2))
    assert max(diffs) < 1e-5
    loss_bf16, _ = one_step(["--config.reg.on=[]", "--config.model.encoder.dtype=bfloat16",
                             "--config.model.predictor.dtype=bfloat16"])
    print(f"bf16 compute loss {loss_bf16:.5f}")
    assert np.isfinite(loss_bf16) and abs(loss_bf16 - loss1) < 0.05
    loss_mixed, _ = one_step(["--config.reg.on=[]", "--config.model.encoder.matmul_dtype=bfloat16",
                              "--config.model.predictor.matmul_dtype=bfloat16"])
    print(f"bf16 matmuls loss {loss_mixed:.5f}")
    assert np.isfinite(loss_mixed) and 0 < abs(loss_mixed - loss1) < 0.01


def _dot_flops(jaxpr) -> int:
    """FLOPs of every dot_general in a jaxpr and the jaxprs it calls (scan bodies times their length)."""
    import math

    from jax.extend import core as jcore

    total = 0
    for e in jaxpr.eqns:
        if e.primitive.name == "dot_general":
            (contract, _), _ = e.params["dimension_numbers"]
            lhs = e.invars[0].aval.shape
            total += 2 * math.prod(e.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
        times = e.params["length"] if e.primitive.name == "scan" else 1
        for v in e.params.values():
            for sub in v if isinstance(v, (tuple, list)) else (v,):
                sub = sub.jaxpr if isinstance(sub, jcore.ClosedJaxpr) else sub
                if isinstance(sub, jcore.Jaxpr):
                    flops = _dot_flops(sub)
                    assert not (flops and e.primitive.name == "while"), "products inside a while loop"
                    total += times * flops
    return total


def test_step_flops_are_the_flops_of_every_product_of_the_step():
    """`step_flops` (the MFU's numerator, and the product list the benchmark's XLA:CPU ceiling times) counts exactly
    the matrix products the train step's program does: every dot_general of its jaxpr (forward, backward, scanned
    blocks). Batch 2 keeps attention on the batched path (no rematerialised products)."""
    import jax

    from jepa.config import load_config
    from jepa.train.pretrain import abstract_state, batch_spec, build, step_flops, train_step

    exp = build(load_config(CONFIG, ["--config.reg.on=[]", "--config.train.batch_size=2"]))
    jaxpr = jax.make_jaxpr(lambda s, b: train_step(s, b, exp))(abstract_state(exp)[0], batch_spec(exp)).jaxpr
    assert _dot_flops(jaxpr) == step_flops(exp, 2) > 0


def test_variance_covariance_regulariser():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jepa.config import load_config
    from jepa.train.pretrain import build, variance_covariance

    rng = np.random.default_rng(0)
    wide = jnp.asarray(rng.normal(size=(4, 2000, 8)) * 2.0, jnp.float32)   # std 2 > 1, independent dims
    var, cov = variance_covariance(wide)
    assert float(var) == 0.0 and float(cov) < 0.05
    const = jnp.ones((3, 5, 8))                                              # fully collapsed
    var, cov = variance_covariance(const)
    np.testing.assert_allclose(float(var), 1.0 - np.sqrt(1e-4), rtol=1e-6)
    assert float(cov) == 0.0
    x = rng.normal(size=(5000, 1))
    twin = jnp.asarray(np.concatenate([x, x, rng.normal(size=(5000, 2))], 1), jnp.float32)  # two equal dims
    _, cov = variance_covariance(twin)
    np.testing.assert_allclose(float(cov), 2 * 1.0 / 4, rtol=0.1)           # 2 off-diagonal entries of ~1, / D
    # The variance hinge pushes a shrunken feature's spread up.
    g = jax.grad(lambda s: variance_covariance(s * wide / 4.0)[0])(1.0)
    assert float(g) < 0

    on = build(load_config(CONFIG)).reg
    assert on.on == ("context", "predictor") and on.var_weight > 0
    assert build(load_config(CONFIG, ["--config.reg.on=[]"])).reg.on == ()
