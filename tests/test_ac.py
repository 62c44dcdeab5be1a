"""AC-predictor training end to end on tiny `jepa collect` episodes with a tiny random encoder bundle: the loss
falls, eval.json and the model bundle are consistent, a run resumes from its checkpoint, and on-the-fly encoding
('online') computes the same loss as cached features."""
from __future__ import annotations

import glob
import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

from jepa import world_model as wm  # noqa: E402
from jepa.config import load_config  # noqa: E402
from jepa.train import ac  # noqa: E402
from tests.processes import stop_after  # noqa: E402

# One xdist worker runs the whole module, so its module-scoped training runs are built once.
pytestmark = pytest.mark.xdist_group("ac")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/ac/demo.py") + ":smoke"
N = 6  # steps of the first run; the resumed run goes to 2N
SIZE = 32
PEAK_LR, START_LR = 1e-3, 1e-4


def _config(encoder: str, data: str, *, steps: int, features: str = "cache"):
    cfg = load_config(CONFIG)
    cfg.encoder_bundle = encoder
    cfg.features = features
    cfg.data.paths = [data]
    cfg.data.size = SIZE
    cfg.data.clip_frames = 4
    cfg.data.val_fraction = 0.125  # 7 train / 1 held-out episode
    cfg.optim.lr, cfg.optim.start_lr = PEAK_LR, START_LR
    cfg.optim.warmup_steps, cfg.optim.cooldown_steps = 2, 2
    cfg.train.steps = steps
    cfg.train.checkpoint_every = N
    cfg.train.eval_every = N
    return cfg


