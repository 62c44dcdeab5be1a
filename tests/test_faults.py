"""Faults injected into real runs on the smoke configs, and what each must leave behind:

- kill -9 right after a checkpoint, then resume: the same losses, bit for bit, as a run never interrupted;
- SIGTERM: the step is saved, the run exits 0 without exporting, and resumes;
- the newest checkpoint damaged (an array file truncated, the data-iterator state garbled): one warning line, the
  run resumes from the older one (bit for bit) and the damaged one is kept aside; none readable: one error line,
  exit 2, nothing moved or deleted;
- undecodable records among the data: skipped, counted (metric and data_faults.json, with their names), training
  goes on; past data.max_skipped_fraction the run stops in one line; the probe's features and AC training's
  episodes follow the same policy;
- bad overrides and values: one line on stderr naming the key, exit 2, no traceback (`--debug` shows it).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.processes import logged_losses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/pretrain/demo.py") + ":smoke"
BAD = 8  # undecodable records added to the 96 good ones

pytestmark = pytest.mark.xdist_group("faults")  # one worker: the module's runs are made once


def _sources(data_dir) -> str:
    return f"--config.data.sources=[{{'glob': '{data_dir}/synthetic-{{split}}-*.array_record'}}]"


def _env() -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def _pretrain(workdir, data_dir, *overrides):
    """`jepa pretrain` in a subprocess."""
    cmd = [sys.executable, "-m", "jepa.cli", "pretrain", "--config", CONFIG, "--workdir", str(workdir),
           _sources(data_dir), *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)


def _jepa(capfd, *argv) -> tuple[int, str, str]:
    """`jepa ...` in this process: (exit code, stdout, stderr)."""
    from jepa.cli import main

    capfd.readouterr()
    rc = main(list(argv))
    out, err = capfd.readouterr()
    return rc, out, err


def _pretrain_here(capfd, workdir, data_dir, *overrides):
    return _jepa(capfd, "pretrain", "--config", CONFIG, "--workdir", str(workdir), _sources(data_dir), *overrides)


def _error_lines(err: str) -> list[str]:
    """stderr without progress bars (tqdm writes carriage returns) and blank lines."""
    return [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "it/s]" not in line
            and not line.lstrip().startswith(("pretrain:", "train-ac:"))]


def _tree(path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in Path(path).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    from jepa.data.synthetic import write_synthetic

    d = tmp_path_factory.mktemp("synthetic")
    write_synthetic(str(d), num_train=96, num_val=16, num_shards=2, seed=0, size=32, frames=8, progress=False)
    return str(d)


@pytest.fixture(scope="module")
def bad_dir(synthetic_dir, tmp_path_factory):
    """The 96 training records and 8 whose video bytes are not a video (104 records, one shard)."""
    import grain
    from array_record.python.array_record_module import ArrayRecordWriter

    from jepa.data import records

    d = tmp_path_factory.mktemp("bad")
    good = grain.sources.ArrayRecordDataSource(sorted(str(p) for p in Path(synthetic_dir).glob("*-train-*")))
    w = ArrayRecordWriter(str(d / "synthetic-train-00000-of-00001.array_record"), "group_size:1")
    for i in range(len(good)):
        w.write(good[i])
    for i in range(BAD):
        w.write(records.encode({"video": b"not a video %d" % i, "fps": 8.0, "num_frames": 8, "label": 0,
                                "path": f"broken/bad{i}.mp4"}))
    w.close()
    shutil.copy(next(Path(synthetic_dir).glob("*-validation-*")), d / "synthetic-validation-00000-of-00001.array_record")
    return str(d)


@pytest.fixture(scope="module")
def reference(synthetic_dir, tmp_path_factory):
    """A 9-step run with its checkpoints of steps 3, 6 and 9 (each test copies it)."""
    from jepa.config import load_config
    from jepa.train import pretrain

    work = tmp_path_factory.mktemp("runs") / "reference"
    pretrain.train(load_config(CONFIG, [_sources(synthetic_dir), *NINE_STEPS]), str(work))
    assert sorted(os.listdir(work / "checkpoints")) == ["3", "6", "9"]
    return work


NINE_STEPS = ("--config.train.steps=9", "--config.train.checkpoint_every=3", "--config.train.keep_checkpoints=3",
              "--config.train.export_model=False")


# --- kill -9 and SIGTERM ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_identical(tmp_path, synthetic_dir):
    n = 3
    common = [f"--config.train.steps={2 * n}", f"--config.train.checkpoint_every={n}"]
    full = _pretrain(tmp_path / "full", synthetic_dir, *common)
    assert full.returncode == 0, full.stderr[-3000:]

    cmd = [sys.executable, os.path.join(ROOT, "tests/kill_after_checkpoint.py"), str(n), "pretrain", "--config",
           CONFIG, "--workdir", str(tmp_path / "crash"), _sources(synthetic_dir), *common]
    crashed = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr[-3000:])
    assert sorted(os.listdir(tmp_path / "crash" / "checkpoints")) == [str(n)]
    resumed = _pretrain(tmp_path / "crash", synthetic_dir, *common)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed at step {n}" in resumed.stderr + resumed.stdout

    a, b = logged_losses(tmp_path / "full"), logged_losses(tmp_path / "crash")
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
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, synthetic_dir):
    from tests.processes import sigterm_after_logged_steps

    workdir = tmp_path / "term"
    cmd = [sys.executable, "-m", "jepa.cli", "pretrain", "--config", CONFIG, "--workdir", str(workdir),
           _sources(synthetic_dir), "--config.train.steps=100000", "--config.train.checkpoint_every=0"]
    rc, out, err = sigterm_after_logged_steps(cmd, cwd=ROOT, env=_env(), metrics=workdir / "metrics.jsonl")
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


# --- damaged checkpoints ------------------------------------------------------------------------------------------
def _truncate_largest_array(step_dir: Path) -> None:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size)
    with open(largest, "r+b") as f:
        f.truncate(largest.stat().st_size // 3)


def _garble_iterator_state(step_dir: Path) -> None:
    (path,) = (step_dir / "data").glob("process_0-of-1.json")
    path.write_text(path.read_text()[:-7] + "#garbled")


@pytest.mark.parametrize("damage", [_truncate_largest_array, _garble_iterator_state], ids=["array", "iterator"])
def test_damaged_newest_checkpoint_resumes_from_the_older_one(reference, synthetic_dir, tmp_path, capfd, damage):
    work = tmp_path / "run"
    shutil.copytree(reference, work)
    (work / "metrics.jsonl").unlink()  # what the resumed run logs, only
    damage(work / "checkpoints" / "9")
    damaged = _tree(work / "checkpoints" / "9")

    rc, out, err = _pretrain_here(capfd, work, synthetic_dir, *NINE_STEPS)
    assert rc == 0, err[-3000:]
    warnings = [line for line in _error_lines(err) if line.startswith("warning:")]
    assert len(warnings) == 1, _error_lines(err)
    assert "checkpoint step 9" in warnings[0] and "resuming from step 6" in warnings[0], warnings
    assert "resumed at step 6" in out + err
    # Steps 7..9 redone from step 6 are the uninterrupted run's, bit for bit; the damaged step 9 is kept aside.
    ref, got = logged_losses(reference), logged_losses(work)
    assert sorted(got) == [7, 8, 9]
    assert [got[s] for s in (7, 8, 9)] == [ref[s] for s in (7, 8, 9)]
    assert _tree(tmp_path / "run" / "checkpoints_unreadable" / "9") == damaged
    assert sorted(os.listdir(work / "checkpoints")) == ["3", "6", "9"]


def test_no_readable_checkpoint_is_one_error_and_loses_nothing(reference, synthetic_dir, tmp_path, capfd):
    work = tmp_path / "run"
    shutil.copytree(reference, work)
    _truncate_largest_array(work / "checkpoints" / "9")
    _garble_iterator_state(work / "checkpoints" / "6")
    _truncate_largest_array(work / "checkpoints" / "3")
    before = _tree(work)

    rc, out, err = _pretrain_here(capfd, work, synthetic_dir, *NINE_STEPS)
    assert rc == 2
    lines = _error_lines(err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("jepa pretrain: error: none of the 3 checkpoints in"), lines
    assert all(f"step {s}:" in lines[0] for s in (3, 6, 9)), lines
    after = _tree(work)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing deleted or changed
    assert not (tmp_path / "run" / "checkpoints_unreadable").exists()


# --- unusable records -------------------------------------------------------------------------------------------
def test_undecodable_records_are_skipped_counted_and_named(bad_dir, tmp_path, capfd):
    work = tmp_path / "run"
    rc, out, err = _pretrain_here(capfd, work, bad_dir, "--config.train.steps=12", "--config.train.checkpoint_every=6",
                                  "--config.train.export_model=False")
    assert rc == 0, err[-3000:]
    faults = json.loads((work / "data_faults.json").read_text())
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 12  # training went on
    assert faults["read"] == 12 * 8  # positions read; an unusable record's position got a stand-in
    assert 1 <= faults["skipped"] and rows[-1]["data_skipped"] == faults["skipped"]
    assert faults["records"] and all("broken/bad" in r and "cannot decode" in r for r in faults["records"])
    assert f"skipped {faults['skipped']} of {faults['read']} records" in out + err

    # Resumed, the count goes on from the checkpoint's (it is part of the data iterator's state).
    rc, out, err = _pretrain_here(capfd, work, bad_dir, "--config.train.steps=18", "--config.train.checkpoint_every=6",
                                  "--config.train.export_model=False")
    assert rc == 0, err[-3000:]
    again = json.loads((work / "data_faults.json").read_text())
    assert again["read"] == 18 * 8 and again["skipped"] > faults["skipped"]


def test_too_many_unusable_records_stop_the_run_in_one_line(bad_dir, tmp_path, capfd):
    rc, out, err = _pretrain_here(capfd, tmp_path / "run", bad_dir, "--config.train.steps=12",
                                  "--config.data.max_skipped_fraction=0.01")
    assert rc == 2
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("jepa pretrain: error: stopped:"), lines
    assert "max_skipped_fraction=0.01" in lines[0] and "broken/bad" in lines[0], lines


def test_probe_features_leave_out_unusable_records(bad_dir, capfd):
    """Evaluation reads each record once: an unusable one is replaced by a stand-in marked invalid, which the
    probe's feature extraction leaves out, so every good record is counted exactly once."""
    from flax import nnx

    from jepa.data.pipeline import make_dataset
    from jepa.data.synthetic import synthetic_config
    from jepa.models import VisionTransformer
    from jepa.models.config import ViTConfig
    from jepa.probe.train import extract_features

    cfg = synthetic_config(bad_dir, num_frames=8, crop_size=32, eval=True, shuffle=False, repeat=False,
                           batch_size=16, drop_remainder=False)
    it = iter(make_dataset(cfg, split="train", seed=0, shard_index=0, shard_count=1))
    batches = ({**b, "video": b["video"].reshape((-1,) + b["video"].shape[-4:])} for b in it)
    enc = VisionTransformer(ViTConfig(width=32, depth=1, num_heads=2, mlp_dim=64, patch_size=8, tubelet_size=2),
                            rngs=nnx.Rngs(0))
    feats, labels = extract_features(enc, batches, 10_000, progress=False)
    assert len(feats) == len(labels) == 96
    assert it.skips.skipped == BAD and it.skips.read == 96 + BAD
    assert sorted(n.split("'")[1] for n in it.skips.notes) == sorted(f"broken/bad{i}.mp4" for i in range(BAD))


