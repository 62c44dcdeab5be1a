"""`jepa data shard`: ArrayRecord shards of records.py dicts from CSV lists, SSv2 and EK100."""
from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader
from PIL import Image

from jepa.data import cli, csvlist, ek100, records, shard, synthetic, video, videoio
from tests import fixtures as fx


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    return fx.make_video_lists(tmp_path_factory.mktemp("lists"), with_corrupt=True)


@pytest.fixture(scope="module")
def ek(tmp_path_factory):
    return fx.make_ek100(tmp_path_factory.mktemp("ek100"), with_frames=True)


def _read_all(meta_path: Path) -> list[dict]:
    out = []
    for f in shard.shard_files(meta_path):
        reader = ArrayRecordReader(f)
        assert "group_size:1" in reader.writer_options_string()
        out += [records.decode(b) for b in reader.read_all()]
        reader.close()
    return out


def _frames(record: dict) -> np.ndarray:
    if "video" in record:
        return videoio.decode_rgb(record["video"])[0]
    return np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in record["frames"]])


def test_csv_round_trip_with_corrupt_video_reported(lists, tmp_path, capsys):
    rc = cli.main(["shard", "--format", "csv", "--lists", str(lists.plain), str(lists.spaced), "--weights", "1", "3",
                   "--out", str(tmp_path), "--name", "clips", "--num_shards", "3", "--workers", "2",
                   "--no_progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "wrote 4 records into 3 shards" in printed and "skipped 1 undecodable" in printed
    assert str(lists.corrupt) in printed
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["clips-00000-of-00003.array_record", "clips-00001-of-00003.array_record",
                     "clips-00002-of-00003.array_record", "clips.json", "clips.report.json"]
    meta = json.loads((tmp_path / "clips.json").read_text())
    assert meta["num_records"] == 4 and [s["num_records"] for s in meta["shards"]] == [2, 1, 1]
    assert meta["weights"] == [1.0, 3.0] and meta["num_skipped"] == 1
    report = json.loads((tmp_path / "clips.report.json").read_text())
    assert [s["path"] for s in report["skipped"]] == [str(lists.corrupt)]
    assert "cannot open video" in report["skipped"][0]["error"]

    got = _read_all(tmp_path / "clips.json")
    expected = [(p, l) for p, l in lists.entries if p != str(lists.corrupt)]
    # round robin: shard 0 holds records 0 and 3, shard 1 record 1, shard 2 record 2
    order = [0, 3, 1, 2]
    assert [(got[i]["path"], got[i]["label"]) for i in np.argsort(order)] == expected
    for rec in got:
        assert rec["video"] == Path(rec["path"]).read_bytes()  # small enough: stored verbatim
        frames = _frames(rec)
        assert len(frames) == rec["num_frames"]
        assert [fx.frame_index(f) for f in frames] == list(range(rec["num_frames"]))
    webm = next(r for r in got if r["path"].endswith("a.webm"))
    assert (webm["fps"], webm["num_frames"], webm["extra"]["codec"]) == (12.0, 24, "vp9")
    ntsc = next(r for r in got if r["path"].endswith("clip one.mp4"))
    assert ntsc["fps"] == pytest.approx(59.94, abs=1e-2) and ntsc["num_frames"] == 30


def test_frames_as_jpeg_and_downscaled_reencode(lists, tmp_path):
    examples = csvlist.read_video_list(lists.plain)[:2]
    opts = shard.ShardOptions(frames_as_jpeg=True, short_side=120)
    summary = shard.shard_examples(examples, "csv", out_dir=tmp_path, name="jpeg", num_shards=1, options=opts,
                                   progress=False)
    recs = _read_all(summary.metadata_path)
    webm = recs[0]
    assert "video" not in webm and len(webm["frames"]) == webm["num_frames"] == 24
    assert Image.open(io.BytesIO(webm["frames"][0])).size == (160, 120)  # 320x240 -> short side 120
    assert [fx.frame_index(f) for f in _frames(webm)] == list(range(24))
    summary = shard.shard_examples(examples, "csv", out_dir=tmp_path, name="small", num_shards=1,
                                   options=shard.ShardOptions(short_side=100), progress=False)
    recs = _read_all(summary.metadata_path)
    frames = _frames(recs[0])
    assert frames.shape[1:3] == (100, 132) and recs[0]["extra"]["reencoded"]   # 320x240 -> 133.3 -> even 132
    assert [fx.frame_index(f) for f in frames] == list(range(24)) and recs[0]["fps"] == 12.0
    assert _frames(recs[1]).shape[1:3] == (96, 128) and not recs[1]["extra"]["reencoded"]  # already small


def _result(i: int) -> shard.Result:
    return shard.Result(record={"video": b"x" * i, "label": i, "fps": 1.0, "num_frames": 1, "path": f"p{i}"})


def test_shards_are_written_under_temporary_names_and_renamed(tmp_path):
    seen = []

    def results():
        for i in range(5):
            if i == 3:  # mid-way: only hidden temporary files exist
                seen.append(sorted(p.name for p in tmp_path.iterdir()))
            yield _result(i)

    summary = shard.write_shards(results(), out_dir=tmp_path, name="t", num_shards=2, progress=False)
    assert seen == [[".t-00000-of-00002.array_record.tmp", ".t-00001-of-00002.array_record.tmp"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "t-00000-of-00002.array_record", "t-00001-of-00002.array_record", "t.json", "t.report.json"]
    assert summary.counts == [3, 2]
    assert [r["label"] for r in _read_all(summary.metadata_path)] == [0, 2, 4, 1, 3]


def test_interrupted_run_leaves_no_finished_looking_shards(tmp_path):
    def results():
        yield _result(0)
        yield _result(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        shard.write_shards(results(), out_dir=tmp_path, name="t", num_shards=2, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_dataset_is_not_overwritten_silently(tmp_path):
    shard.write_shards(iter([_result(1)]), out_dir=tmp_path, name="t", num_shards=3, progress=False)
    with pytest.raises(FileExistsError, match="already exists"):
        shard.write_shards(iter([_result(1)]), out_dir=tmp_path, name="t", num_shards=1, progress=False)
    shard.write_shards(iter([_result(1)]), out_dir=tmp_path, name="t", num_shards=1, overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t-00000-of-00001.array_record", "t.json", "t.report.json"]


def test_record_writer_contiguous_blocks_and_cleanup(tmp_path):
    """write_record_shards, the one writer (shard.py, synthetic.py, robot_video.py): block placement and
    no finished-looking or temporary file left by a failed write."""
    recs = [_result(i).record for i in range(5)]
    paths = [tmp_path / "b" / shard.shard_name("b", k, 3) for k in range(3)]
    assert shard.write_record_shards(iter(recs), paths, num_records=5) == [1, 2, 2]  # [k n // K, (k+1) n // K)
    assert [[records.decode(r)["label"] for r in ArrayRecordReader(str(p)).read_all()] for p in paths] == [
        [0], [1, 2], [3, 4]]
    four = [tmp_path / "c" / shard.shard_name("c", k, 4) for k in range(4)]
    assert shard.write_record_shards(iter(recs[:2]), four, num_records=2) == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="2 records written, 3 announced"):
        shard.write_record_shards(iter(recs[:2]), [tmp_path / "d" / "d.array_record"], num_records=3)
    assert list((tmp_path / "d").iterdir()) == []

    class FailingScene:  # renders three clips, then fails
        name, class_names, calls = "failing", ("a", "b"), 0

        def render(self, rng, label, *, size, frames):
            FailingScene.calls += 1
            if FailingScene.calls > 3:
                raise RuntimeError("render failed")
            return np.zeros((frames, size, size, 3), np.uint8)

    with pytest.raises(RuntimeError, match="render failed"):
        synthetic.write_synthetic(tmp_path / "syn", 6, 0, 2, size=8, frames=2, scenes=[FailingScene()], num_proc=1,
                                  progress=False)
    assert list((tmp_path / "syn").iterdir()) == []


@pytest.mark.parametrize("layout, split", [("videos", "validation"), ("videos", "train"), ("frames", "validation")])
def test_ek100_trimmed_clip_covers_the_right_window(ek, tmp_path, layout, split):
    context = 1.5  # train windows overlap: they are cut in one decoding pass
    examples, skipped = ek100.read_split(ek.annotations, split, ek.root, layout=layout)
    opts = shard.ShardOptions(short_side=54, context_sec=context)
    summary = shard.shard_examples(examples, "ek100", out_dir=tmp_path, name="ek", num_shards=2, options=opts,
                                   workers=1, reader_skipped=skipped, progress=False)
    meta = json.loads(summary.metadata_path.read_text())
    assert meta["num_records"] == len(examples) and meta["num_reader_skipped"] == len(skipped)
    recs = {r["id"]: r for r in _read_all(summary.metadata_path)}
    expected_ids = {f"{v}_{n}" for v, n, *_ in (fx.EK100_TRAIN if split == "train" else fx.EK100_VALIDATION)}
    assert set(recs) == expected_ids - {"P01_11_4"} and summary.skipped == []
    for rec in recs.values():
        x = rec["extra"]
        fps = rec["fps"]
        video_fps = ek.video_fps[x["video_id"]]
        if layout == "videos":
            assert fps == pytest.approx(video_fps) and "video" in rec
        else:  # rgb_frames are at the CSV rate (60 for EK-55 ids, 50 for extension ids)
            assert fps == pytest.approx(50 if x["video_id"] == "P01_101" else 60, rel=2e-3) and "frames" in rec
        frames = _frames(rec)
        assert len(frames) == rec["num_frames"] and min(frames.shape[1:3]) == 54
        # the clip spans frame_at(start - context) .. frame_at(stop) of the original, at the original rate
        assert x["clip_start_frame"] == round(max(0.0, x["start_sec"] - context) * fps)
        assert x["clip_stop_frame"] == round(x["stop_sec"] * fps)
        assert rec["num_frames"] == x["clip_stop_frame"] - x["clip_start_frame"] + 1
        assert x["clip_offset_sec"] == pytest.approx(x["clip_start_frame"] / fps)
        assert x["start_frame"] == round(x["start_sec"] * fps) and x["stop_frame"] == round(x["stop_sec"] * fps)
        assert x["observed_stop_sec"] == pytest.approx(x["start_sec"] - 1.0)
        # each decoded frame shows the source video frame at that time (frame codes survive re-encoding)
        # (the fixture's rgb_frames: jpg k shows the video frame nearest k / csv_rate)
        rate = fps if layout == "videos" else (50 if x["video_id"] == "P01_101" else 60)
        source_index = [round((x["clip_start_frame"] + j) / rate * video_fps) for j in range(len(frames))]
        assert [fx.frame_index(f) for f in frames] == source_index
    if split == "validation" and layout == "videos":  # 29.97 fps MP4 whose CSV frames are at 60 fps
        p09 = recs["P09_07_1"]["extra"]
        assert (p09["csv_start_frame"], p09["start_frame"]) == (132, 66)


# Action starts (s) where the nearest frame to start - 1 s and the last frame before it differ for some rate
# (3.60 at 29.97 fps: 2.6 s x 29.97 = 77.92, frame 78 vs 77), one before the video's first second (0.40).
ANTICIPATION_STARTS = (0.40, 1.37, 2.05, 3.60, 4.33, 4.83, 5.99)


@pytest.mark.parametrize("fps", [Fraction(25), Fraction(30000, 1001), Fraction(30), Fraction(50), fx.FPS_NTSC_60],
                         ids=["25", "29.97", "30", "50", "59.94"])
def test_anticipation_sampler_ends_at_the_shards_observed_stop_frame(tmp_path, fps):
    path = fx.write_mp4(tmp_path / "P01_01.MP4", fps=fps, seconds=6.5, width=64, height=36)
    rate = float(fps)
    examples = [{"path": str(path), "label": 0, "id": f"a{k}",
                 "extra": {"layout": "videos", "video_fps": rate, "start_sec": t, "stop_sec": t + 0.3,
                           "observed_stop_sec": t - 1.0}} for k, t in enumerate(ANTICIPATION_STARTS)]
    results = shard.ek100_task(examples, shard.ShardOptions(context_sec=1.5))  # clips start 1.5 s before
    for ex, result in zip(examples, results):
        rec, x = result.record, result.record["extra"]
        assert x["observed_stop_frame"] == max(0, round((ex["extra"]["start_sec"] - 1.0) * rate))
        idx = video.sample_frame_indices(rec, num_frames=8, target_fps=8, mode="anticipation", tau_a=1.0)[0]
        assert idx[-1] + x["clip_start_frame"] == x["observed_stop_frame"], ex["extra"]["start_sec"]
        # the decoded last frame IS source frame observed_stop_frame (its code survives re-encoding)
        assert fx.frame_index(video.decode_record(rec, idx[-1:])[0]) == x["observed_stop_frame"]
        # the action window is start_frame .. stop_frame of the metadata too
        lo, hi = video.action_window(x["start_sec"], x["stop_sec"], rec["fps"], rec["num_frames"],
                                     x["clip_offset_sec"])
        assert (lo + x["clip_start_frame"], hi - 1 + x["clip_start_frame"]) == (x["start_frame"], x["stop_frame"])
    if fps == Fraction(30000, 1001):
        assert results[ANTICIPATION_STARTS.index(3.60)].record["extra"]["observed_stop_frame"] == 78


@pytest.mark.parametrize("frames_as_jpeg", [False, True])
def test_trim_clips_overlapping_distant_and_out_of_range_windows(tmp_path, frames_as_jpeg):
    path = fx.write_mp4(tmp_path / "v.mp4", fps=fx.FPS_NTSC_60, seconds=5.0, width=160, height=90)
    fps = float(fx.FPS_NTSC_60)
    windows = [(4.5, 9.0), (0.2, 1.0), (0.5, 1.5), (12.0, 13.0), (3.0, 3.0)]  # unsorted; one past the end
    with videoio.open_video(path) as container:
        clips = videoio.trim_clips(container, windows, short_side=46, frames_as_jpeg=frames_as_jpeg,
                                   name=str(path), max_gap_sec=0.5)
    assert isinstance(clips[3], videoio.VideoDecodeError) and "no frames decoded" in str(clips[3])
    assert str(path) in str(clips[3]) and "[12.000, 13.000]" in str(clips[3])
    for (start, stop), clip in zip(windows, clips):
        if isinstance(clip, Exception):
            continue
        last = min(round(stop * fps), 299)  # 5 s at 59.94 fps = 300 frames
        first = round(start * fps)
        assert (clip.first_frame, clip.last_frame, clip.num_frames) == (first, last, last - first + 1)
        frames = _frames({"frames": clip.frames} if frames_as_jpeg else {"video": clip.data})
        assert frames.shape[1:3] == (46, 82)
        assert [fx.frame_index(f) for f in frames] == list(range(clip.first_frame, clip.last_frame + 1))


def test_ek100_corrupt_video_skips_its_actions(tmp_path):
    ek = fx.make_ek100(tmp_path / "data", corrupt_video="P01_101")
    examples, _ = ek100.read_split(ek.annotations, "train", ek.root)
    summary = shard.shard_examples(examples, "ek100", out_dir=tmp_path / "out", name="ek", num_shards=1,
                                   options=shard.ShardOptions(short_side=32, context_sec=1.0), progress=False)
    assert summary.num_records == 4
    assert sorted(s["id"] for s in summary.skipped) == ["P01_101_0", "P01_101_1", "P01_101_2"]
    report = json.loads(summary.report_path.read_text())
    assert report["num_skipped"] == 3 and "P01_101.MP4" in report["skipped"][0]["error"]


def test_cli_ssv2_and_ek100(tmp_path, capsys):
    root = fx.make_ssv2(tmp_path / "ssv2", corrupt_ids=("74225",), num_frames=4)
    rc = cli.main(["shard", "--format", "ssv2", "--root", str(root.root), "--split", "validation",
                   "--out", str(tmp_path / "out"), "--name", "ssv2_val", "--num_shards", "1", "--no_progress"])
    assert rc == 0 and "skipped 1 undecodable" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "ssv2_val.json").read_text())
    assert meta["class_names"] == fx.SSV2_CLASSES and meta["split"] == "validation"
    recs = _read_all(tmp_path / "out" / "ssv2_val.json")
    assert [(r["id"], r["label"]) for r in recs] == [("116154", root.expected["validation"]["116154"])]

    ek = fx.make_ek100(tmp_path / "ek")
    rc = cli.main(["shard", "--format", "ek100", "--root", str(ek.root), "--split", "train", "--short_side", "32",
                   "--context_sec", "2", "--out", str(tmp_path / "out"), "--name", "ek_train", "--num_shards", "2",
                   "--no_progress"])
    assert rc == 0
    meta = json.loads((tmp_path / "out" / "ek_train.json").read_text())
    assert meta["num_records"] == len(fx.EK100_TRAIN) and meta["action_classes"] == [list(p) for p in ek.train_actions]
    assert meta["verb_classes"][:2] == ["take", "put"] and meta["context_sec"] == 2.0


def test_cli_shards_class_subsets_with_gaps(tmp_path, capsys):
    root = fx.make_ssv2(tmp_path / "ssv2", num_frames=4, label_ids=(1, 3, 4))  # indices 0, 2, 5 unused
    rc = cli.main(["shard", "--format", "ssv2", "--root", str(root.root), "--split", "train", "--on_error", "skip",
                   "--out", str(tmp_path / "out"), "--name", "sub", "--num_shards", "2", "--no_progress"])
    assert rc == 0
    meta = json.loads((tmp_path / "out" / "sub.json").read_text())
    assert meta["num_classes"] == 5 and meta["num_records"] == 3 and meta["num_reader_skipped"] == 2
    assert meta["class_names"] == ["<unused 0>", fx.SSV2_CLASSES[1], "<unused 2>", fx.SSV2_CLASSES[3],
                                   fx.SSV2_CLASSES[4]]
    recs = _read_all(tmp_path / "out" / "sub.json")
    assert {r["id"]: r["label"] for r in recs} == root.expected["train"] == {"78687": 1, "42326": 4, "3694": 3}
    assert all(meta["class_names"][r["label"]] == fx.SSV2_CLASSES[r["label"]] for r in recs)

    ek = fx.make_ek100(tmp_path / "ek", verb_ids=(0, 1, 3, 4), noun_ids=(1, 2, 4))
    rc = cli.main(["shard", "--format", "ek100", "--root", str(ek.root), "--split", "train", "--short_side", "32",
                   "--context_sec", "2", "--out", str(tmp_path / "out"), "--name", "ek_sub", "--num_shards", "1",
                   "--no_progress"])
    assert rc == 0
    meta = json.loads((tmp_path / "out" / "ek_sub.json").read_text())
    assert meta["verb_classes"] == ["take", "put", "<unused 2>", "open", "close"]
    assert meta["noun_classes"] == ["<unused 0>", "spoon", "plate", "<unused 3>", "cupboard"]
    assert meta["num_classes"] == len(ek.train_actions) == len(meta["class_names"])
    recs = _read_all(tmp_path / "out" / "ek_sub.json")
    assert len(recs) == len(fx.EK100_TRAIN)
    for r in recs:
        pair = (r["extra"]["verb_class"], r["extra"]["noun_class"])
        assert r["label"] == ek.train_actions.index(pair) and meta["action_classes"][r["label"]] == list(pair)
    capsys.readouterr()

    # a repeated index is still refused: one clear message naming the file, the class and the field
    labels = root.labels_dir / "labels.json"
    labels.write_text(json.dumps({fx.SSV2_CLASSES[1]: "1", fx.SSV2_CLASSES[3]: "1"}))
    rc = cli.main(["shard", "--format", "ssv2", "--root", str(root.root), "--split", "train", "--on_error", "skip",
                   "--out", str(tmp_path / "out"), "--name", "dup", "--num_shards", "1", "--no_progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == (f"jepa data shard: {labels}: class {fx.SSV2_CLASSES[3]!r}: index 1 appears "
                                       f"twice (also class {fx.SSV2_CLASSES[1]!r})")
    assert not (tmp_path / "out" / "dup.json").exists()


def test_cli_reports_malformed_input_once(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a.mp4 1\nb.mp4 two\n")
    rc = cli.main(["shard", "--format", "csv", "--lists", str(bad), "--out", str(tmp_path / "o"), "--name", "x",
                   "--num_shards", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{bad}:2: label 'two' is not an integer" in err
    assert not (tmp_path / "o").exists()
