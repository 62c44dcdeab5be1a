"""Closed-loop planning end to end: `jepa eval-planner` and `jepa plan` on a tiny world model, the oracle CEM
reaching goals through the simulator, the push task's contact start, one clear line for each bad input, and the
fast variant of `make demo`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

from jepa.config import load_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REACH = os.path.join(ROOT, "configs/plan/reach.py")
PUSH = os.path.join(ROOT, "configs/plan/push.py")
TINY_CEM = ["--config.cem.samples=8", "--config.cem.elites=2", "--config.cem.iterations=1",
            "--config.report.gifs=1", "--config.report.landscape_grid=3", "--config.report.correlation_samples=4"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A tiny random-init world model (encoder + AC predictor) and an encoder-only bundle."""
    from jepa.models import ACPredictor, ACPredictorConfig, VisionTransformer
    from jepa.models.config import ViTConfig
    from jepa.models.io import save_bundle

    root = tmp_path_factory.mktemp("bundles")
    enc = VisionTransformer(ViTConfig(width=16, depth=1, num_heads=2, mlp_dim=32, patch_size=16, tubelet_size=2),
                            rngs=nnx.Rngs(0))
    pred = ACPredictor(ACPredictorConfig(embed_dim=16, width=16, depth=1, num_heads=2, mlp_dim=32, grid_size=4,
                                         pos_embed=True, rope="rotation"), rngs=nnx.Rngs(1))
    wm = str(save_bundle(root / "wm", {"encoder": enc, "ac_predictor": pred}, meta={"data_size": 64}))
    enc_only = str(save_bundle(root / "enc", {"encoder": enc}))
    return {"wm": wm, "encoder_only": enc_only}


def _cfg(path, bundle, extra=()):
    return load_config(path, [f"--config.world_model={bundle}", *TINY_CEM, *extra])


def test_eval_planner_writes_every_metric_and_picture(bundles, tmp_path):
    from planning.evaluate import evaluate

    cfg = _cfg(REACH, bundles["wm"], ["--config.episodes=2", "--config.steps=2"])
    out = evaluate(cfg, str(tmp_path), progress=False)
    assert set(out["methods"]) == {"latent_cem", "oracle_cem", "random", "zero"}
    for name, r in out["methods"].items():
        assert r["episodes"] == 2 and 0 <= r["success_rate"] <= 1
        lo, hi = r["success_ci95"]
        assert 0 <= lo <= r["success_rate"] <= hi <= 1
        assert len(r["distance_per_step_median"]) == 3  # start + 2 steps
    assert out["methods"]["latent_cem"]["model_steps_per_action"] == 8  # N x H x I = 8 x 1 x 1
    assert out["methods"]["zero"]["final_over_initial_median"] == pytest.approx(1.0, abs=0.02)
    assert -1 <= out["energy_correlation"]["spearman_mean"] <= 1
    assert out["replan_seconds_single_episode"]["median"] > 0
    assert min(out["initial_distance"]["per_episode"]) >= cfg.min_distance
    for f in ("results.json", "results.md", "success.png", "landscape.png", "episode_0.gif", "config.json"):
        assert os.path.getsize(tmp_path / f) > 0, f
    assert "| reach | latent_cem |" in (tmp_path / "results.md").read_text()
    assert os.listdir(tmp_path / "tb")


def test_oracle_cem_reaches_reach_goals_and_doing_nothing_does_not(tmp_path):
    """The CEM scored by the true simulator: a planner that is only as good as its model reaches the goals."""
    from planning.evaluate import evaluate

    cfg = load_config(REACH, ["--config.methods=['oracle_cem', 'zero']", "--config.episodes=4", "--config.steps=6",
                              "--config.cem.samples=32", "--config.cem.iterations=2", "--config.cem.elites=4"])
    out = evaluate(cfg, str(tmp_path), progress=False)
    assert out["methods"]["oracle_cem"]["successes"] >= 3, out["methods"]["oracle_cem"]
    assert out["methods"]["oracle_cem"]["final_distance_median"] < 0.03
    assert out["methods"]["zero"]["successes"] == 0


def test_plan_one_episode_writes_a_gif(bundles, tmp_path):
    from planning.plan import main

    rc = main(["--config", REACH, "--workdir", str(tmp_path), "--quiet", "--episode", "1",
               f"--config.world_model={bundles['wm']}", "--config.steps=2", *TINY_CEM])
    assert rc == 0
    out = json.loads((tmp_path / "plan.json").read_text())
    assert len(out["distance"]) == 3 and len(out["energy"]) == 2 and np.all(np.isfinite(out["energy"]))
    assert out["seed"] > 1000  # the second episode of the fixed seeds
    for f in ("plan.gif", "curves.png"):
        assert os.path.getsize(tmp_path / f) > 0


