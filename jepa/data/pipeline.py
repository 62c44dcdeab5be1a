"""The grain input pipeline: records -> decoded, sampled, augmented, batched clips.

    ds = make_dataset(cfg, split="train", seed=0, batch_transform=mask_fn)
    it = iter(ds)
    batch = next(it)        # {'video': float32 [B, T, H, W, 3], 'label': int32 [B] or [B, K], ...}
    state = it.get_state()  # save with the model (save_iterator_state / orbax + grain.checkpoint)

Structure (grain): for every source, MapDataset.source -> shard per JAX process (records
shard_index::shard_count) -> seeded shuffle (reshuffled every epoch) -> repeat; weighted mixture of the
sources (MapDataset.mix: deterministic interleaving in proportion to the weights; without `repeat` the
sources are concatenated instead) -> decode + sample + augment (`random_map`, per-example generator seeded
from the example's position) -> batch (drop_remainder) -> optional `batch_transform(batch, rng)` (generator
seeded from the batch's position, so e.g. masks are reproducible and checkpointable) -> to_iter_dataset
(threads) -> mp_prefetch (worker processes) -> skip accounting. Everything is a function of (config, seed, shard, position), so
the output does not depend on the number of workers or threads, and an iterator restored from
`get_state()` yields the same next batches bit for bit.

Unusable records (bytes that are not a record, missing fields, a video that does not decode: `RecordError`) do not
stop the pipeline: element i is replaced by the first usable one of i + k * 7919 (k = 1, 2, ...; in a dataset read
once, i + k, marked valid=False so that evaluation counts nothing twice). The iterator counts them in `iterator.skips`
(a jepa.data.faults.SkipLog, saved with the iterator's state) and raises `TooManyUnusableRecords` when their share
is above `max_skipped_fraction` (with 95% confidence); 64 unusable records in a row stop it at once.

Config keys (`default_config()`; a dict with a subset of them is merged onto the defaults):
  sources            list of dicts, one per dataset:
                       {'glob': 'dir/name-{split}-*.array_record'}  records.py ArrayRecord shards ('{split}' is
                                                                    replaced by the split);
                       {'tfds_name': 'synthetic', 'data_dir': '...'} a tfds array_record dataset
                                                                    (tfds.data_source; optional 'split');
                       {'data_source': obj}  any random-access source already opened for the split (e.g. a
                                             tfds builder's as_data_source(split)) whose elements are
                                             records.py bytes or tfds example dicts.
                     optional 'weight' (default 1.0): mixture proportion.
  num_frames         frames per clip (16).
  fps                target sampling rate: stride = ceil(video fps) // fps (4.0). None: use `stride`.
  stride             fixed frame step; overrides fps (None).
  mode               'clip' (whole video) | 'action' ([extra.start_sec, extra.stop_sec]) |
                     'anticipation' (clip ending tau_a s before extra.start_sec).
  tau_a              anticipation time in seconds (1.0).
  crop_size          output side in pixels (224).
  scale, ratio       random resized crop area fraction (0.3, 1.0) and log-uniform aspect ratio (0.75, 1.35).
  flip               random horizontal flip with p 0.5 (True).
  randaugment        None (off) or (num_ops, magnitude), e.g. (4, 7) as the reference's probe training: RandAugment
                     of the cropped uint8 clip, the same ops, magnitudes and signs on every frame; num_ops ops drawn
                     with replacement, each applied with p 0.5 at magnitude ~ N(magnitude, 0.5) clipped to [0, 10]
                     (jepa.data.augment). Training only (None).
  erase_prob         random erasing after normalisation with this probability (the reference's 0.25): one
                     rectangle per clip, the same on every frame, area fraction U(0.02, 1/3), aspect ratio
                     log-uniform in (0.3, 1/0.3), filled with per-pixel N(0, 1) noise. Training only (0.0: off).
  decode_short_side  downscale frames at decode time to this short side (None: decode at full size).
  decode_threads     FFmpeg threads per video decode (1: workers and read threads give the parallelism; 0: auto).
  eval               evaluation sampling: deterministic segments x spatial views, no random crop (False).
  num_segments       temporal segments per video (1). eval: evenly spaced over the window; training: the window split
                     into S equal parts, one clip at a random start in each, all S with the same spatial
                     augmentation (crop, flip, RandAugment, erasing). Mode 'anticipation' takes 1.
  num_views          spatial views per segment in eval (1).
  label_keys         names in record['extra'] to use as the label [K] instead of record['label'] (()).
  batch_size         examples per batch per process (8).
  drop_remainder     drop the last partial batch (True). False: it is padded with repeats whose 'valid' is
                     False, to the same number of batches on every process.
  shuffle            seeded shuffle of each source (True).
  repeat             repeat the sources forever (True).
  num_workers        grain worker processes (0: decode in this process).
  worker_buffer_size batches buffered per worker (2).
  read_threads       threads per process decoding batches (1; 0 = none).
  prefetch_buffer_size batches prefetched per process (2).
  max_skipped_fraction stop when more than this share of the records read cannot be used (0.1).

Batches: 'video' float32 [B, T, H, W, 3] (ImageNet-normalised), [B, S, T, H, W, 3] in training with
num_segments S > 1, or [B, V, S, T, H, W, 3] with eval (V views, S segments); 'label' int32 [B] (or [B, K]);
'index' int64 [B] (record index within its source); 'source' int32 [B] (position in `sources`); 'valid' bool [B].
`batch_transform` may add keys.
"""
from __future__ import annotations

