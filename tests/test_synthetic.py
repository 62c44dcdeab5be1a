"""The embedded synthetic motion dataset: labels, motion-only information, shards, tfds builder, previews."""
from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

from jepa.data import pipeline, records, synthetic, video


def test_labels_balanced_and_names():
    labels = [synthetic.clip_label(i, synthetic.default_scenes())[2] for i in range(8 * 13)]
    assert np.bincount(labels).tolist() == [13] * 8
    assert len(synthetic.class_names()) == 8
    # Several scenes: labels are offset, still balanced.
    scenes = (synthetic.MovingShapes(), synthetic.MovingShapes(name="second"))
    labels = [synthetic.clip_label(i, scenes)[2] for i in range(16 * 5)]
    assert np.bincount(labels).tolist() == [5] * 16


def test_first_frame_does_not_depend_on_label():
    scene = synthetic.MovingShapes()
    clips = [scene.render(np.random.default_rng(123), label, size=32, frames=6) for label in range(8)]
    for clip in clips[1:]:
        np.testing.assert_array_equal(clip[0], clips[0][0])  # identical first frame for every label
    last = np.stack([c[-1] for c in clips])
    assert len({last[i].tobytes() for i in range(8)}) == 8  # the motion tells them apart


@pytest.mark.parametrize("label", range(8))
def test_target_moves_in_the_labelled_direction(label):
    scene_gen = synthetic.MovingShapes(noise_std=(0.0, 0.0))
    scene = scene_gen.sample_scene(np.random.default_rng(7), size=64, frames=8)
    track = scene_gen.target_track(scene, label)
    move = track[-1] - track[0]  # (dy, dx), screen y down
    angle = np.degrees(np.arctan2(-move[0], move[1])) % 360
    assert min(abs(angle - 45 * label), 360 - abs(angle - 45 * label)) <= 15
    clip = scene_gen.draw(scene, label)
    # The target is drawn on top: its pixels are where the track says in every frame.
    mask, tex = scene["target_mask"], np.clip(scene["target_tex"] + 0.5, 0, 255).astype(np.uint8)
    d = mask.shape[0]
    checked = 0
    for t in range(8):
        y, x = track[t] % 64
        if y + d <= 64 and x + d <= 64:
            np.testing.assert_array_equal(clip[t, y:y + d, x:x + d][mask], tex[mask])
            checked += 1
    assert checked >= 2


def test_direction_symmetries_map_labels_exactly():
    """A marker following the target's track for class k, transformed by each symmetry, moves in the direction
    of the mapped class (the track comes from target_track, the label convention's one source)."""
    scene_gen = synthetic.MovingShapes()
    syms = synthetic.direction_symmetries()
    assert len(syms) == len(set(syms)) == 16 and () in syms
    for label in range(8):
        scene = scene_gen.sample_scene(np.random.default_rng(label), size=64, frames=8)
        scene["target_speed"] = 3.0  # 21 px over the clip: the marker stays inside the frame
        track = scene_gen.target_track(scene, label)
        clip = np.zeros((8, 64, 64, 1), np.uint8)
        for t, (y, x) in enumerate(track - track[0] + 32):
            clip[t, y, x] = 255
        seen = set()
        for sym in syms:
            out, mapped = synthetic.apply_symmetry(clip, np.array([label]), sym)
            first, last = (np.argwhere(out[t, ..., 0])[0] for t in (0, -1))
            move = last - first
            angle = np.degrees(np.arctan2(-move[0], move[1])) % 360
            diff = abs(angle - 45 * int(mapped[0]))
            assert min(diff, 360 - diff) <= 15, (label, sym, angle, mapped)
            seen.add((out.tobytes(), int(mapped[0])))
        assert len(seen) == 16  # 16 different clips


