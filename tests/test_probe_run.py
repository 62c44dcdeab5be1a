"""`jepa probe` end to end on the real-format SSv2 and EK100 sample data (readers -> shards -> pipeline -> a grid of
probes on a frozen encoder -> results), and its evaluation protocol (segments x views)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from flax import nnx

from tests import fixtures as fx
from tests.processes import stop_after

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.xdist_group("probe_run")


@pytest.fixture(scope="module")
def encoder_bundle(tmp_path_factory):
    """A tiny random-init pretraining bundle: encoder and predictor."""
    from jepa.models import Predictor, VisionTransformer
    from jepa.models.config import PredictorConfig, ViTConfig
    from jepa.models.io import save_bundle

    vit = ViTConfig(width=32, depth=2, num_heads=2, mlp_dim=64, patch_size=8, tubelet_size=2)
    pred = PredictorConfig(embed_dim=32, width=32, depth=1, num_heads=2, mlp_dim=64, num_mask_tokens=1)
    path = tmp_path_factory.mktemp("enc") / "bundle"
    return str(save_bundle(path, {"encoder": VisionTransformer(vit, rngs=nnx.Rngs(0)),
                                  "predictor": Predictor(pred, rngs=nnx.Rngs(1))}))


def _shard(fmt, root, split, out, *extra):
    from jepa.data import cli

    rc = cli.main(["shard", "--format", fmt, "--root", str(root), "--split", split, "--out", str(out), "--name",
                   f"{fmt}-{split}", "--num_shards", "1", "--no_progress", *extra])
    assert rc == 0
    return json.loads((out / f"{fmt}-{split}.json").read_text())


def _probe(capfd, config, workdir, *overrides):
    from jepa.cli import main

    capfd.readouterr()
    rc = main(["probe", "--config", config, "--workdir", str(workdir), "--quiet", *overrides])
    out, err = capfd.readouterr()
    assert rc == 0, err[-3000:]
    return out, json.loads((workdir / "results.json").read_text())


def test_ssv2_probe_runs_end_to_end_with_segments_and_views(tmp_path, encoder_bundle, capfd):
    root = fx.make_ssv2(tmp_path / "ssv2", num_frames=18)
    for split in ("train", "validation"):
        meta = _shard("ssv2", root.root, split, tmp_path / "shards", "--on_error", "skip")
    out, res = _probe(capfd, os.path.join(ROOT, "configs/probe/ssv2_vitl.py"), tmp_path / "run",
                      f"--config.encoder_bundle={encoder_bundle}",
                      f"--config.data.sources=[{{'glob': '{tmp_path}/shards/ssv2-{{split}}-*.array_record'}}]",
                      f"--config.num_classes=({meta['num_classes']},)", "--config.data.num_frames=4",
                      "--config.data.stride=2", "--config.data.crop_size=32", "--config.data.num_workers=0",
                      "--config.probe.depth=1", "--config.probe.num_heads=2", "--config.train.epochs=2",
                      "--config.train.batch_size=2", "--config.eval.batch_size=2",
                      "--config.grid.lrs=[1e-3, 1e-4]", "--config.grid.wds=[0.01, 0.1]")
    n_val = len(root.expected["validation"])
    assert res["count"] == n_val and len(res["probes"]) == 4 and res["task"] == "classification"
    assert {"top1", "top5", "mean_class_recall5"} <= set(res["best"])
    assert all(0.0 <= p["top1"] <= p["top5"] <= 1.0 for p in res["probes"])
    assert (tmp_path / "run" / "confusion.png").exists() and (tmp_path / "run" / "tb").is_dir()
    assert "[probe] best of 4 probes" in out


def test_probe_eval_averages_softmax_over_views_of_concatenated_segments(encoder_bundle):
    """The evaluation path stated independently: encode each segment and view, concatenate a view's segments'
    tokens, run the probe per view, average the softmax over views."""
    import jax
    import jax.numpy as jnp

    from jepa.models import AttentiveProbe, ProbeConfig
    from jepa.models.io import load_bundle
    from jepa.probe import grid as pg

    enc = load_bundle(encoder_bundle, ["encoder"])["encoder"]
    cfg = ProbeConfig(embed_dim=32, num_classes=(5,), num_heads=2, depth=1)
    g = pg.make(enc, cfg, pg.Grid((1e-3, 1e-4), (0.0,)), task="classification", total_steps=1, warmup_steps=1)
    state = pg.init_state(g, 0)
    video = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 2, 4, 32, 32, 3)), jnp.float32)  # B V S T..
    got = pg.eval_probs(g, state["params"], nnx.split(enc)[1], video)[0]  # [H, B, C]
    for h in range(2):
        probe = nnx.merge(g.graphdef, jax.tree.map(lambda x: x[h], state["params"]))
        per_view = []
        for v in range(3):
            toks = jnp.concatenate([enc(video[:, v, s]) for s in range(2)], axis=1)
            per_view.append(jax.nn.softmax(probe(toks)[0], axis=-1))
        want = np.mean(np.stack(per_view), axis=0)
        np.testing.assert_allclose(np.asarray(got[h]), want, atol=1e-5)
    assert not np.allclose(np.asarray(got[0]), np.asarray(got[1]))  # two probes, two inits


def test_future_tokens_are_the_predictors_continuation_of_the_clip(encoder_bundle):
    """With future_steps, the features are the clip's tokens followed by the pretrained predictor's tokens at the
    next time steps' positions (the context: every observed token)."""
    import jax.numpy as jnp

    from jepa.models import ProbeConfig
    from jepa.models.io import load_bundle
    from jepa.probe import grid as pg

    m = load_bundle(encoder_bundle, ["encoder", "predictor"])
    cfg = ProbeConfig(embed_dim=32, num_classes=(5,), num_heads=2, depth=1)
    g = pg.make(m["encoder"], cfg, pg.Grid((1e-3,), (0.0,)), task="classification", total_steps=1, warmup_steps=1,
                predictor=m["predictor"], future_steps=2)
    video = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 32, 32, 3)), jnp.float32)
    got = np.asarray(pg.tokens(g, pg.feature_params(g, m["encoder"], m["predictor"]), video))
    x = m["encoder"](video)  # [2, 2 * 4 * 4, 32]
    ctx = jnp.broadcast_to(jnp.arange(32), (2, 32))
    tgt = jnp.broadcast_to(jnp.arange(32, 64), (2, 32))  # two more tubelet steps of 4 x 4
    want = np.concatenate([np.asarray(x), np.asarray(m["predictor"](x, ctx, tgt, (4, 4, 4)))], axis=1)
    assert got.shape == (2, 64, 32)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("future", [0, 1], ids=["clip", "future_tokens"])