def test_plan_with_a_goal_image_file(bundles, tmp_path):
    from PIL import Image

    from planning.plan import main

    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "goal.png")
    rc = main(["--config", REACH, "--workdir", str(tmp_path / "run"), "--quiet", "--goal", str(tmp_path / "goal.png"),
               f"--config.world_model={bundles['wm']}", "--config.steps=1", *TINY_CEM])
    assert rc == 0
    out = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert out["success"] is None and out["goal_image"].endswith("goal.png")  # no true goal state to judge by


def _one_line_error(capsys, rc, *words):
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


def test_bad_inputs_get_one_clear_line(bundles, tmp_path, capsys):
    from PIL import Image

    from planning import evaluate, plan

    Image.fromarray(np.zeros((48, 32, 3), np.uint8)).save(tmp_path / "small.png")
    rc = plan.main(["--config", REACH, "--workdir", str(tmp_path / "a"), "--quiet", "--goal",
                    str(tmp_path / "small.png"), f"--config.world_model={bundles['wm']}"])
    _one_line_error(capsys, rc, "small.png", "32x48", "64x64")

    rc = plan.main(["--config", REACH, "--workdir", str(tmp_path / "b"), "--quiet", "--goal",
                    str(tmp_path / "missing.png"), f"--config.world_model={bundles['wm']}"])
    _one_line_error(capsys, rc, "missing.png", "no such file")

    rc = evaluate.main(["--config", REACH, "--workdir", str(tmp_path / "c"), "--quiet",
                        f"--config.world_model={bundles['encoder_only']}"])
    _one_line_error(capsys, rc, bundles["encoder_only"], "ac_predictor")

    rc = evaluate.main(["--config", REACH, "--workdir", str(tmp_path / "d"), "--quiet",
                        f"--config.world_model={tmp_path / 'nothing'}"])
    _one_line_error(capsys, rc, "nothing", "no such bundle")

    rc = evaluate.main(["--config", REACH, "--workdir", str(tmp_path / "e"), "--quiet", "--config.task=juggle",
                        f"--config.world_model={bundles['wm']}"])
    _one_line_error(capsys, rc, "juggle", "unknown task")

    rc = evaluate.main(["--config", REACH, "--workdir", str(tmp_path / "f"), "--quiet", "--config.cem.elites=999",
                        f"--config.world_model={bundles['wm']}"])
    _one_line_error(capsys, rc, "elites")

    rc = evaluate.main(["--config", REACH, "--workdir", str(tmp_path / "g"), "--quiet", "--config.image_size=32",
                        f"--config.world_model={bundles['wm']}"])
    _one_line_error(capsys, rc, "64px", "32px")

    rc = evaluate.main(["--config", REACH, "--workdir", str(tmp_path / "h"), "--quiet", "--config.matmul_dtype=int8",
                        f"--config.world_model={bundles['wm']}"])
    _one_line_error(capsys, rc, "matmul_dtype", "int8")


def test_bf16_plan_time_products_score_candidates_as_float32_does(bundles):
    """config.matmul_dtype='bfloat16' loads the encoder and the predictor with bf16 products; the planner's energies
    of the same candidates stay within bf16 rounding of float32's and pick a candidate float32 rates as good."""
    from planning import cem, evaluate

    setups = {d: evaluate.setup(_cfg(REACH, bundles["wm"], [f"--config.matmul_dtype={d}"])) for d in ("float32",
                                                                                                  "bfloat16")}
    assert setups["bfloat16"].model.predictor.cfg.matmul_dtype == "bfloat16"
    assert setups["bfloat16"].model.encoder.cfg.matmul_dtype == "bfloat16"
    assert setups["float32"].model.predictor.cfg.matmul_dtype is None
    rng = np.random.default_rng(0)
    space = setups["float32"].space
    frames = rng.integers(0, 256, (2, 1, 64, 64, 3), dtype=np.uint8)
    states = np.tile(np.array([0.0, 0.0, 0.1, np.pi, 0.0, 0.0, 0.5], np.float32), (2, 1, 1))
    cands = np.asarray(space.clip(np.asarray(space.half_range) * rng.standard_normal((2, 32, 1, space.size))
                                  .astype(np.float32)))
    goals = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    energies = {}
    for d, s in setups.items():
        planner = cem.LatentPlanner(s.model, s.space, s.cem, context=1)
        energies[d] = np.asarray(planner.energies(frames, np.zeros((2, 0, space.dim), np.float32), states,
                                                  planner.encode_goals(goals), cands))
    f32, b16 = energies["float32"], energies["bfloat16"]
    assert np.abs(b16 - f32).max() <= 1e-3 * np.abs(f32).mean()
    assert not np.array_equal(b16, f32)  # the products did run in bfloat16
    # the candidate bf16 picks is, by float32's energies, within a tenth of their spread of float32's pick
    picked = f32[np.arange(2), b16.argmin(1)]
    assert np.all(picked - f32.min(1) <= 0.1 * f32.std(1))