import atexit
import dataclasses
import glob as globlib
import json
import math
import os
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import grain
import ml_collections
import numpy as np

from jepa.data import records, transforms, video
from jepa.data.faults import SkipLog

BatchTransform = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]
RECORD_FIELDS = ("video", "frames", "label", "fps", "num_frames", "path", "id", "extra")


def default_config() -> ml_collections.ConfigDict:
    """The pipeline's config with every key and its default (see the module docstring)."""
    return ml_collections.ConfigDict(_DEFAULTS)


_DEFAULTS: dict[str, Any] = dict(
    sources=[],
    num_frames=16,
    fps=4.0,
    stride=None,
    mode="clip",
    tau_a=1.0,
    crop_size=224,
    scale=(0.3, 1.0),
    ratio=(0.75, 1.35),
    flip=True,
    randaugment=None,
    erase_prob=0.0,
    decode_short_side=None,
    decode_threads=1,
    eval=False,
    num_segments=1,
    num_views=1,
    label_keys=(),
    batch_size=8,
    drop_remainder=True,
    shuffle=True,
    repeat=True,
    num_workers=0,
    worker_buffer_size=2,
    read_threads=1,
    prefetch_buffer_size=2,
    max_skipped_fraction=0.1,
)


class PipelineConfigError(ValueError):
    """A bad pipeline config; the message names the key."""