def test_ac_training_skips_unreadable_episodes(monkeypatch):
    """An episode that cannot be read is skipped and counted; past the limit, one clear error."""
    import ml_collections

    from jepa.data import rlds
    from jepa.data.faults import SkipLog, TooManyUnusableRecords
    from jepa.train import ac

    broken = {2, 5}

    class Episodes:  # stands in for an RLDS dataset of 8 episodes, two of them damaged
        def __init__(self, path, **kwargs):
            self.path = path

        def __len__(self):
            return 8

        def __getitem__(self, i):
            if i in broken:
                raise rlds.RLDSError(f"{self.path} [train] episode {i} step 3: field observation/image: cannot "
                                     "decode image")
            t = 5
            return rlds.Episode(np.full((t, 8, 8, 3), i, np.uint8), np.full((t, 7), i, np.float32),
                                np.zeros((t - 1, 7), np.float32), "", i, f"episode {i}")

    monkeypatch.setattr(rlds, "RLDSEpisodes", Episodes)
    data = ml_collections.ConfigDict(dict(paths=["robot"], split="train", camera="c", frame_stride=1, size=8,
                                          val_fraction=0.2, normalize=False, max_skipped_fraction=0.5))
    skips = SkipLog(0.5, what="episodes")
    train, val, _ = ac.load_episodes(data, skips)
    kept = [int(s[0, 0]) for s in train.states + val.states]
    assert kept == [0, 1, 3, 4, 6, 7]
    assert (skips.read, skips.skipped) == (8, 2) and "episode 2 step 3" in skips.notes[0]

    broken = set(range(1, 8))
    with pytest.raises(TooManyUnusableRecords, match="could not be used .*max_skipped_fraction=0.5"):
        ac.load_episodes(data, SkipLog(0.5, what="episodes"))