def test_push_contact_start_stands_behind_the_cube():
    import planning.envs as envs
    from planning.envs import policies

    env = envs.make("push", size=32, start="contact")
    for seed in range(5):
        env.reset(seed=seed)
        goal = env.goal
        cube0, tcp0 = env.cube_pos[:2], env.tcp_pos
        u = (goal.cube_pos[:2] - cube0) / np.linalg.norm(goal.cube_pos[:2] - cube0)
        behind = (cube0 - tcp0[:2]) @ u  # the TCP is behind the cube, on the line to where the cube went
        assert policies.PUSH_OFFSET + 0.02 < behind < policies.PUSH_OFFSET + 0.06
        assert abs(tcp0[2] - policies.PUSH_Z) < 0.01 and env.gripper > 0.9  # low, closed
        assert env.distance_to_goal() > 0.04  # the expert's 6 steps moved the cube
    with pytest.raises(ValueError, match="start"):
        envs.make("reach", start="contact")


def test_push_goal_images_show_the_cube():
    """The cube's visibility is measured (hand between camera and cube: mostly hidden; hand away: all seen), and
    push goals hiding more than half of it behind the hand are drawn again."""
    import mujoco

    import planning.envs as envs
    from planning.envs import scene

    env = envs.make("push", size=64, start="contact", goal_steps=4)
    env.reset(seed=0)
    cam, cube = np.asarray(scene.CAMERA_POS), env.cube_pos
    # Put the hand on the line of sight from the camera to the cube, 40% of the way from the cube.
    tcp = cube + 0.4 * (cam - cube) - np.array([0.0, 0.0, 0.075])  # the palm sits 7.5 cm above the TCP
    env.data.qpos[env._hand_qpos:env._hand_qpos + 3] = tcp
    env.data.mocap_pos[env._mocap] = tcp
    mujoco.mj_forward(env.model, env.data)
    assert env.object_visibility() < 0.5
    env.data.qpos[env._hand_qpos:env._hand_qpos + 3] = cube + np.array([0.2, 0.2, 0.1])
    mujoco.mj_forward(env.model, env.data)
    assert env.object_visibility() == 1.0
    seen = []
    for seed in range(12):
        env.reset(seed=seed)
        seen.append(env.goal.visible)
    assert min(seen) >= 0.5
    assert envs.make("reach").object_visibility() is None  # not measured where no object defines success


@pytest.mark.slow
def test_fast_demo_runs_every_stage_and_writes_the_report(tmp_path):
    env = {**os.environ, "MUJOCO_GL": "egl"}
    stages = "data,robot,pretrain,probe,ac,plan,reacher,report"  # the default stages and the optional Reacher one
    proc = subprocess.run([sys.executable, "-m", "jepa.demo", "--fast", "--quiet", "--workdir", str(tmp_path),
                           "--stages", stages], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    for heading in ("## Time per stage", "## Pretraining", "## Probe", "## World model", "## Planning"):
        assert heading in report
    for task in ("reach", "push"):
        res = json.loads((tmp_path / "plan" / task / "results.json").read_text())
        assert set(res["methods"]) == {"latent_cem", "oracle_cem", "random", "zero"}
        assert f"| {task} | latent_cem |" in report
    assert "| reacher | latent_cem |" in report and "reacher (optional, not in the total)" in report
    for rel in ("plan/success.png", "plan/reach/landscape.png", "plan/push/episode_0.gif", "ac/model/config.json",
                "pretrain/model/config.json", "probe/probe.png"):
        assert (tmp_path / rel).exists(), rel