def resolve_config(cfg: ml_collections.ConfigDict | Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge `cfg` onto the defaults and validate it; returns a plain dict. One clear error per problem."""
    raw = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg or {})
    unknown = sorted(set(raw) - set(_DEFAULTS))
    if unknown:
        raise PipelineConfigError(f"pipeline config: unknown key(s) {unknown}; known keys: {sorted(_DEFAULTS)}")
    c = {**_DEFAULTS, **raw}

    def fail(key: str, why: str):
        raise PipelineConfigError(f"pipeline config: {key}={c.get(key)!r}: {why}")

    for key in ("num_frames", "crop_size", "batch_size", "num_segments", "num_views"):
        if not isinstance(c[key], (int, np.integer)) or isinstance(c[key], bool) or c[key] < 1:
            fail(key, "must be an integer >= 1")
    for key in ("num_workers", "worker_buffer_size", "read_threads", "prefetch_buffer_size", "decode_threads"):
        if not isinstance(c[key], (int, np.integer)) or c[key] < 0:
            fail(key, "must be an integer >= 0")
    if not isinstance(c["max_skipped_fraction"], (int, float)) or not 0 <= c["max_skipped_fraction"] <= 1:
        fail("max_skipped_fraction", "must be a number in [0, 1]")
    if c["stride"] is None and (c["fps"] is None or not c["fps"] > 0):
        fail("fps", "need a positive fps or an integer stride")
    if c["stride"] is not None and (not isinstance(c["stride"], (int, np.integer)) or c["stride"] < 1):
        fail("stride", "must be an integer >= 1 or None")
    if c["mode"] not in video.MODES:
        fail("mode", f"must be one of {video.MODES}")
    if c["mode"] == "anticipation" and c["num_segments"] != 1:
        fail("num_segments", "mode 'anticipation' takes one segment")
    for key, lo, hi in (("scale", 0.0, 1.0), ("ratio", 0.0, float("inf"))):
        v = c[key]
        if not (isinstance(v, (tuple, list)) and len(v) == 2 and lo < float(v[0]) <= float(v[1]) <= hi):
            fail(key, f"must be a pair (lo, hi) with {lo} < lo <= hi <= {hi}")
    ra = c["randaugment"]
    if ra is not None:
        if not (isinstance(ra, (tuple, list)) and len(ra) == 2
                and isinstance(ra[0], (int, np.integer)) and not isinstance(ra[0], bool) and ra[0] >= 1
                and isinstance(ra[1], (int, float, np.integer, np.floating)) and not isinstance(ra[1], bool)
                and 0 <= float(ra[1]) <= 10):
            fail("randaugment", "must be None (off) or a pair (num_ops, magnitude) with an integer num_ops >= 1 "
                                "and a magnitude in [0, 10], e.g. (4, 7)")
        c["randaugment"] = (int(ra[0]), float(ra[1]))
    ep = c["erase_prob"]
    if (not isinstance(ep, (int, float, np.integer, np.floating)) or isinstance(ep, bool)
            or not 0 <= float(ep) <= 1):
        fail("erase_prob", "must be a probability in [0, 1] (0: no random erasing)")
    c["erase_prob"] = float(ep)
    if c["decode_short_side"] is not None and (int(c["decode_short_side"]) < 1):
        fail("decode_short_side", "must be a positive integer or None")
    if not isinstance(c["label_keys"], (tuple, list)) or not all(isinstance(k, str) for k in c["label_keys"]):
        fail("label_keys", "must be a list of names in record['extra']")
    sources = c["sources"]
    if not isinstance(sources, (list, tuple)) or not sources:
        fail("sources", "must be a non-empty list of {'glob': ...} or {'tfds_name': ...} dicts")
    clean = []
    for i, s in enumerate(sources):
        s = dict(s)
        key = f"sources[{i}]"
        extra = sorted(set(s) - {"glob", "tfds_name", "data_source", "data_dir", "split", "weight"})
        if extra:
            raise PipelineConfigError(f"pipeline config: {key} has unknown key(s) {extra}; known: glob, tfds_name, "
                                      "data_source, data_dir, split, weight")
        if sum(k in s for k in ("glob", "tfds_name", "data_source")) != 1:
            raise PipelineConfigError(f"pipeline config: {key}={s!r} needs exactly one of 'glob', 'tfds_name' or "
                                      "'data_source'")
        if "data_source" in s and not (hasattr(s["data_source"], "__len__")
                                       and hasattr(s["data_source"], "__getitem__")):
            raise PipelineConfigError(f"pipeline config: {key}.data_source must support len() and [index], got "
                                      f"{type(s['data_source']).__name__}")
        w = s.get("weight", 1.0)
        if not isinstance(w, (int, float)) or not w > 0:
            raise PipelineConfigError(f"pipeline config: {key}.weight={w!r} must be a positive number")
        clean.append({**s, "weight": float(w)})
    c["sources"] = clean
    c["scale"], c["ratio"] = tuple(map(float, c["scale"])), tuple(map(float, c["ratio"]))
    c["label_keys"] = tuple(c["label_keys"])
    return c


# --------------------------------------------------------------------------------------------- sources


def tfds_example_to_record(example: Mapping[str, Any]) -> dict[str, Any]:
    """A tfds example (numpy leaves, bytes for strings) -> the records.py dict; other fields go to 'extra'."""
    rec: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in example.items():
        if isinstance(value, np.ndarray):
            value = value.item() if value.ndim == 0 else (list(value) if value.dtype == object else value.tolist())
        elif isinstance(value, np.generic):
            value = value.item()
        if key in ("path", "id") and isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if key in RECORD_FIELDS and key != "extra":
            rec[key] = value
        elif key == "extra" and isinstance(value, Mapping):
            extra.update(value)
        else:
            extra[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    rec["extra"] = extra
    return rec


def source_paths(pattern: str, split: str) -> list[str]:
    """Sorted files matching a glob with '{split}' substituted."""
    return sorted(globlib.glob(os.path.expanduser(pattern.replace("{split}", split))))


def open_source(source: Mapping[str, Any], split: str, position: int = 0) -> grain.MapDataset:
    """MapDataset of record dicts of one configured source."""
    if "glob" in source:
        paths = source_paths(source["glob"], source.get("split", split))
        if not paths:
            raise PipelineConfigError(f"pipeline config: sources[{position}].glob={source['glob']!r} matches no "
                                      f"files for split {source.get('split', split)!r}")
        return grain.MapDataset.source(grain.sources.ArrayRecordDataSource(paths)).map(_decode_msgpack)
    if "data_source" in source:
        return grain.MapDataset.source(source["data_source"]).map(to_record)
    import tensorflow_datasets as tfds

    try:
        data = tfds.data_source(source["tfds_name"], split=source.get("split", split),
                                data_dir=source.get("data_dir"), try_gcs=False)
    except Exception as e:
        raise PipelineConfigError(f"pipeline config: sources[{position}] tfds dataset {source['tfds_name']!r} "
                                  f"(data_dir={source.get('data_dir')!r}, split={source.get('split', split)!r}) "
                                  f"cannot be opened: {type(e).__name__}: {e}") from e
    return grain.MapDataset.source(data).map(tfds_example_to_record)


def _decode_msgpack(data: bytes) -> dict[str, Any]:
    return records.decode(data)


def to_record(element: bytes | Mapping[str, Any]) -> dict[str, Any]:
    """records.py bytes or a tfds-style example dict -> the record dict."""
    if isinstance(element, (bytes, bytearray, memoryview)):
        return records.decode(bytes(element))
    if isinstance(element, Mapping):
        return tfds_example_to_record(element)
    raise TypeError(f"a data_source element must be records.py bytes or an example dict, got {type(element).__name__}")


@dataclasses.dataclass(frozen=True)
class _Tag:
    """Wrap a record with its index in the source and the source's position in the mixture."""

    source: int
    length: int  # indices past the end come from later epochs (grain's repeat): wrap them

    def __call__(self, index: int, record: dict[str, Any]) -> dict[str, Any]:
        return {"record": record, "index": index % self.length, "source": self.source, "valid": True}


class _PadToLength(grain.MapDataset):
    """The parent's elements, then repeats of them marked valid=False up to `length`."""

    def __init__(self, parent: grain.MapDataset, length: int):
        super().__init__(parent)
        self._length = length
        self._n = len(parent)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        index %= self._length
        element = self._parent[index % self._n]
        return element if index < self._n else {**element, "valid": False}

    def __str__(self) -> str:
        return f"_PadToLength(length={self._length})"


MAX_UNUSABLE_IN_A_ROW = 64
SUBSTITUTE_STRIDE = 7919  # a prime: a substitute comes from far away, not from the same batch


class _SkipUnusable(grain.MapDataset):
    """Element i of the parent, or, when its record is unusable (`RecordError`), a stand-in: the first usable one of
    i + k * stride (k = 1, 2, ...). Every element says whether its own record was unusable ('skipped', 0 or 1) and
    why ('skip_note' bytes); the records tried while looking for a stand-in are counted at their own positions.
    With `substitutes_valid=False` (datasets read once) a stand-in is marked valid=False."""

    def __init__(self, parent: grain.MapDataset, *, stride: int, substitutes_valid: bool):
        super().__init__(parent)
        self._stride, self._substitutes_valid = stride, substitutes_valid

    def __len__(self) -> int:
        return len(self._parent)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        n = len(self._parent)
        note = ""
        for k in range(MAX_UNUSABLE_IN_A_ROW):
            try:
                element = self._parent[(index + k * self._stride) % n]
            except records.RecordError as e:
                note = note or " ".join(str(e).split())
                continue
            if k and not self._substitutes_valid:
                element = {**element, "valid": np.bool_(False)}
            return {**element, "skipped": np.int32(k > 0), "skip_note": np.bytes_(note.encode()[:2048])}
        raise records.RecordError(f"{MAX_UNUSABLE_IN_A_ROW} records in a row could not be used (is the dataset or "
                                  f"the config wrong?); the first: {note}")

    def __str__(self) -> str:
        return f"_SkipUnusable(stride={self._stride})"


# --------------------------------------------------------------------------------------------- examples


@dataclasses.dataclass(frozen=True)
class ClipTransform:
    """Decode + sample + augment one tagged record (a grain random map)."""

    num_frames: int
    target_fps: float | None
    stride: int | None
    mode: str
    tau_a: float
    crop_size: int
    scale: tuple[float, float]
    ratio: tuple[float, float]
    flip: bool
    decode_short_side: int | None
    decode_threads: int
    eval: bool
    num_segments: int
    num_views: int
    label_keys: tuple[str, ...]
    randaugment: tuple[int, float] | None = None  # training only
    erase_prob: float = 0.0  # training only

    @classmethod
    def from_config(cls, c: Mapping[str, Any]) -> ClipTransform:
        return cls(num_frames=c["num_frames"], target_fps=c["fps"], stride=c["stride"], mode=c["mode"],
                   tau_a=float(c["tau_a"]), crop_size=c["crop_size"], scale=c["scale"], ratio=c["ratio"],
                   flip=bool(c["flip"]), decode_short_side=c["decode_short_side"],
                   decode_threads=int(c["decode_threads"]), eval=bool(c["eval"]),
                   num_segments=c["num_segments"], num_views=c["num_views"],
                   label_keys=c["label_keys"], randaugment=c["randaugment"], erase_prob=float(c["erase_prob"]))

    def __call__(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        record = element["record"]
        idx = video.sample_frame_indices(
            record, num_frames=self.num_frames, target_fps=self.target_fps, stride=self.stride, mode=self.mode,
            num_segments=self.num_segments, tau_a=self.tau_a, rng=None if self.eval else rng)
        frames = video.decode_record(record, idx, short_side=self.decode_short_side,
                                     threads=self.decode_threads)  # [S, T, H, W, 3]
        if self.eval:
            clip = np.stack([transforms.spatial_views(seg, self.crop_size, self.num_views) for seg in frames],
                            axis=1)  # [V, S, T, h, w, 3]
            clip = transforms.normalize(clip)
        else:
            # One crop / flip / RandAugment / erasing decision for the whole clip: the S segments' frames go
            # through train_transform together as one [S * T] clip. S = 1: [T, h, w, 3], as ever.
            s, t = frames.shape[:2]
            clip = transforms.train_transform(frames.reshape((s * t,) + frames.shape[2:]), rng,
                                              crop_size=self.crop_size, scale=self.scale, ratio=self.ratio,
                                              flip=self.flip, randaugment=self.randaugment,
                                              erase_prob=self.erase_prob)
            if s > 1:
                clip = clip.reshape((s, t) + clip.shape[1:])  # [S, T, h, w, 3]
        return {"video": clip, "label": self.label(record), "index": np.int64(element["index"]),
                "source": np.int32(element["source"]), "valid": np.bool_(element["valid"])}

    def label(self, record: Mapping[str, Any]) -> np.ndarray:
        if self.label_keys:
            extra = record.get("extra") or {}
            missing = [k for k in self.label_keys if k not in extra]
            if missing:
                raise video.VideoDecodeError(f"record {video.record_name(record)}: label_keys need "
                                             f"extra{missing}, present: {sorted(extra)}")
            return np.asarray([extra[k] for k in self.label_keys], dtype=np.int32)
        if "label" not in record:
            raise video.VideoDecodeError(f"record {video.record_name(record)}: no field 'label'")
        return np.asarray(record["label"], dtype=np.int32)


@dataclasses.dataclass(frozen=True)
class _ApplyBatchTransform:
    fn: BatchTransform

    def __call__(self, batch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        out = self.fn(batch, rng)
        if not isinstance(out, Mapping):
            raise TypeError(f"batch_transform must return a dict of arrays, got {type(out).__name__}")
        return dict(out)


# --------------------------------------------------------------------------------------------- datasets


def derive_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed derived from `seed` and integer keys (grain wants seeds in [0, 2**32))."""
    return int(np.random.SeedSequence([int(seed) % 2**63, *keys]).generate_state(1)[0])


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if shard_index is None or shard_count is None:
        import jax  # only when the caller did not say which shard this process reads

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index must be in [0, shard_count={shard_count}), got {shard_index}")
    return int(shard_index), int(shard_count)


def make_map_dataset(cfg: ml_collections.ConfigDict | Mapping[str, Any], *, split: str, seed: int,
                     shard_index: int | None = None, shard_count: int | None = None,
                     batch_transform: BatchTransform | None = None) -> grain.MapDataset:
    """The pipeline up to batching (and batch_transform) as a random-access grain MapDataset of batches."""
    c = resolve_config(cfg)
    shard_index, shard_count = _shard(shard_index, shard_count)
    parts, weights, shard_lens = [], [], []
    for s, src in enumerate(c["sources"]):
        ds = open_source(src, split, s)
        n = len(ds)
        if n < shard_count:
            raise PipelineConfigError(f"pipeline config: sources[{s}] has {n} records for split {split!r}, fewer "
                                      f"than the {shard_count} processes reading it")
        ds = ds.map_with_index(_Tag(s, n))[shard_index::shard_count]
        shard_lens.append(math.ceil(n / shard_count))
        if c["shuffle"]:
            ds = ds.shuffle(seed=derive_seed(seed, 1, s))
        if c["repeat"]:
            ds = ds.repeat()
        parts.append(ds)
        weights.append(src["weight"])
    if len(parts) == 1:
        ds = parts[0]
    elif c["repeat"]:
        ds = grain.MapDataset.mix(parts, weights)
    else:
        ds = grain.MapDataset.concatenate(parts)
    if not c["repeat"] and not c["drop_remainder"]:
        # The same number of (padded) batches on every process.
        ds = _PadToLength(ds, math.ceil(sum(shard_lens) / c["batch_size"]) * c["batch_size"])
    ds = ds.random_map(ClipTransform.from_config(c), seed=derive_seed(seed, 2, shard_index))
    ds = _SkipUnusable(ds, stride=SUBSTITUTE_STRIDE if c["repeat"] else 1, substitutes_valid=c["repeat"])
    ds = ds.batch(c["batch_size"], drop_remainder=c["drop_remainder"])
    if batch_transform is not None:
        ds = ds.random_map(_ApplyBatchTransform(batch_transform), seed=derive_seed(seed, 3, shard_index))
    return ds


def mark_absl_flags_parsed(*_: Any) -> None:
    """grain workers read absl flags; mark them parsed when no absl app did (doubles as worker_init_fn)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_dataset(cfg: ml_collections.ConfigDict | Mapping[str, Any], *, split: str, seed: int,
                 shard_index: int | None = None, shard_count: int | None = None,
                 batch_transform: BatchTransform | None = None) -> grain.IterDataset:
    """The input pipeline as a grain IterDataset of batches (see the module docstring).

    Args:
      cfg: pipeline config (ConfigDict or dict; missing keys take `default_config()` values).
      split: dataset split ('train', 'validation', ...).
      seed: pipeline seed (shuffle, sampling, augmentation, batch_transform).
      shard_index, shard_count: which records this process reads (records shard_index::shard_count of
        every source); default jax.process_index() / jax.process_count().
      batch_transform: `fn(batch, rng) -> batch` applied after batching (e.g. mask generation); rng is
        seeded from the batch's position. It runs in the worker processes, so it must be picklable.
    """
    c = resolve_config(cfg)
    ds = make_map_dataset(c, split=split, seed=seed, shard_index=shard_index, shard_count=shard_count,
                          batch_transform=batch_transform)
    ids = ds.to_iter_dataset(grain.ReadOptions(num_threads=c["read_threads"],
                                               prefetch_buffer_size=c["prefetch_buffer_size"]))
    if c["num_workers"] > 0:
        mark_absl_flags_parsed()
        ids = ids.mp_prefetch(grain.MultiprocessingOptions(num_workers=c["num_workers"],
                                                           per_worker_buffer_size=c["worker_buffer_size"]),
                              worker_init_fn=mark_absl_flags_parsed)
        # Batches arrive in shared memory, unlinked only when garbage collected: copy them out at once, so none is
        # left for the interpreter's exit to report as leaked (a batch is a few MB; a step takes far longer).
        ids = _ClosedAtExit(ids.map(_copy_out_of_shared_memory))
    return _CountSkipped(ids, c["max_skipped_fraction"])


def _copy_out_of_shared_memory(x):
    return {k: _copy_out_of_shared_memory(v) for k, v in x.items()} if isinstance(x, dict) else np.array(x)


class _ClosedAtExit(grain.IterDataset):
    """Its iterators stop their worker processes and free the batches left in shared memory when the interpreter
    exits, while it still can: a grain iterator left to garbage collection at exit prints errors and
    leaked-shared-memory warnings instead."""

    def __iter__(self) -> grain.DatasetIterator:
        return _ExitSafeIterator(self._parent.__iter__())


class _ExitSafeIterator(grain.DatasetIterator):
    """Owns a grain iterator (not a grain parent of it, so that closing can also let go of it) and closes it at
    exit unless closed before. Its state is the owned iterator's state."""

    def __init__(self, source: grain.DatasetIterator):
        super().__init__()
        self._source = source
        ref = weakref.ref(self)
        self._at_exit = lambda: ref() is not None and ref().close()
        atexit.register(self._at_exit)

    def __next__(self):
        return next(self._source)

    def get_state(self) -> dict:
        return self._source.get_state()

    def set_state(self, state: dict) -> None:
        self._source.set_state(state)

    def close(self) -> None:
        if self._source is None:  # closed already (its __del__ calls this again, maybe at interpreter teardown)
            return
        super().close()
        atexit.unregister(self._at_exit)  # iterators closed before exit leave nothing registered behind
        source, self._source = self._source, None
        source.close()  # and dropped here, so grain's own clean-up runs now, not at interpreter teardown


class _CountSkipped(grain.IterDataset):
    """Takes the skip fields off each batch and keeps the run's account of them (`iterator.skips`)."""

    def __init__(self, parent: grain.IterDataset, max_fraction: float):
        super().__init__(parent)
        self._max_fraction = max_fraction

    def __iter__(self) -> grain.DatasetIterator:
        return _SkipCountingIterator(self._parent.__iter__(), self._max_fraction)


class _SkipCountingIterator(grain.DatasetIterator):
    def __init__(self, source: grain.DatasetIterator, max_fraction: float):
        super().__init__(source)
        self._source = source
        self.skips = SkipLog(max_fraction)

    def __next__(self):
        batch = dict(next(self._source))
        skipped = np.asarray(batch.pop("skipped")).astype(bool)
        notes = [bytes(raw).decode("utf-8", "replace") for raw in np.asarray(batch.pop("skip_note"))[skipped]]
        valid = np.asarray(batch["valid"], bool) if "valid" in batch else np.ones_like(skipped)
        # Read: the positions whose own record was usable (not padding) and those whose record was not.
        self.skips.add(int(np.sum(valid & ~skipped)), int(np.sum(skipped)), notes)
        return batch

    def get_state(self) -> dict:
        return {"pipeline": self._source.get_state(), "skips": self.skips.state()}

    def set_state(self, state: dict) -> None:
        self._source.set_state(state["pipeline"])
        self.skips.set_state(state["skips"])


# --------------------------------------------------------------------------------------------- state


def save_iterator_state(iterator: grain.DatasetIterator, path: str | os.PathLike) -> None:
    """Write a grain iterator's state as JSON (atomically: temp file then rename)."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(iterator.get_state(), f)
    os.replace(tmp, path)


def restore_iterator_state(iterator: grain.DatasetIterator, path: str | os.PathLike) -> None:
    """Restore a grain iterator from `save_iterator_state` JSON; its next batches continue from there."""
    with open(os.fspath(path)) as f:
        iterator.set_state(json.load(f))
