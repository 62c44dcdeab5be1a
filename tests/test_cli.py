"""The `jepa` command: every subcommand answers --help, and a user's mistake is one line on stderr with exit 2."""
from __future__ import annotations

import os

import pytest

from jepa.cli import COMMANDS, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_usage_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_answers_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and f"jepa {name}" in out.splitlines()[0], out[:300]


def _one_error_line(capfd, argv) -> str:
    capfd.readouterr()
    assert main(argv) == 2
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_train_ac_bad_value_and_missing_bundle(capfd, tmp_path):
    cfg = os.path.join(ROOT, "configs/ac/demo.py") + ":smoke"
    line = _one_error_line(capfd, ["train-ac", "--config", cfg, "--workdir", str(tmp_path), "--config.train.steps=0"])
    assert line.startswith("jepa train-ac: error: invalid config:") and "train.steps=0 must be a number > 0" in line
    line = _one_error_line(capfd, ["train-ac", "--config", cfg, "--workdir", str(tmp_path),
                                   f"--config.encoder_bundle={tmp_path / 'nowhere'}"])
    assert line.startswith("jepa train-ac: error:") and "nowhere" in line


def test_eval_planner_unknown_key_and_missing_config(capfd, tmp_path):
    cfg = os.path.join(ROOT, "configs/plan/reach.py")
    line = _one_error_line(capfd, ["eval-planner", "--config", cfg, "--workdir", str(tmp_path),
                                   "--config.cem.sampels=3"])
    assert "unknown config key 'cem.sampels'" in line
    line = _one_error_line(capfd, ["eval-planner", "--config", str(tmp_path / "no.py"), "--workdir", str(tmp_path)])
    assert "no.py" in line and "does not exist" in line


def test_config_file_that_fails_names_itself(capfd, tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("def get_config():\n    return undefined_name\n")
    line = _one_error_line(capfd, ["pretrain", "--config", str(bad), "--workdir", str(tmp_path)])
    assert str(bad) in line and "NameError" in line


def test_eval_planner_rejects_non_positive_values(capfd, tmp_path):
    cfg = os.path.join(ROOT, "configs/plan/reach.py")
    line = _one_error_line(capfd, ["eval-planner", "--config", cfg, "--workdir", str(tmp_path), "--config.episodes=0",
                                   "--config.steps=-1"])
    assert "invalid config: episodes=0 must be a number > 0; steps=-1 must be a number > 0" in line
