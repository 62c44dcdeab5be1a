"""Video decoding, frame sampling, augmentation and the grain pipeline (sharding, mixtures, workers, state)."""
from __future__ import annotations

import gc
import io
import json
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from jepa.data import pipeline, records, synthetic, transforms, video

# ------------------------------------------------------------------------------------------- fixtures


def counter_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frame i shows i // 10 in its left half and i % 10 in its right half as grey levels 16 + 20 k."""
    f = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        f[i, :, : w // 2] = 16 + 20 * (i // 10)
        f[i, :, w // 2:] = 16 + 20 * (i % 10)
    return f


def read_counter(frames: np.ndarray) -> np.ndarray:
    """Inverse of counter_frames on decoded (lossy) frames [..., H, W, 3]."""
    w = frames.shape[-2]
    left = frames[..., :, : w // 2, :].astype(np.float64).mean((-1, -2, -3))
    right = frames[..., :, w // 2:, :].astype(np.float64).mean((-1, -2, -3))
    return (np.round((left - 16) / 20) * 10 + np.round((right - 16) / 20)).astype(int)


def encode(frames: np.ndarray, fps: float, container: str = "mp4") -> bytes:
    """Real-format video bytes: h264 mp4 (with B-frames, keyframe every 12) or VP9 webm (as SSv2)."""
    codec, opts = (("libx264", {"g": "12", "crf": "12", "preset": "fast"}) if container == "mp4" else
                   ("libvpx-vp9", {"g": "12", "crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}))
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = opts
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def counter_record(n: int, fps: float, container: str = "mp4", **extra) -> dict:
    return {"video": encode(counter_frames(n), fps, container), "fps": fps, "num_frames": n, "label": 1,
            "path": f"counter-{n}.{container}", "extra": extra}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two tiny synthetic datasets (different seeds) as ArrayRecord shards."""
    root = tmp_path_factory.mktemp("synthetic")
    for name, seed in (("a", 0), ("b", 1)):
        synthetic.write_synthetic(root / name, num_train=30, num_val=10, num_shards=2, seed=seed, size=32,
                                  frames=6, num_proc=1, progress=False)
    return root


def cfg_for(root, **kw):
    base = dict(sources=[{"glob": str(root / "a" / "synthetic-{split}-*.array_record")}], num_frames=4,
                stride=1, crop_size=24, batch_size=4, flip=False, read_threads=0)
    return {**base, **kw}


def take(ds_or_it, n):
    it = iter(ds_or_it)
    return [next(it) for _ in range(n)]


def assert_same_batches(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


# ------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("container,fps", [("mp4", 30000 / 1001), ("webm", 12.0)])
def test_decode_exact_frame_indices(container, fps, monkeypatch):
    rec = counter_record(120, fps, container)
    idx = [0, 5, 11, 12, 59, 60, 61, 99, 119]
    np.testing.assert_array_equal(read_counter(video.decode_record(rec, idx)), idx)
    # Late clips are decoded after a seek (which must succeed, not fall back), giving the same frames as a
    # sequential decode from the start.
    passes = []
    collect = video._collect
    monkeypatch.setattr(video, "_collect", lambda *a, **k: passes.append(k["from_pts"]) or collect(*a, **k))
    late = np.arange(70, 100, 3)
    seeked = video.decode_record(rec, late)
    assert passes == [True]
    np.testing.assert_array_equal(read_counter(seeked), late)
    monkeypatch.setattr(video, "SEEK_MIN_FRAMES", 10**9)
    np.testing.assert_array_equal(video.decode_record(rec, late), seeked)
    assert passes == [True, False]
    # Any index shape, repeated indices, decode-time downscale.
    out = video.decode_record(rec, np.array([[3, 3], [50, 2]]), short_side=24)
    assert out.shape == (2, 2, 24, 32, 3)
    np.testing.assert_array_equal(read_counter(out), [[3, 3], [50, 2]])
    # The decoder's threads change nothing but the speed.
    for threads in (0, 2):
        np.testing.assert_array_equal(video.decode_record(rec, late, threads=threads), seeked)


def test_decode_jpeg_frames_and_past_the_end():
    frames = counter_frames(30)
    rec = {"frames": synthetic.encode_jpegs(frames), "fps": 10.0, "num_frames": 30, "label": 0, "path": "jpegs"}
    np.testing.assert_array_equal(read_counter(video.decode_record(rec, [0, 17, 29])), [0, 17, 29])
    # A container holding fewer frames than its record claims: later indices repeat the last real frame.
    short = counter_record(20, 25.0)
    np.testing.assert_array_equal(read_counter(video.decode_record(short, [18, 19, 25, 30])), [18, 19, 19, 19])


def test_bad_video_names_the_record():
    rec = {"video": b"not a video at all", "fps": 30.0, "num_frames": 10, "label": 0, "path": "broken.mp4"}
    with pytest.raises(video.VideoDecodeError, match="broken.mp4"):
        video.decode_record(rec, [0, 1])


# ------------------------------------------------------------------------------------------- sampling


def test_fps_stride_rule():
    assert video.frame_stride(29.97, target_fps=4) == 7   # ceil(29.97) // 4
    assert video.frame_stride(12.0, target_fps=4) == 3
    assert video.frame_stride(59.94, target_fps=8) == 7
    assert video.frame_stride(25.0, target_fps=4.0) == 6
    assert video.frame_stride(2.0, target_fps=4) == 1
    assert video.frame_stride(29.97, target_fps=4, stride=2) == 2
    rec = {"fps": 29.97, "num_frames": 300, "label": 0, "path": "x", "video": b""}
    idx = video.sample_frame_indices(rec, num_frames=16, target_fps=4, rng=np.random.default_rng(0))
    assert idx.shape == (1, 16) and set(np.diff(idx[0])) == {7}
    assert 0 <= idx.min() and idx.max() < 300


def test_random_window_start_covers_the_video():
    rec = {"fps": 10.0, "num_frames": 40, "label": 0, "path": "x", "video": b""}
    starts = {int(video.sample_frame_indices(rec, num_frames=8, stride=2, rng=np.random.default_rng(s))[0, 0])
              for s in range(200)}
    assert starts == set(range(0, 40 - 15 + 1))  # span 15 frames: starts 0..25, all reachable
    centred = video.sample_frame_indices(rec, num_frames=8, stride=2)
    assert centred[0, 0] == (40 - 15) // 2


def test_short_video_padded_with_last_frame():
    rec = {"fps": 10.0, "num_frames": 10, "label": 0, "path": "x", "video": b""}
    idx = video.sample_frame_indices(rec, num_frames=16, stride=2, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(idx[0], [0, 2, 4, 6, 8] + [9] * 11)
    # End to end on a real video.
    real = counter_record(10, 10.0)
    got = read_counter(video.decode_record(real, video.sample_frame_indices(real, num_frames=16, stride=2)))
    np.testing.assert_array_equal(got[0], [0, 2, 4, 6, 8] + [9] * 11)


def test_evenly_spaced_segments():
    rec = {"fps": 10.0, "num_frames": 100, "label": 0, "path": "x", "video": b""}
    idx = video.sample_frame_indices(rec, num_frames=8, stride=2, num_segments=3)
    assert idx.shape == (3, 8)
    np.testing.assert_array_equal(idx[:, 0], [0, 42, 85])
    assert idx[-1, -1] == 99 and all(set(np.diff(s)) == {2} for s in idx)


def test_training_segments_one_random_clip_per_equal_part():
    """Training (an rng) with S segments: the window in S equal parts, segment i a random clip inside part i."""
    rec = {"fps": 10.0, "num_frames": 90, "label": 0, "path": "x", "video": b""}
    starts = []
    for seed in range(300):
        idx = video.sample_frame_indices(rec, num_frames=4, stride=3, num_segments=3, rng=np.random.default_rng(seed))
        assert idx.shape == (3, 4) and all(set(np.diff(seg)) == {3} for seg in idx)
        for i, seg in enumerate(idx):  # part i = [30 i, 30 i + 30)
            assert 30 * i <= seg.min() and seg.max() < 30 * (i + 1), (seed, idx)
        starts.append(idx[:, 0] - [0, 30, 60])
    starts = np.asarray(starts)  # span 10: starts 0..20 within each part, all reachable, independently drawn
    assert all(set(starts[:, i]) == set(range(21)) for i in range(3))
    assert len({tuple(s) for s in starts}) > 100
    # Action mode: the action's window is what is split; a part shorter than the span repeats its last frame.
    act = {**rec, "extra": {"start_sec": 2.0, "stop_sec": 3.1}}  # frames 20..31: parts [20, 26), [26, 32)
    idx = video.sample_frame_indices(act, num_frames=4, stride=2, mode="action", num_segments=2,
                                     rng=np.random.default_rng(0))
    np.testing.assert_array_equal(idx, [[20, 22, 24, 25], [26, 28, 30, 31]])
    # A window shorter than the number of segments still gives S clips inside it.
    tiny = {**rec, "num_frames": 1}
    idx = video.sample_frame_indices(tiny, num_frames=3, stride=1, num_segments=2, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(idx, np.zeros((2, 3)))


def test_action_window_in_original_timeline():
    # Stored clip starts 10 s into the original video; the action is at 12.0-13.0 s.
    rec = counter_record(60, 20.0, start_sec=12.0, stop_sec=13.0, clip_offset_sec=10.0)
    idx = video.sample_frame_indices(rec, num_frames=4, stride=5, mode="action", rng=np.random.default_rng(1))
    assert idx.min() >= 40 and idx.max() <= 60 - 1 and idx.max() <= 60
    assert idx.min() >= int(round((12.0 - 10.0) * 20)) and idx.max() <= (13.0 - 10.0) * 20
    np.testing.assert_array_equal(read_counter(video.decode_record(rec, idx)), idx)
    with pytest.raises(video.VideoDecodeError, match="start_sec"):
        video.sample_frame_indices({**rec, "extra": {}}, num_frames=4, stride=5, mode="action")


@pytest.mark.parametrize("tau_a", [1.0, 0.5, 2.25])
def test_anticipation_clip_ends_tau_a_before_action(tau_a):
    fps, offset, start = 29.97, 3.0, 9.4
    rec = {"fps": fps, "num_frames": 400, "label": 0, "path": "x", "video": b"",
           "extra": {"start_sec": start, "clip_offset_sec": offset}}
    idx = video.sample_frame_indices(rec, num_frames=8, target_fps=8, mode="anticipation", tau_a=tau_a)[0]
    last_frame = idx[-1] + round(offset * fps)  # in the original video
    # the frame nearest start - tau_a (jepa.data.frametime: the rule of the shard's observed_stop_frame)
    assert last_frame == round((start - tau_a) * fps) and abs(last_frame / fps - (start - tau_a)) <= 0.5 / fps
    assert set(np.diff(idx)) == {video.frame_stride(fps, target_fps=8)}
    # Observation window before the start of the video: padded with frame 0.
    early = {**rec, "extra": {"start_sec": offset + 1.2, "clip_offset_sec": offset}}
    idx = video.sample_frame_indices(early, num_frames=8, target_fps=8, mode="anticipation", tau_a=1.0)[0]
    assert idx[0] == 0 and idx[-1] == round((offset + 0.2) * fps) - round(offset * fps)


# ------------------------------------------------------------------------------------------- transforms


def test_random_resized_crop_statistics():
    rng = np.random.default_rng(0)
    boxes = np.array([transforms.random_resized_crop_params(rng, 480, 640) for _ in range(2000)])
    area = boxes[:, 2] * boxes[:, 3] / (480 * 640)
    aspect = boxes[:, 3] / boxes[:, 2]
    assert area.min() >= 0.29 and area.max() <= 1.0 and np.median(area) < 0.7
    assert aspect.min() >= 0.74 and aspect.max() <= 1.36
    assert (boxes[:, 0] + boxes[:, 2] <= 480).all() and (boxes[:, 1] + boxes[:, 3] <= 640).all()
    # log-uniform aspect (checked where no draw is rejected): log aspect has the uniform's mean and spread.
    boxes = np.array([transforms.random_resized_crop_params(rng, 1000, 1000, scale=(0.3, 0.5)) for _ in range(2000)])
    log_aspect = np.log(boxes[:, 3] / boxes[:, 2])
    lo, hi = np.log(0.75), np.log(1.35)
    assert abs(log_aspect.mean() - (lo + hi) / 2) < 0.02
    assert abs(log_aspect.std() - (hi - lo) / np.sqrt(12)) < 0.02


def test_train_transform_shapes_determinism_flip_and_normalisation():
    clip = np.random.default_rng(0).integers(0, 256, (4, 40, 60, 3), dtype=np.uint8)
    a = transforms.train_transform(clip, np.random.default_rng(5), crop_size=32)
    b = transforms.train_transform(clip, np.random.default_rng(5), crop_size=32)
    c = transforms.train_transform(clip, np.random.default_rng(6), crop_size=32)
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Whole-frame crop: the output is the resized clip or its mirror image, about half the time each.
    square = clip[:, :40, :40]
    plain = transforms.normalize(transforms.crop_resize(square, (0, 0, 40, 40), (32, 32)))
    flips = []
    for s in range(40):
        out = transforms.train_transform(square, np.random.default_rng(s), crop_size=32, scale=(1, 1), ratio=(1, 1))
        is_plain, is_flip = np.allclose(out, plain), np.allclose(out, plain[:, :, ::-1])
        assert is_plain != is_flip
        flips.append(is_flip)
    assert 8 <= sum(flips) <= 32
    # ImageNet normalisation: the mean colour maps to 0, channel by channel.
    mean_px = np.broadcast_to(np.round(transforms.IMAGENET_MEAN * 255).astype(np.uint8), (1, 2, 2, 3))
    assert np.abs(transforms.normalize(mean_px)).max() < 0.01
    np.testing.assert_allclose(transforms.normalize(np.full((1, 1, 1, 3), 255, np.uint8))[0, 0, 0],
                               (1 - transforms.IMAGENET_MEAN) / transforms.IMAGENET_STD, rtol=1e-5)


def test_eval_views():
    clip = np.zeros((3, 40, 80, 3), np.uint8)
    clip[:, :, :20] = 200  # bright left edge
    one = transforms.eval_transform(clip, crop_size=32)
    three = transforms.spatial_views(clip, 32, num_views=3)
    assert one.shape == (1, 3, 32, 32, 3) and one.dtype == np.float32
    assert three.shape == (3, 3, 32, 32, 3)
    assert three[0].mean() > three[1].mean() > three[2].mean()  # left, centre, right
    assert three[2].max() == 0


# ------------------------------------------------------------------------------------------- pipeline


def test_batches_shapes_and_eval_layout(shards):
    batch = take(pipeline.make_dataset(cfg_for(shards), split="train", seed=0, shard_index=0, shard_count=1), 1)[0]
    assert batch["video"].shape == (4, 4, 24, 24, 3) and batch["video"].dtype == np.float32
    assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
    assert batch["index"].dtype == np.int64 and batch["valid"].all()
    ev = cfg_for(shards, eval=True, num_views=3, num_segments=2, num_frames=2, stride=2, repeat=False,
                 shuffle=False)
    batch = take(pipeline.make_dataset(ev, split="validation", seed=0, shard_index=0, shard_count=1), 1)[0]
    assert batch["video"].shape == (4, 3, 2, 2, 24, 24, 3)


def png_frames(frames: np.ndarray) -> list[bytes]:
    out = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="PNG")  # lossless: decoded frames are exact
        out.append(buf.getvalue())
    return out


def segment_cfg(recs, **kw):
    return {**dict(sources=[{"data_source": [records.encode(r) for r in recs]}], num_frames=4, stride=2,
                   num_segments=2, batch_size=4, read_threads=0), **kw}


def test_train_batches_with_segments_sample_each_half(shards):
    """num_segments=2 in training: [B, 2, T, h, w, 3]; segment 0 from the video's first half, segment 1 from its
    second half, at random positions; the pixels name the frames (fixtures.frame_image)."""
    from tests import fixtures as fx

    n = 40
    recs = [{"frames": png_frames(np.stack([fx.frame_image(i, 64, 64) for i in range(n)])), "fps": 10.0,
             "num_frames": n, "label": k, "path": f"index-{k}"} for k in range(4)]
    # The whole frame, no flip, no resize (64 -> 64): the frame numbers read back exactly.
    cfg = segment_cfg(recs, crop_size=64, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    batches = take(pipeline.make_dataset(cfg, split="train", seed=0, shard_index=0, shard_count=1), 5)
    starts = set()
    for b in batches:
        assert b["video"].shape == (4, 2, 4, 64, 64, 3) and b["video"].dtype == np.float32
        got = np.array([[[fx.frame_index(f) for f in seg] for seg in clip]
                        for clip in transforms.denormalize(b["video"])])
        assert got.shape == (4, 2, 4)
        for clip in got:
            assert all(set(np.diff(seg)) == {2} for seg in clip), clip
            assert 0 <= clip[0].min() and clip[0].max() < n // 2, clip  # segment 0 in the first half
            assert n // 2 <= clip[1].min() and clip[1].max() < n, clip  # segment 1 in the second half
            starts.add(tuple(clip[:, 0]))
    assert len(starts) > 5  # random positions in each half (evaluation's spacing would always give (0, 33))
    # S = 1 is the single-segment clip it always was: [B, T, h, w, 3], and the same as not saying num_segments.
    one = take(pipeline.make_dataset(segment_cfg(recs, num_segments=1, crop_size=32), split="train", seed=0,
                                     shard_index=0, shard_count=1), 1)[0]
    cfg1 = segment_cfg(recs, crop_size=32)
    del cfg1["num_segments"]
    default = take(pipeline.make_dataset(cfg1, split="train", seed=0, shard_index=0, shard_count=1), 1)[0]
    assert one["video"].shape == (4, 4, 32, 32, 3)
    assert_same_batches([one], [default])
    batch = take(pipeline.make_dataset(cfg_for(shards), split="train", seed=0, shard_index=0, shard_count=1), 1)[0]
    assert batch["video"].shape == (4, 4, 24, 24, 3)


def test_train_segments_share_one_spatial_augmentation():
    """Every segment of a clip gets the same crop, flip, RandAugment and erasing: on a static video the segments
    (and all frames) come out identical, while the augmentation differs from clip to clip; erasing puts one
    rectangle (of fresh noise per pixel) at the same place in every frame of every segment."""
    rng = np.random.default_rng(0)
    still = np.clip(np.mgrid[0:48, 0:64][1][..., None] * 4 + rng.integers(0, 60, (48, 64, 3)), 0, 255)
    frames = np.repeat(still.astype(np.uint8)[None], 30, axis=0)
    recs = [{"frames": png_frames(frames), "fps": 10.0, "num_frames": 30, "label": k, "path": f"still-{k}"}
            for k in range(4)]
    cfg = segment_cfg(recs, crop_size=32, scale=(0.08, 1.0), flip=True, randaugment=(4, 9))
    v = take(pipeline.make_dataset(cfg, split="train", seed=1, shard_index=0, shard_count=1), 1)[0]["video"]
    assert v.shape == (4, 2, 4, 32, 32, 3)
    for clip in v:
        np.testing.assert_array_equal(clip[1], clip[0])
        np.testing.assert_array_equal(clip[0], np.broadcast_to(clip[0, :1], clip[0].shape))
    assert all(not np.array_equal(v[0], v[k]) for k in range(1, 4))  # the same content, different augmentations
    # Erasing is drawn last: the same seed gives the same clips, plus one rectangle shared by all frames.
    erased = take(pipeline.make_dataset({**cfg, "erase_prob": 1.0}, split="train", seed=1, shard_index=0,
                                        shard_count=1), 1)[0]["video"]
    for clip, plain in zip(erased, v):
        diff = (clip != plain).any(-1)  # [S, T, h, w]
        assert diff.any() and (diff == diff[:1, :1]).all()


def test_sharding_gives_disjoint_covering_sets(shards):
    seen = []
    counts = []
    for k in range(3):
        cfg = cfg_for(shards, repeat=False, drop_remainder=False, batch_size=4)
        batches = list(pipeline.make_dataset(cfg, split="train", seed=3, shard_index=k, shard_count=3))
        counts.append(len(batches))
        seen.append({int(i) for b in batches for i in b["index"][b["valid"]]})
    assert len(set(counts)) == 1  # every process gets the same number of (padded) batches
    assert sum(len(s) for s in seen) == 30 and set().union(*seen) == set(range(30))


def test_mixture_weights(shards):
    cfg = cfg_for(shards, batch_size=8, crop_size=8, num_frames=1, sources=[
        {"glob": str(shards / "a" / "synthetic-{split}-*.array_record"), "weight": 3.0},
        {"glob": str(shards / "b" / "synthetic-{split}-*.array_record"), "weight": 1.0}])
    batches = take(pipeline.make_dataset(cfg, split="train", seed=0, shard_index=0, shard_count=1), 25)
    src = np.concatenate([b["source"] for b in batches])
    assert abs(np.mean(src == 0) - 0.75) < 0.05
    # Sampling with replacement: more than an epoch of source 0 comes back, reshuffled.
    idx0 = np.concatenate([b["index"][b["source"] == 0] for b in batches])
    assert len(idx0) > 30 and set(idx0.tolist()) == set(range(30))
    assert idx0[:30].tolist() != idx0[30:60].tolist()


def mask_like(batch, rng):
    """A stand-in for the mask generator: per-example random token permutation from the batch rng."""
    b = batch["video"].shape[0]
    return {**batch, "mask": np.stack([rng.permutation(16)[:6] for _ in range(b)]).astype(np.int32)}


def test_iterator_state_restore_and_batch_transform(shards, tmp_path):
    cfg = cfg_for(shards, flip=True)
    ds = pipeline.make_dataset(cfg, split="train", seed=11, shard_index=0, shard_count=1, batch_transform=mask_like)
    it = iter(ds)
    first = [next(it) for _ in range(5)]
    pipeline.save_iterator_state(it, tmp_path / "it.json")
    json.loads((tmp_path / "it.json").read_text())
    expected = [next(it) for _ in range(4)]
    fresh = iter(pipeline.make_dataset(cfg, split="train", seed=11, shard_index=0, shard_count=1,
                                       batch_transform=mask_like))
    pipeline.restore_iterator_state(fresh, tmp_path / "it.json")
    assert_same_batches([next(fresh) for _ in range(4)], expected)
    # The batch transform is deterministic by batch position and varies across batches.
    assert "mask" in first[0] and not np.array_equal(first[0]["mask"], first[1]["mask"])
    again = take(pipeline.make_dataset(cfg, split="train", seed=11, shard_index=0, shard_count=1,
                                       batch_transform=mask_like), 2)
    assert_same_batches(again, first[:2])
    other = take(pipeline.make_dataset(cfg, split="train", seed=12, shard_index=0, shard_count=1), 1)
    assert not np.array_equal(other[0]["index"], first[0]["index"])


def test_orbax_checkpoint_of_iterator(shards, tmp_path):
    import grain
    import orbax.checkpoint as ocp

    cfg = cfg_for(shards)
    it = iter(pipeline.make_dataset(cfg, split="train", seed=2, shard_index=0, shard_count=1))
    take(it, 3)
    ckpt = ocp.Checkpointer(grain.checkpoint.CheckpointHandler())
    ckpt.save(tmp_path / "ds", args=grain.checkpoint.CheckpointSave(it))
    expected = take(it, 2)
    fresh = iter(pipeline.make_dataset(cfg, split="train", seed=2, shard_index=0, shard_count=1))
    ckpt.restore(tmp_path / "ds", args=grain.checkpoint.CheckpointRestore(fresh))
    assert_same_batches(take(fresh, 2), expected)


@pytest.mark.slow
def test_worker_process_gives_the_same_batches(shards):
    cfg = cfg_for(shards)
    local = take(pipeline.make_dataset(cfg, split="train", seed=4, shard_index=1, shard_count=2,
                                       batch_transform=mask_like), 4)
    it = iter(pipeline.make_dataset({**cfg, "num_workers": 1}, split="train", seed=4, shard_index=1, shard_count=2,
                                    batch_transform=mask_like))
    remote = []
    try:
        remote += [next(it) for _ in range(3)]
        state = it.get_state()
        remote.append(next(it))
        assert_same_batches([{k: np.array(v) for k, v in b.items()} for b in remote], local)
        json.dumps(state)
        it.set_state(state)  # restore inside the worker: the 4th batch again
        assert_same_batches([{k: np.array(v) for k, v in next(it).items()}], local[3:])
    finally:
        it.close()  # then drop the batches (grain shared memory) while the interpreter is fully alive
        del it, remote
        gc.collect()


@pytest.mark.slow
def test_worker_batches_are_not_left_in_shared_memory(shards):
    """Batches from worker processes are plain arrays: a run that ends holding some (as a training loop does)
    leaves no shared memory for the interpreter's exit to report as leaked, and no errors from clean-up at exit."""
    cfg = cfg_for(shards, num_workers=1)
    script = ("import json, sys; from jepa.data import pipeline; cfg = json.loads(sys.argv[1]); "
              "it = iter(pipeline.make_dataset(cfg, split='train', seed=0, shard_index=0, shard_count=1)); "
              "held = [next(it) for _ in range(3)]; assert held[0]['video'].shape[0] == 4")
    out = subprocess.run([sys.executable, "-c", script, json.dumps(cfg)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "leaked shared_memory" not in out.stderr, out.stderr[-3000:]
    assert "Exception ignored" not in out.stderr, out.stderr[-3000:]


def test_label_keys_and_tfds_style_records():
    rec = {"label": [1, 2], "fps": 8.0, "num_frames": 4, "path": b"p", "video": np.array(b"v", dtype=object),
           "verb_class": np.int64(3)}
    out = pipeline.tfds_example_to_record(rec)
    assert out["path"] == "p" and out["video"] == b"v" and out["extra"] == {"verb_class": 3}
    t = pipeline.ClipTransform.from_config({**pipeline.resolve_config({"sources": [{"glob": "x"}],
                                                                       "label_keys": ["verb_class"]})})
    assert t.label(out).tolist() == [3]
    with pytest.raises(video.VideoDecodeError, match="noun_class"):
        pipeline.ClipTransform.from_config(pipeline.resolve_config(
            {"sources": [{"glob": "x"}], "label_keys": ["noun_class"]})).label(out)


def test_config_errors_are_clear(shards):
    with pytest.raises(pipeline.PipelineConfigError, match="unknown key.*'framez'"):
        pipeline.resolve_config({"sources": [{"glob": "x"}], "framez": 3})
    with pytest.raises(pipeline.PipelineConfigError, match="sources"):
        pipeline.resolve_config({})
    with pytest.raises(pipeline.PipelineConfigError, match=r"sources\[0\].*exactly one"):
        pipeline.resolve_config({"sources": [{"glob": "x", "tfds_name": "y"}]})
    with pytest.raises(pipeline.PipelineConfigError, match="scale"):
        pipeline.resolve_config({"sources": [{"glob": "x"}], "scale": (0.5, 2.0)})
    with pytest.raises(pipeline.PipelineConfigError, match="matches no files"):
        pipeline.make_dataset({"sources": [{"glob": str(shards / "nope-*.array_record")}]}, split="train", seed=0,
                              shard_index=0, shard_count=1)
    cfg = pipeline.default_config()
    assert cfg.num_frames == 16 and cfg.scale == (0.3, 1.0) and cfg.ratio == (0.75, 1.35)


def test_decode_error_in_pipeline_names_the_record(tmp_path):
    from array_record.python.array_record_module import ArrayRecordWriter

    w = ArrayRecordWriter(str(tmp_path / "bad-train-00000-of-00001.array_record"), "group_size:1")
    w.write(records.encode({"video": b"garbage", "fps": 8.0, "num_frames": 4, "label": 0, "path": "clips/bad.mp4"}))
    w.close()
    cfg = {"sources": [{"glob": str(tmp_path / "bad-{split}-*.array_record")}], "stride": 1, "batch_size": 1,
           "read_threads": 0}
    with pytest.raises(Exception, match="clips/bad.mp4"):
        take(pipeline.make_dataset(cfg, split="train", seed=0, shard_index=0, shard_count=1), 1)
