"""Spatial augmentation of decoded clips (numpy; uint8 [T, H, W, 3] in, float32 [..., T, h, w, 3] out).

Training (`train_transform`), as the V-JEPA 2 reference: ONE random resized crop per clip (area fraction
U(scale), aspect ratio log-uniform in `ratio`, 10 tries then a centre-crop fallback), resized to crop_size x
crop_size, horizontal flip with probability 0.5, then optionally (off by default; the probe-training recipe)
RandAugment of the uint8 clip (`randaugment=(num_ops, magnitude)`) and, after ImageNet mean/std normalisation,
random erasing (`erase_prob`), both with one decision per clip applied to every frame (jepa.data.augment).
Everything random comes from the numpy Generator passed in, in that order, so a clip's augmentation is a pure
function of (frames, rng state); with the options off the generator is used exactly as without them.

Evaluation (`eval_transform`): one view = resize the short side to crop_size * 256 / 224 and take the
centre crop; several views = resize the short side to crop_size and take `num_views` crops evenly spaced
along the long side (the reference's multi-view protocol). Output [V, T, crop, crop, 3].
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from jepa.data import augment

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def random_resized_crop_params(rng: np.random.Generator, height: int, width: int,
                               scale: tuple[float, float] = (0.3, 1.0),
                               ratio: tuple[float, float] = (0.75, 1.35),
                               attempts: int = 10) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) of an Inception-style random crop of an H x W image."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = rng.uniform(scale[0], scale[1]) * area
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # Fallback: the largest centred crop whose aspect ratio is within `ratio`.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def crop_resize(frames: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Crop box (top, left, h, w) of every frame and resize it to size (h, w), bilinear; uint8 in and out."""
    top, left, h, w = box
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        return np.ascontiguousarray(frames[:, top:top + h, left:left + w])
    pil_box = (left, top, left + w, top + h)
    out = np.empty((frames.shape[0], out_h, out_w, frames.shape[-1]), dtype=np.uint8)
    for t, frame in enumerate(frames):
        out[t] = np.asarray(Image.fromarray(frame).resize((out_w, out_h), Image.BILINEAR, box=pil_box))
    return out


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize every frame so that its short side is `short_side` (bilinear)."""
    h, w = frames.shape[1:3]
    s = short_side / min(h, w)
    size = (max(short_side, int(round(h * s))), max(short_side, int(round(w * s))))
    return crop_resize(frames, (0, 0, h, w), size)


def normalize(frames: np.ndarray, mean: np.ndarray = IMAGENET_MEAN, std: np.ndarray = IMAGENET_STD) -> np.ndarray:
    """uint8 frames -> float32 (x / 255 - mean) / std, channels last."""
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    shift = (mean / std).astype(np.float32)
    out = frames.astype(np.float32, order="C")  # C order: the reshape below must be a view
    # Broadcasting a (3,) vector makes numpy loop 3 elements at a time; tile it along a whole row instead.
    rows = out.reshape(-1, frames.shape[-2] * 3) if frames.ndim >= 2 else out.reshape(1, -1)
    reps = rows.shape[1] // 3
    rows *= np.tile(scale, reps)
    rows -= np.tile(shift, reps)
    return out


def denormalize(video: np.ndarray, mean: np.ndarray = IMAGENET_MEAN, std: np.ndarray = IMAGENET_STD) -> np.ndarray:
    """Inverse of `normalize` back to uint8 (for visualisation)."""
    return np.clip((video * std + mean) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def train_transform(frames: np.ndarray, rng: np.random.Generator, *, crop_size: int,
                    scale: tuple[float, float] = (0.3, 1.0), ratio: tuple[float, float] = (0.75, 1.35),
                    flip: bool = True, randaugment: tuple[int, float] | None = None,
                    erase_prob: float = 0.0) -> np.ndarray:
    """One random resized crop + flip for the whole clip, [RandAugment,] normalised[, erased]: float32
    [T, crop, crop, 3]. randaugment: None (off) or (num_ops, magnitude); erase_prob: 0 (off) or a probability."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got shape {frames.shape}")
    box = random_resized_crop_params(rng, frames.shape[1], frames.shape[2], tuple(scale), tuple(ratio))
    out = crop_resize(frames, box, (crop_size, crop_size))
    if flip and rng.random() < 0.5:
        out = out[:, :, ::-1]
    if randaugment is not None:
        num_ops, magnitude = randaugment
        out = augment.rand_augment(out, rng, int(num_ops), float(magnitude))
    out = normalize(out)
    if erase_prob > 0:
        out = augment.random_erase(out, rng, float(erase_prob))
    return out


def spatial_views(frames: np.ndarray, crop_size: int, num_views: int = 1) -> np.ndarray:
    """Deterministic evaluation views of a clip, uint8 [V, T, crop, crop, 3] (see the module docstring)."""
    if num_views == 1:
        short = int(crop_size * 256 / 224)
        resized = resize_short_side(frames, short)
        h, w = resized.shape[1:3]
        top, left = (h - crop_size) // 2, (w - crop_size) // 2
        return resized[None, :, top:top + crop_size, left:left + crop_size]
    resized = resize_short_side(frames, crop_size)
    h, w = resized.shape[1:3]
    long_len = max(h, w)
    starts = np.round(np.linspace(0, long_len - crop_size, num_views)).astype(int)
    if h > w:
        views = [resized[:, s:s + crop_size, :crop_size] for s in starts]
    else:
        views = [resized[:, :crop_size, s:s + crop_size] for s in starts]
    return np.stack(views)


def eval_transform(frames: np.ndarray, *, crop_size: int, num_views: int = 1) -> np.ndarray:
    """Normalised evaluation views of a clip: float32 [V, T, crop, crop, 3]."""
    return normalize(spatial_views(frames, crop_size, num_views))
