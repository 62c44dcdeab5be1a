"""tensorflow-datasets builders data/ssv2 and data/ek100: build from real-format fixtures and read them back
through `tfds.data_source`, in a subprocess where TensorFlow is absent and never imported."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jepa.data import cli
from tests import fixtures as fx

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import importlib.util, json, sys
    assert importlib.util.find_spec("tensorflow") is None, "this test expects TensorFlow NOT to be installed"
    import tensorflow_datasets as tfds
    from jepa.data import cli, videoio
    from tests import fixtures as fx

    ssv2_dir, ek_dir, data_dir = sys.argv[1:4]
    assert cli.main(["build", "ssv2", "--manual_dir", ssv2_dir, "--data_dir", data_dir, "--workers", "2"]) == 0
    assert cli.main(["build", "ek100", "--manual_dir", ek_dir, "--data_dir", data_dir]) == 0
    out = {}
    for name in ("ssv2", "ek100"):
        sources = tfds.data_source(name, data_dir=data_dir)
        out[name] = {}
        for split, source in sources.items():
            rows = []
            for i in range(len(source)):
                ex = dict(source[i])
                frames, fps = videoio.decode_rgb(ex.pop("video"))
                ex = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
                      for k, v in ex.items()}
                ex["decoded"] = [len(frames), frames.shape[1], frames.shape[2], fps]
                ex["codes"] = [fx.frame_index(f) for f in frames]
                rows.append(ex)
            out[name][split] = rows
    out["tensorflow_modules"] = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    ssv2 = fx.make_ssv2(root / "ssv2", corrupt_ids=("3694",), num_frames=5)
    ek = fx.make_ek100(root / "ek100")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ssv2.root), str(ek.root), str(root / "tfds")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), ssv2, ek, root / "tfds"


def test_tensorflow_never_imported(built):
    out, *_ = built
    assert out["tensorflow_modules"] == []


def test_ssv2_builder(built):
    out, ssv2, _, data_dir = built
    assert (data_dir / "ssv2" / "1.0.0" / "ssv2-train.array_record-00000-of-00001").exists()
    for split in ("train", "validation", "test"):
        expected = dict(ssv2.expected[split])
        expected.pop("3694", None)  # corrupt video: skipped
        rows = out["ssv2"][split]
        assert {r["id"]: r["label"] for r in rows} == expected
        for r in rows:
            assert r["fps"] == 12.0 and r["decoded"][1] == 240 and r["decoded"][0] == r["num_frames"]
            assert r["codes"] == list(range(r["num_frames"]))
            assert r["path"].endswith(f"/20bn-something-something-v2/{r['id']}.webm")
    falling = next(r for r in out["ssv2"]["train"] if r["id"] == "42326")
    assert falling["template"] == "[Something] falling like a feather or paper"


def test_ek100_builder(built):
    out, _, ek, data_dir = built
    assert (data_dir / "ek100" / "1.0.0" / "ek100-validation.array_record-00000-of-00001").exists()
    assert sorted(r["id"] for r in out["ek100"]["validation"]) == ["P01_101_3", "P01_11_3", "P09_07_1"]
    assert len(out["ek100"]["train"]) == len(fx.EK100_TRAIN)
    assert [(r["id"], r["label"]) for r in out["ek100"]["test"]] == [("P01_101_4", -1)]
    for r in out["ek100"]["train"] + out["ek100"]["validation"]:
        fps = ek.video_fps[r["video_id"]]
        assert r["fps"] == pytest.approx(fps, rel=1e-6) and r["label"] == r["action_class"]
        assert ek.train_actions[r["action_class"]] == (r["verb_class"], r["noun_class"])
        # times are stored as float32: compare frame numbers to them within half a frame (+ rounding)
        assert abs(r["start_frame"] - r["start_sec"] * fps) <= 0.501
        assert abs(r["stop_frame"] - r["stop_sec"] * fps) <= 0.501
        assert abs(r["clip_start_frame"] - max(0.0, r["start_sec"] - 6.0) * fps) <= 0.501  # CONTEXT_SEC = 6
        assert r["clip_offset_sec"] == pytest.approx(r["clip_start_frame"] / fps, abs=1e-5)
        assert r["observed_stop_sec"] == pytest.approx(r["start_sec"] - 1.0, abs=1e-5)
        n = r["num_frames"]
        assert r["decoded"][0] == n and r["codes"] == list(range(r["clip_start_frame"], r["clip_start_frame"] + n))
        assert r["clip_start_frame"] + n - 1 == r["stop_frame"]
    p09 = next(r for r in out["ek100"]["validation"] if r["id"] == "P09_07_1")
    assert (p09["csv_start_frame"], p09["start_frame"], p09["narration"]) == (132, 66, "take spoon")


def test_build_unknown_name_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no builder 'nope'"):
        cli.main(["build", "nope", "--data_dir", str(tmp_path)])
