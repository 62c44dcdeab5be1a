"""Pretraining end to end on the embedded synthetic data: bitwise resume after SIGKILL, 2-process training,
non-finite guard, config validation."""
import json
import os
import signal
import subprocess
import sys

import pytest

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


def _losses(workdir, name="metrics.jsonl"):
    rows = {}
    with open(os.path.join(workdir, name)) as f:
        for line in f:
            r = json.loads(line)
            rows[r["step"]] = r["loss"]
    return rows


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_identical(tmp_path, synthetic_dir):
    n = 3
    common = [f"--config.train.steps={2 * n}", f"--config.train.checkpoint_every={n}"]
    full = _pretrain(tmp_path / "full", synthetic_dir, *common)
    assert full.returncode == 0, full.stderr[-3000:]

    crashed = _pretrain(tmp_path / "crash", synthetic_dir, *common,
                        env={"JEPA_FAULT_KILL_AFTER_CHECKPOINT": str(n)})
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr[-3000:])
    assert sorted(os.listdir(tmp_path / "crash" / "checkpoints")) == [str(n)]
    resumed = _pretrain(tmp_path / "crash", synthetic_dir, *common)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed at step {n}" in resumed.stderr + resumed.stdout

    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "crash")
    print("uninterrupted:", [a[s] for s in range(1, 2 * n + 1)])
    print("resumed      :", [b[s] for s in range(1, 2 * n + 1)])
    for s in range(n + 1, 2 * n + 1):
        assert a[s] == b[s], (s, a[s], b[s])  # bit for bit (float32 -> JSON float round-trips exactly)
    assert len({a[s] for s in a}) > 1

    # Collapse indicators: within-clip spread can never exceed the spread over the whole batch (total variance).
    with open(tmp_path / "full" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    from jepa.config import load_config

    reg = load_config(CONFIG).reg
    for r in rows:
        assert 0.0 < r["target_token_std"] <= r["target_std"] + 1e-6, r
        # The objective is the prediction loss plus the configured variance/covariance terms.
        total = r["pred_loss"] + reg.var_weight * r["reg_var"] + reg.cov_weight * r["reg_cov"]
        assert abs(r["loss"] - total) <= 1e-5 * max(1.0, total), r
    # The exported bundle holds the EMA target encoder, the online context encoder and the predictor.
    from jepa.models.io import load_bundle

    bundle = load_bundle(str(tmp_path / "full" / "model"), ["encoder", "context_encoder", "predictor"])
    assert set(bundle) >= {"encoder", "context_encoder", "predictor"}


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
    p0, p1 = _losses(tmp_path / "multi"), _losses(tmp_path / "multi", "metrics.p1.jsonl")
    ref = _losses(tmp_path / "single")
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


def test_unknown_config_key_is_one_clear_error():
    from jepa.config import load_config

    with pytest.raises(KeyError, match="unknown config key 'train.stepz'"):
        load_config(CONFIG, ["--config.train.stepz=3"])


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


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, synthetic_dir):
    from tests.processes import sigterm_after_logged_steps

    workdir = tmp_path / "term"
    cmd = [sys.executable, "-m", "jepa.cli", "pretrain", "--config", CONFIG, "--workdir", str(workdir),
           f"--config.data.sources=[{{'glob': '{synthetic_dir}/synthetic-{{split}}-*.array_record'}}]",
           "--config.train.steps=100000", "--config.train.checkpoint_every=0"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    rc, out, err = sigterm_after_logged_steps(cmd, cwd=ROOT, env=env, metrics=workdir / "metrics.jsonl")
    assert rc == 0, err[-3000:]
    steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints"))
    assert len(steps) == 1 and steps[0] >= 2, steps
    assert f"SIGTERM: saving step {steps[0]}" in out + err
    assert not (workdir / "model").exists()  # an interrupted run exports nothing

    # Resumed to the end, the run exports its model; extended to more steps, it replaces that export.
    for end in (steps[0] + 1, steps[0] + 2):
        res = _pretrain(workdir, synthetic_dir, f"--config.train.steps={end}", "--config.train.checkpoint_every=0")
        assert res.returncode == 0, res.stderr[-3000:]
        assert f"resumed at step {end - 1}" in res.stdout + res.stderr
        meta = json.loads((workdir / "model" / "config.json").read_text())["meta"]
        assert meta["step"] == end, meta


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