# --- bad overrides and values -------------------------------------------------------------------------------------
@pytest.mark.parametrize("override,names", [
    ("--config.train.stepz=3", "unknown config key 'train.stepz'"),
    ("--config.train.steps=abc", "train.steps takes int, got str 'abc'"),
    ("--config.data.crop_size=36", "data.crop_size 36 is not divisible by model.encoder.patch_size 8"),
    ("--config.train.steps=-5", "train.steps=-5 must be a number > 0"),
    ("--config.train.batch_size=0", "train.batch_size=0 must be a number > 0"),
    ("--config.data.max_skipped_fraction=2.0", "data.max_skipped_fraction=2.0 must be a number in [0, 1]"),
    ("--config.data.sources=[{'glob': '/nonexistent/x-{split}-*.array_record'}]", "matches no files"),
])
def test_bad_override_is_one_line_and_exit_2(override, names, synthetic_dir, tmp_path, capfd):
    rc, out, err = _jepa(capfd, "pretrain", "--config", CONFIG, "--workdir", str(tmp_path / "w"),
                         _sources(synthetic_dir), override)
    assert rc == 2
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("jepa pretrain: error:"), err
    assert names in lines[0] and "Traceback" not in err
    assert not (tmp_path / "w" / "checkpoints").exists()  # nothing was trained


def test_debug_flag_shows_the_traceback(synthetic_dir, tmp_path):
    from jepa.cli import main
    from jepa.config import ConfigError

    with pytest.raises(ConfigError, match="train.stepz"):
        main(["--debug", "pretrain", "--config", CONFIG, "--workdir", str(tmp_path), "--config.train.stepz=3"])
    res = subprocess.run([sys.executable, "-m", "jepa.cli", "pretrain", "--config", CONFIG, "--workdir",
                          str(tmp_path), "--config.train.stepz=3", "--debug"], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "Traceback" in res.stderr and "ConfigError" in res.stderr