def test_write_shards_and_read_through_pipeline(tmp_path):
    out = synthetic.write_synthetic(tmp_path, num_train=24, num_val=8, num_shards=2, seed=3, size=32, frames=8,
                                    num_proc=1, progress=False)
    assert [len(out["train"]), len(out["validation"])] == [2, 2]
    assert all(os.path.exists(p) for p in out["train"] + out["validation"])
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    cfg = synthetic.synthetic_config(tmp_path, crop_size=32, num_frames=8, batch_size=8, repeat=False,
                                    shuffle=False, drop_remainder=False)
    batches = list(pipeline.make_dataset(cfg, split="train", seed=0, shard_index=0, shard_count=1))
    assert len(batches) == 3
    assert batches[0]["video"].shape == (8, 8, 32, 32, 3) and batches[0]["video"].dtype == np.float32
    labels = np.concatenate([b["label"] for b in batches])
    assert sorted(np.concatenate([b["index"] for b in batches]).tolist()) == list(range(24))
    assert np.bincount(labels, minlength=8).tolist() == [3] * 8
    # The stored clip decodes to (nearly) the rendered one: h264 at crf 18 is close to lossless here.
    import grain

    rec = records.decode(grain.sources.ArrayRecordDataSource(out["train"])[5])
    decoded = video.decode_record(rec, np.arange(8)).astype(np.float32)
    clip, label = synthetic.render_clip(5, split="train", seed=3, size=32, frames=8)
    assert rec["label"] == label and rec["num_frames"] == 8 and rec["fps"] == 8.0
    assert np.abs(decoded - clip).mean() < 10


def test_jpeg_codec_records(tmp_path):
    rec = synthetic.make_record(2, seed=1, size=16, frames=4, codec="jpeg")
    assert len(rec["frames"]) == 4 and "video" not in rec
    frames = video.decode_record(records.decode(records.encode(rec)), [0, 3])
    clip, _ = synthetic.render_clip(2, seed=1, size=16, frames=4)
    assert frames.shape == (2, 16, 16, 3)
    assert np.abs(frames.astype(np.float32) - clip[[0, 3]]).mean() < 10


@pytest.mark.slow
def test_output_independent_of_worker_processes(tmp_path):
    a = synthetic.write_synthetic(tmp_path / "a", 40, 0, 2, seed=5, size=16, frames=4, num_proc=1, progress=False)
    b = synthetic.write_synthetic(tmp_path / "b", 40, 0, 2, seed=5, size=16, frames=4, num_proc=2, progress=False)
    for pa, pb in zip(a["train"], b["train"]):
        assert open(pa, "rb").read() == open(pb, "rb").read()


def test_tfds_builder_builds_and_reads_without_tensorflow(tmp_path):
    from jepa_datasets.synthetic.synthetic_dataset_builder import Builder

    builder = Builder(data_dir=os.fspath(tmp_path), config="tiny", file_format="array_record")
    builder.download_and_prepare()
    train = builder.as_data_source(split="train")
    val = builder.as_data_source(split="validation")
    assert (len(train), len(val)) == (64, 32)
    ex = train[0]
    index = int(ex["path"].decode().rsplit("/", 1)[1])
    want = synthetic.make_record(index, split="train", seed=0, size=64, frames=16, fps=8.0)
    assert ex["video"] == want["video"] and int(ex["label"]) == want["label"]
    assert int(ex["num_frames"]) == 16 and float(ex["fps"]) == 8.0
    # Through the pipeline as a tfds source (tfds.data_source finds it by name in data_dir).
    cfg = pipeline.default_config()
    cfg.sources = [{"tfds_name": "synthetic/tiny", "data_dir": os.fspath(tmp_path)}]
    cfg.update(dict(stride=1, crop_size=32, num_frames=4, batch_size=4, flip=False))
    batch = next(iter(pipeline.make_dataset(cfg, split="validation", seed=0, shard_index=0, shard_count=1)))
    assert batch["video"].shape == (4, 4, 32, 32, 3) and batch["label"].dtype == np.int32
    # Or an already opened data source (a builder's as_data_source).
    cfg.sources = [{"data_source": val}]
    batch2 = next(iter(pipeline.make_dataset(cfg, split="ignored", seed=0, shard_index=0, shard_count=1)))
    np.testing.assert_array_equal(batch2["video"], batch["video"])
    assert "tensorflow" not in sys.modules
    if importlib.util.find_spec("tensorflow") is None:
        assert "tensorflow" not in sys.modules  # built with TensorFlow absent from the environment


def test_preview_png_and_gif(tmp_path):
    from PIL import Image

    clips = [synthetic.render_clip(i, size=32, frames=6)[0] for i in range(3)]
    names = [synthetic.class_names()[synthetic.render_clip(i, size=32, frames=6)[1]] for i in range(3)]
    png = synthetic.save_preview(clips, names, tmp_path / "grid.png", max_frames=4)
    gif = synthetic.save_preview(clips, names, tmp_path / "grid.gif")
    with Image.open(png) as im:
        assert im.size[0] >= 4 * 64 and im.size[1] >= 3 * 64
    with Image.open(gif) as im:
        assert im.n_frames == 6
