"""Robot episodes -> records.py video shards: read back through the pretraining pipeline, frames match."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import grain  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jepa.data import records, transforms  # noqa: E402
from jepa.data.pipeline import make_dataset  # noqa: E402
from jepa.data.rlds import RLDSEpisodes  # noqa: E402
from jepa.data.robot_video import split_episodes, write_robot_clips  # noqa: E402
from jepa.data.video import decode_record  # noqa: E402

SIZE, STEPS = 32, 8  # episodes of STEPS + 1 frames


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from planning.collect import collect

    root = tmp_path_factory.mktemp("robot")
    push = collect("push", episodes=5, out=root / "a", steps=STEPS, size=SIZE, seed=0, progress=False)
    reach = collect("reach", episodes=3, out=root / "b", steps=STEPS, size=SIZE, seed=1, progress=False)
    return [str(push), str(reach)]


def _episodes(paths):
    return [[ep for ep in RLDSEpisodes(p, size=SIZE)] for p in paths]


def _read(shards):
    source = grain.sources.ArrayRecordDataSource(list(shards))
    return [records.decode(source[i]) for i in range(len(source))]


def test_split_episodes():
    a = split_episodes([5, 3], 0.25, seed=0)
    assert len(a["validation"]) == 2 and len(a["train"]) == 6
    assert sorted(a["train"] + a["validation"]) == [(0, i) for i in range(5)] + [(1, i) for i in range(3)]
    assert a["train"] == sorted(a["train"]) and a["validation"] == sorted(a["validation"])
    assert a == split_episodes([5, 3], 0.25, seed=0) and a != split_episodes([5, 3], 0.25, seed=1)
    assert len(split_episodes([5], 0.01, seed=0)["validation"]) == 1  # at least one
    assert split_episodes([5], 0.0, seed=0)["validation"] == []
    with pytest.raises(ValueError, match="split_fraction"):
        split_episodes([5], 1.0, seed=0)


def test_jpeg_shards_through_pipeline(datasets, tmp_path):
    out = write_robot_clips(datasets, tmp_path, size=SIZE, num_shards=2, split_fraction=0.25, seed=0, codec="jpeg",
                            progress=False)
    names = {s: [os.path.basename(p) for p in ps] for s, ps in out.items()}
    assert names == {"train": [f"robot-train-0000{k}-of-00002.array_record" for k in range(2)],
                     "validation": [f"robot-validation-0000{k}-of-00002.array_record" for k in range(2)]}
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    # Worker processes (two jobs: train and validation) write the same bytes.
    par = write_robot_clips(datasets, tmp_path / "par", size=SIZE, num_shards=2, split_fraction=0.25, seed=0,
                            codec="jpeg", num_proc=2, progress=False)
    for split, shards in out.items():
        assert [_read([p]) for p in par[split]] == [_read([p]) for p in shards]
    episodes = _episodes(datasets)
    assignment = split_episodes([5, 3], 0.25, seed=0)

    for split in ("train", "validation"):
        expected = [episodes[d][i] for d, i in assignment[split]]
        recs = _read(out[split])
        assert len(recs) == len(expected)
        for rec, ep in zip(recs, expected):
            assert rec["label"] == -1 and rec["fps"] == 4.0 and rec["num_frames"] == STEPS + 1
            assert rec["path"] == ep.source and len(rec["frames"]) == STEPS + 1
            assert rec["extra"]["task"] == ep.language_instruction and rec["extra"]["task"]
            assert rec["extra"]["episode_index"] == ep.index

        # Whole episodes through the pipeline: full-frame crop, no flip, in order.
        cfg = dict(sources=[{"glob": str(tmp_path) + "/robot-{split}-*.array_record"}], num_frames=STEPS + 1,
                   stride=1, crop_size=SIZE, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, batch_size=1,
                   shuffle=False, repeat=False, drop_remainder=False)
        batches = list(make_dataset(cfg, split=split, seed=0, shard_index=0, shard_count=1))
        assert len(batches) == len(expected)
        for b, ep in zip(batches, expected):
            assert b["video"].shape == (1, STEPS + 1, SIZE, SIZE, 3) and int(b["label"][0]) == -1
            got = transforms.denormalize(b["video"][0]).astype(np.int16)
            err = np.abs(got - ep.frames.astype(np.int16))
            assert err.mean() < 2.0 and np.percentile(err, 99) <= 16, (err.mean(), err.max())
            # each decoded frame is closest to its own episode frame
            d = np.abs(got[:, None] - ep.frames[None].astype(np.int16)).mean(axis=(2, 3, 4))
            assert (d.argmin(axis=1) == np.arange(STEPS + 1)).all()


def test_h264_frames_match(datasets, tmp_path):
    out = write_robot_clips(datasets[:1], tmp_path, size=SIZE, num_shards=3, split_fraction=0.0, seed=0,
                            codec="h264", fps=8.0, frame_stride=2, progress=False)
    assert out["validation"] == [] and len(out["train"]) == 3
    recs = _read(out["train"])
    episodes = [ep for ep in RLDSEpisodes(datasets[0], size=SIZE, frame_stride=2)]
    assert len(recs) == len(episodes) == 5
    for rec, ep in zip(recs, episodes):
        assert "video" in rec and rec["fps"] == 4.0 and rec["num_frames"] == len(ep.frames) == STEPS // 2 + 1
        frames = decode_record(rec, np.arange(rec["num_frames"])).astype(np.int16)
        err = np.abs(frames - ep.frames.astype(np.int16))
        assert err.mean() < 5.0, err.mean()  # lossy: ~2.5-3.5 on these tiny sharp-edged frames
        d = np.abs(frames[:, None] - ep.frames[None].astype(np.int16)).mean(axis=(2, 3, 4))
        assert (d.argmin(axis=1) == np.arange(len(frames))).all(), d  # each frame is closest to its own

    with pytest.raises(FileExistsError, match="overwrite"):
        write_robot_clips(datasets[:1], tmp_path, size=SIZE, num_shards=1, codec="h264", progress=False)
    again = write_robot_clips(datasets[:1], tmp_path, size=SIZE, num_shards=1, split_fraction=0.0, codec="h264",
                              fps=8.0, frame_stride=2, overwrite=True, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["robot-train-00000-of-00001.array_record"]
    assert [r["video"] for r in _read(again["train"])] == [r["video"] for r in recs]  # deterministic


def test_bad_arguments(datasets, tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_robot_clips(datasets, tmp_path, size=33, codec="h264", progress=False)
    with pytest.raises(ValueError, match="codec"):
        write_robot_clips(datasets, tmp_path, size=SIZE, codec="png", progress=False)
    with pytest.raises(Exception, match="no camera 'wrist'"):
        write_robot_clips(datasets, tmp_path, size=SIZE, camera="wrist", progress=False)