def _metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny encoder bundle and 8 episodes x 12 steps; runs: cache N steps, resumed to 2N, online 2 steps."""
    from jepa.models import VisionTransformer
    from jepa.models.config import ViTConfig
    from jepa.models.io import save_bundle
    from planning.collect import collect

    root = tmp_path_factory.mktemp("ac")
    vit = ViTConfig(width=32, depth=1, num_heads=2, mlp_dim=64, patch_size=8, tubelet_size=2)
    encoder = str(save_bundle(root / "encoder", {"encoder": VisionTransformer(vit, rngs=nnx.Rngs(0))}))
    data = str(collect("push", episodes=8, out=root / "robot", steps=12, size=SIZE, seed=0, progress=False))

    resume = str(root / "resume")
    out = {"encoder": encoder, "data": data, "resume": resume, "online": str(root / "online")}
    ac.train(_config(encoder, data, steps=N), resume)
    out["first"] = _metrics(resume)
    out["first_eval"] = json.load(open(os.path.join(resume, "eval.json")))
    out["eval"] = ac.train(_config(encoder, data, steps=2 * N), resume)
    # A 2N-step run stopped after step N (as SIGTERM stops it) and run again, and the same 2N steps straight.
    out["interrupted"], out["straight"] = str(root / "interrupted"), str(root / "straight")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ac, "StopSignal", stop_after(N))
        assert ac.train(_config(encoder, data, steps=2 * N), out["interrupted"]) == {"stopped_at_step": N}
    out["interrupted_eval"] = ac.train(_config(encoder, data, steps=2 * N), out["interrupted"])
    out["straight_eval"] = ac.train(_config(encoder, data, steps=2 * N), out["straight"])
    ac.train(_config(encoder, data, steps=2, features="online"), out["online"])
    return out


def test_training_loss_falls(runs):
    rows = _metrics(runs["resume"])
    loss = np.array([r["loss"] for r in rows])
    assert np.all(np.isfinite(loss))
    first, last = loss[:3].mean(), loss[-3:].mean()
    print("loss per step:", np.round(loss, 4).tolist())
    assert last < 0.8 * first, (first, last)
    assert {"loss_tf", "loss_rollout", "grad_norm", "lr"} <= set(rows[0])
    np.testing.assert_allclose([r["loss"] for r in rows], [r["loss_tf"] + r["loss_rollout"] for r in rows], rtol=1e-5)
    # the intermediate evaluation at step N is logged
    assert "val_ratio" in rows[N - 1] and "val_ratio" not in rows[0]


def test_resume_continues_from_checkpoint(runs):
    first, rows = runs["first"], _metrics(runs["resume"])
    assert [r["step"] for r in first] == list(range(1, N + 1))
    assert [r["step"] for r in rows] == list(range(1, 2 * N + 1))  # the second run logged N+1..2N, once each
    assert rows[:N] == first
    # The restored step counter drives the schedule: lr(N) of the 2N-step schedule is the peak; a fresh state
    # would log lr(0) = start_lr.
    assert rows[N]["lr"] == pytest.approx(PEAK_LR) and rows[0]["lr"] == pytest.approx(START_LR)
    # The restored parameters are the trained ones: the loss goes on from where it was, not from the initial loss.
    assert rows[N]["loss"] < 0.8 * rows[0]["loss"], (rows[0]["loss"], rows[N - 1]["loss"], rows[N]["loss"])
    steps = sorted(int(d) for d in os.listdir(os.path.join(runs["resume"], "checkpoints")) if d.isdigit())
    assert steps[-1] == 2 * N
    assert runs["eval"]["rollout_l1"] != runs["first_eval"]["rollout_l1"]  # it trained further


def test_interrupted_run_resumes_exactly(runs):
    """Stopped after step N and run again, a 2N-step run logs the same losses, bit for bit, and ends with the same
    held-out evaluation as the same run never stopped (the batch is a function of the step; the state is restored)."""
    got, want = _metrics(runs["interrupted"]), _metrics(runs["straight"])
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 2 * N + 1))
    assert [r["loss"] for r in got] == [r["loss"] for r in want]
    same = ("rollout_l1", "copy_l1", "teacher_forcing_l1", "clips")
    assert {k: runs["interrupted_eval"][k] for k in same} == {k: runs["straight_eval"][k] for k in same}


def test_eval_json_and_outputs(runs):
    wd = runs["resume"]
    ev = json.load(open(os.path.join(wd, "eval.json")))
    k = 3  # clip_frames - 1
    for key in ("rollout_l1", "copy_l1", "teacher_forcing_l1"):
        assert len(ev[key]) == k and all(np.isfinite(ev[key])) and min(ev[key]) > 0, (key, ev[key])
    assert ev["clips"] == 13 - 4 + 1  # one held-out episode of 13 frames, every 4-frame clip
    assert ev["rollout_l1"][0] == pytest.approx(ev["teacher_forcing_l1"][0], rel=1e-5)  # same first prediction
    assert ev["rollout_l1_mean"] == pytest.approx(np.mean(ev["rollout_l1"]), rel=1e-6)
    assert ev["ratio_copy_over_rollout"] == pytest.approx(ev["copy_l1_mean"] / ev["rollout_l1_mean"], rel=1e-6)
    assert ev == {**runs["eval"], "train_seconds": ev["train_seconds"]}
    assert os.path.getsize(os.path.join(wd, "rollout_l1.png")) > 0
    assert glob.glob(os.path.join(wd, "tb", "events.out.tfevents.*"))
    assert json.load(open(os.path.join(wd, "config.json")))["train"]["steps"] == 2 * N


def test_bundle_reproduces_eval(runs):
    from jepa.models.io import load_bundle, read_bundle_config

    wd = runs["resume"]
    ev = json.load(open(os.path.join(wd, "eval.json")))
    models = load_bundle(os.path.join(wd, "model"))
    assert set(models) == {"encoder", "ac_predictor"}
    assert read_bundle_config(os.path.join(wd, "model"))[1]["data_size"] == SIZE
    cfg = _config(runs["encoder"], runs["data"], steps=2 * N)
    _, val, _ = ac.load_episodes(cfg.data)
    ac.cache_features(models["encoder"], val)

    # The copy-last-frame baseline, computed here from the bundle encoder's features.
    f = val.features[0]  # [13, 4, 4, D]
    copy = [np.mean([np.abs(f[s] - f[s + j]).mean() for s in range(len(f) - 3)]) for j in (1, 2, 3)]
    np.testing.assert_allclose(copy, ev["copy_l1"], rtol=1e-5)

    # The bundle's AC predictor gives the saved rollout numbers.
    graphdef, params = nnx.split(models["ac_predictor"], nnx.Param)
    again = ac.evaluate(nnx.to_pure_dict(params), graphdef, val, cfg.data.clip_frames)
    np.testing.assert_allclose(again["rollout_l1"], ev["rollout_l1"], rtol=1e-5)
    np.testing.assert_allclose(again["teacher_forcing_l1"], ev["teacher_forcing_l1"], rtol=1e-5)

    # ... and is block-causal: changing the last input frame / action / state changes only the last output step.
    # One batched call: row 0 as is, rows 1-3 with step 3's frame / action / state changed.
    z = np.repeat(f[None, :4], 4, axis=0)
    a = np.repeat(val.actions[0][None, :4], 4, axis=0)
    s = np.repeat(val.states[0][None, :4], 4, axis=0)
    z[1, 3] += 1.0
    a[2, 3] += 0.5
    s[3, 3] += 0.5
    out = np.asarray(models["ac_predictor"](jnp.asarray(z), jnp.asarray(a), jnp.asarray(s)))
    for row in (1, 2, 3):
        np.testing.assert_allclose(out[row, :3], out[0, :3], atol=1e-5)
        assert np.abs(out[row, 3] - out[0, 3]).max() > 1e-5, row  # the change does reach step 3


def test_online_features_match_cache(runs):
    online, cached = _metrics(runs["online"]), runs["first"]
    assert [r["step"] for r in online] == [1, 2]
    for key in ("loss", "loss_tf", "loss_rollout"):
        assert online[0][key] == pytest.approx(cached[0][key], abs=1e-5), key
    assert os.path.isdir(os.path.join(runs["online"], "model"))


def test_world_model_bundle_standardises_like_training(runs):
    """A planner loads the bundle with load_world_model and prepares raw actions/states exactly as training did."""
    world = wm.load_world_model(os.path.join(runs["resume"], "model"))
    assert world.image_size == SIZE and world.normalization is not None
    cfg = _config(runs["encoder"], runs["data"], steps=2 * N)
    train, val, stats = ac.load_episodes(cfg.data)
    assert world.normalization == stats
    cfg.data.normalize = False
    raw_train, raw_val, none = ac.load_episodes(cfg.data)
    assert none is None
    # Training-set statistics: the standardised training actions have mean 0 and std 1 where they vary.
    a = np.concatenate(train.actions)
    np.testing.assert_allclose(a.mean(0), 0.0, atol=1e-5)
    varying = np.asarray(stats["action_std"]) != 1.0
    assert varying.sum() >= 3  # xyz at least
    np.testing.assert_allclose(a.std(0)[varying], 1.0, rtol=1e-4)
    # The same transform on raw held-out episodes, in numpy and in jax (as inside a jitted planner).
    for got, want in ((world.normalize_actions(raw_val.actions[0]), val.actions[0]),
                      (world.normalize_states(raw_val.states[0]), val.states[0]),
                      (np.asarray(world.normalize_actions(jnp.asarray(raw_val.actions[0]))), val.actions[0])):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="dimensions"):
        world.normalize_actions(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="not a world-model bundle"):
        wm.load_world_model(runs["encoder"])


def test_integrate_states_inverts_actions(runs):
    from jepa.data.rlds import RLDSEpisodes, euler_xyz_to_matrix

    ep = RLDSEpisodes(runs["data"], size=SIZE)[0]
    states = wm.integrate_states(ep.states[0], ep.actions)
    assert states.shape == ep.states.shape
    np.testing.assert_allclose(states[:, [0, 1, 2, 6]], ep.states[:, [0, 1, 2, 6]], atol=1e-5)
    for got, want in zip(states, ep.states):  # compare rotations (Euler angles are not unique)
        np.testing.assert_allclose(euler_xyz_to_matrix(got[3:6]), euler_xyz_to_matrix(want[3:6]), atol=1e-5)


def test_cache_features_packs_episodes():
    """Episodes of any lengths are packed into fixed-size encoder batches: same features as encoding each
    episode alone, one compilation."""
    from jepa.models import VisionTransformer
    from jepa.models.config import ViTConfig

    enc = VisionTransformer(ViTConfig(width=32, depth=1, num_heads=2, mlp_dim=64, patch_size=8, tubelet_size=2),
                            rngs=nnx.Rngs(1))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8) for n in (5, 1, 9, 3, 7)]
    eps = ac.EpisodeSet(frames, [np.zeros((len(f), 7)) for f in frames], [np.zeros((len(f) - 1, 7)) for f in frames])
    before = ac._encode_batch._cache_size()
    ac.cache_features(enc, eps, batch_frames=4)
    assert ac._encode_batch._cache_size() == before + 1
    want = ac._encode_batch(*nnx.split(enc), jnp.asarray(np.concatenate(frames)))  # all 25 frames in one batch
    np.testing.assert_allclose(np.concatenate(eps.features), want, atol=1e-5)
    assert [len(f) for f in eps.features] == [5, 1, 9, 3, 7]


def test_overflowing_parameters_stop_at_their_own_step(runs, tmp_path):
    """A step whose loss and gradient are finite but whose update overflows the parameters is refused at that
    step (its state is not taken), not one step later when the loss turns non-finite."""
    cfg = _config(runs["encoder"], runs["data"], steps=3)
    cfg.optim.lr = cfg.optim.start_lr = float("inf")
    with pytest.raises(RuntimeError, match="non-finite .* at step 1;"):
        ac.train(cfg, str(tmp_path / "overflow"))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exports_nothing(runs, tmp_path):
    """SIGTERM: the step is checkpointed and the run exits 0 without evaluating or exporting a bundle (like
    pretraining); run again, it resumes from that checkpoint and finishes."""
    import subprocess
    import sys

    from tests.processes import sigterm_after_logged_steps

    wd = tmp_path / "term"
    args = [f"--config.encoder_bundle={runs['encoder']}", f"--config.data.paths=['{runs['data']}']",
            f"--config.data.size={SIZE}", "--config.data.clip_frames=4", "--config.data.val_fraction=0.125",
            "--config.train.checkpoint_every=0", "--config.train.eval_every=0"]
    cmd = [sys.executable, "-m", "jepa.cli", "train-ac", "--config", CONFIG, "--workdir", str(wd)] + args
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    rc, out, err = sigterm_after_logged_steps(cmd + ["--config.train.steps=100000"], cwd=ROOT, env=env,
                                              metrics=wd / "metrics.jsonl")
    assert rc == 0, err[-3000:]
    steps = sorted(int(d) for d in os.listdir(wd / "checkpoints") if d.isdigit())
    assert len(steps) == 1 and steps[0] >= 2, steps
    assert f"stopped by SIGTERM at step {steps[0]} of 100000" in out
    assert not (wd / "model").exists() and not (wd / "eval.json").exists()
    end = steps[0] + 1
    res = subprocess.run(cmd + [f"--config.train.steps={end}"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["step"] for r in _metrics(wd)] == list(range(1, end + 1))  # resumed: each step logged once
    assert (wd / "model" / "config.json").exists() and (wd / "eval.json").exists()