def test_ek100_anticipation_probe_runs_end_to_end(tmp_path, encoder_bundle, capfd, future):
    ek = fx.make_ek100(tmp_path / "ek")
    for split in ("train", "validation"):
        meta = _shard("ek100", ek.root, split, tmp_path / "shards", "--short_side", "32", "--context_sec", "2")
    num = (meta["num_verb_classes"], meta["num_noun_classes"], len(meta["action_classes"]))
    out, res = _probe(capfd, os.path.join(ROOT, "configs/probe/ek100_vitl.py"), tmp_path / "run",
                      f"--config.encoder_bundle={encoder_bundle}",
                      f"--config.data.sources=[{{'glob': '{tmp_path}/shards/ek100-{{split}}-*.array_record'}}]",
                      f"--config.num_classes={num}", "--config.data.num_frames=4", "--config.data.fps=4.0",
                      "--config.data.crop_size=32", "--config.data.num_workers=0", "--config.probe.depth=1",
                      "--config.probe.num_heads=2", "--config.train.epochs=2", "--config.train.batch_size=2",
                      "--config.eval.batch_size=2", "--config.grid.lrs=[1e-3]", "--config.grid.wds=[0.01, 0.1]",
                      f"--config.future_steps={future}")
    assert res["task"] == "anticipation" and len(res["probes"]) == 2
    for head in ("verb", "noun", "action"):
        assert 0.0 <= res["best"][head]["mean_class_recall5"] <= 1.0
    assert res["count"]["verb"] == meta["num_records"] >= 3  # every validation record, once
    assert (tmp_path / "run" / "recall5.png").exists()
    assert "action recall@5" in out


@pytest.mark.parametrize("features", ["cache", "online"])
def test_probe_run_stopped_and_resumed_equals_a_straight_run(features, tmp_path, encoder_bundle, monkeypatch):
    """Stopped after 3 of 8 steps (SIGTERM) and run again, `jepa probe` logs the same losses, bit for bit, and ends
    with the same results as a run never stopped; with cached features the cache is written once, to disk."""
    from jepa.config import load_config
    from jepa.data.synthetic import write_synthetic
    from jepa.probe import run

    data = tmp_path / "data"
    write_synthetic(str(data), num_train=64, num_val=16, num_shards=1, seed=0, size=32, frames=8, progress=False)
    cfg = load_config(os.path.join(ROOT, "configs/probe/demo.py") + ":smoke", [
        f"--config.encoder_bundle={encoder_bundle}", f"--config.features={features}",
        f"--config.data.sources=[{{'glob': '{data}/synthetic-{{split}}-*.array_record'}}]"])
    straight = run.train(cfg, str(tmp_path / "straight"), progress=False)
    with monkeypatch.context() as mp:
        mp.setattr(run, "StopSignal", stop_after(3))
        assert run.train(cfg, str(tmp_path / "resumed"), progress=False) == {"stopped_at_step": 3}
    resumed = run.train(cfg, str(tmp_path / "resumed"), progress=False)

    def losses(d):
        return [(r["step"], r["loss_mean"]) for r in map(json.loads, (tmp_path / d / "metrics.jsonl").open())]

    assert losses("resumed") == losses("straight") and len(losses("straight")) == 8
    assert resumed["summary"]["probes"] == straight["summary"]["probes"]
    if features == "cache":
        tokens = np.load(tmp_path / "straight" / "features" / "tokens.npy", mmap_mode="r")
        assert tokens.shape == (64, 4 * 4 * 4, 32)  # every training clip once: [clips, tokens, width]
