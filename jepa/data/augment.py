"""Clip-level RandAugment and random erasing for probe training (numpy + PIL).

The V-JEPA 2 frozen-encoder evaluation trains its probes with RandAugment (m7 n4) and random erasing (p 0.25)
on top of the random resized crop. A video is augmented as ONE image: every random decision (which ops, their
magnitudes and signs, the erased rectangle) is drawn once per clip from the numpy Generator passed in and applied
identically to every frame, so a clip's augmentation is a pure function of (frames, rng state).

RandAugment (`rand_augment`, uint8 [..., H, W, 3] in and out): `num_ops` ops are drawn uniformly WITH replacement
from `OPS`; each is applied with probability `op_prob` (0.5) at a magnitude drawn from N(magnitude,
`magnitude_std` = 0.5) clipped to [0, MAX_MAGNITUDE = 10] (the reference's 'rand-m7-n4-mstd0.5-inc1' policy,
whose ops all get stronger as the magnitude grows). A magnitude m maps to an op's strength (`op_strength`):

  identity       no change
  auto_contrast  stretch each channel's range to [0, 255] (no magnitude)
  equalize       histogram-equalise each channel (no magnitude)
  rotate         +- 30 * m / 10 degrees about the centre
  solarize       invert the pixels >= 256 - 256 * m / 10 (m = 0: none)
  color          saturation factor 1 +- 0.9 * m / 10
  posterize      keep 4 - int(4 * m / 10) bits per channel (at least 1)
  contrast       contrast factor 1 +- 0.9 * m / 10
  brightness     brightness factor 1 +- 0.9 * m / 10
  sharpness      sharpness factor 1 +- 0.9 * m / 10
  shear_x/_y     shear +- 0.3 * m / 10 about the centre
  translate_x/_y shift +- 0.45 * m / 10 of the width / height

'+-': the sign is drawn per op, 50/50. Geometric ops resample bicubically and fill uncovered pixels with grey
FILL = (128, 128, 128). The per-channel ops (auto_contrast, equalize) and the enhancers act on each frame's own
statistics, as PIL does on a single image.

Random erasing (`random_erase`, float32 [..., H, W, C] normalised video in and out): with probability `prob`,
one rectangle, the same on every frame, of area fraction U(0.02, 1/3) and log-uniform aspect ratio in
(0.3, 1/0.3) (up to 10 tries to fit one in the frame, else nothing is erased) is filled with per-pixel standard
normal noise (the reference's 'pixel' mode).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

OPS = ("identity", "auto_contrast", "equalize", "rotate", "solarize", "color", "posterize", "contrast",
       "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")
SIGNED_OPS = frozenset({"rotate", "color", "contrast", "brightness", "sharpness", "shear_x", "shear_y",
                        "translate_x", "translate_y"})
MAX_MAGNITUDE = 10.0
FILL = (128, 128, 128)
MAX_ROTATE_DEGREES = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE_FRACTION = 0.45
MAX_ENHANCE_DELTA = 0.9
_ENHANCERS = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
              "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}

ERASE_AREA = (0.02, 1.0 / 3.0)
ERASE_RATIO = (0.3, 1.0 / 0.3)


# --------------------------------------------------------------------------------------------- RandAugment


def op_strength(name: str, magnitude: float) -> float:
    """The unsigned strength of op `name` at `magnitude` in [0, 10] (see the module docstring); 0 for the ops
    without a magnitude. Solarize: the threshold; posterize: the bits kept; enhancers: |factor - 1|."""
    level = min(max(float(magnitude), 0.0), MAX_MAGNITUDE) / MAX_MAGNITUDE
    if name == "rotate":
        return MAX_ROTATE_DEGREES * level
    if name in ("shear_x", "shear_y"):
        return MAX_SHEAR * level
    if name in ("translate_x", "translate_y"):
        return MAX_TRANSLATE_FRACTION * level
    if name in _ENHANCERS:
        return MAX_ENHANCE_DELTA * level
    if name == "solarize":
        return float(256 - int(256 * level))
    if name == "posterize":
        return float(max(1, 4 - int(4 * level)))
    if name in ("identity", "auto_contrast", "equalize"):
        return 0.0
    raise ValueError(f"unknown RandAugment op {name!r}; known: {OPS}")


def _affine(img: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, coeffs, resample=Image.BICUBIC, fillcolor=FILL)


def _apply_to_image(img: Image.Image, name: str, strength: float, sign: float) -> Image.Image:
    w, h = img.size
    s = sign * strength
    if name == "identity":
        return img
    if name == "auto_contrast":
        return ImageOps.autocontrast(img)
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "rotate":
        return img.rotate(s, resample=Image.BICUBIC, fillcolor=FILL)
    if name == "solarize":
        return ImageOps.solarize(img, int(strength))
    if name == "posterize":
        return ImageOps.posterize(img, int(strength))
    if name in _ENHANCERS:
        return _ENHANCERS[name](img).enhance(1.0 + s)
    # PIL's affine coefficients map an output pixel (x, y) to the input pixel (a x + b y + c, d x + e y + f).
    if name == "shear_x":  # about the centre row
        return _affine(img, (1.0, s, -s * (h - 1) / 2.0, 0.0, 1.0, 0.0))
    if name == "shear_y":  # about the centre column
        return _affine(img, (1.0, 0.0, 0.0, s, 1.0, -s * (w - 1) / 2.0))
    if name == "translate_x":
        return _affine(img, (1.0, 0.0, s * w, 0.0, 1.0, 0.0))
    if name == "translate_y":
        return _affine(img, (1.0, 0.0, 0.0, 0.0, 1.0, s * h))
    raise ValueError(f"unknown RandAugment op {name!r}; known: {OPS}")


def apply_op(frames: np.ndarray, name: str, magnitude: float, sign: float = 1.0) -> np.ndarray:
    """Op `name` at `magnitude` (sign +1 or -1 where the op has one) on every frame: uint8 [..., H, W, 3]."""
    if name not in OPS:
        raise ValueError(f"unknown RandAugment op {name!r}; known: {OPS}")
    if name == "identity":
        return frames
    strength = op_strength(name, magnitude)
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.empty_like(flat)
    for t, frame in enumerate(flat):
        img = Image.fromarray(np.ascontiguousarray(frame))
        out[t] = np.asarray(_apply_to_image(img, name, strength, sign))
    return out.reshape(frames.shape)


def draw_rand_augment(rng: np.random.Generator, num_ops: int, magnitude: float, *, op_prob: float = 0.5,
                      magnitude_std: float = 0.5) -> list[tuple[str, float, float]]:
    """One clip's RandAugment decisions: the (op, magnitude, sign) applied, in order (a subset of `num_ops`
    draws). Every draw consumes the same random numbers, applied or not."""
    chosen = []
    for _ in range(int(num_ops)):
        name = OPS[int(rng.integers(len(OPS)))]
        applied = rng.random() < op_prob
        m = float(np.clip(magnitude + magnitude_std * rng.standard_normal(), 0.0, MAX_MAGNITUDE))
        sign = -1.0 if rng.random() < 0.5 else 1.0
        if applied:
            chosen.append((name, m, sign if name in SIGNED_OPS else 1.0))
    return chosen


def rand_augment(frames: np.ndarray, rng: np.random.Generator, num_ops: int, magnitude: float, *,
                 op_prob: float = 0.5, magnitude_std: float = 0.5) -> np.ndarray:
    """RandAugment of a whole clip, uint8 [..., H, W, 3] -> same shape: the same ops, magnitudes and signs on
    every frame (see the module docstring)."""
    if frames.dtype != np.uint8 or frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(f"rand_augment expects uint8 frames [..., H, W, 3], got {frames.dtype} {frames.shape}")
    for name, m, sign in draw_rand_augment(rng, num_ops, magnitude, op_prob=op_prob, magnitude_std=magnitude_std):
        frames = apply_op(frames, name, m, sign)
    return frames


# --------------------------------------------------------------------------------------------- random erasing


def erase_box(rng: np.random.Generator, height: int, width: int, area: Sequence[float] = ERASE_AREA,
              ratio: Sequence[float] = ERASE_RATIO, attempts: int = 10) -> tuple[int, int, int, int] | None:
    """(top, left, h, w) of a rectangle whose area fraction lies in `area` and whose aspect ratio h / w is
    log-uniform in `ratio`, or None when none fitted in `attempts` tries."""
    total = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = rng.uniform(area[0], area[1]) * total
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        # The rounded rectangle must still fit and keep its area within bounds.
        if 0 < h <= height and 0 < w <= width and area[0] * total <= h * w <= area[1] * total:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    return None


def random_erase(video: np.ndarray, rng: np.random.Generator, prob: float, *, area: Sequence[float] = ERASE_AREA,
                 ratio: Sequence[float] = ERASE_RATIO, attempts: int = 10) -> np.ndarray:
    """With probability `prob`, one rectangle of every frame of float [..., H, W, C] (the same one) filled with
    per-pixel N(0, 1) noise; returns a new array when erased, `video` itself otherwise. prob 0 draws nothing."""
    if prob <= 0 or rng.random() >= prob:
        return video
    height, width = video.shape[-3:-1]
    box = erase_box(rng, height, width, area, ratio, attempts)
    if box is None:
        return video
    top, left, h, w = box
    out = video.copy()
    noise_shape = (*video.shape[:-3], h, w, video.shape[-1])
    out[..., top:top + h, left:left + w, :] = rng.standard_normal(noise_shape, dtype=np.float32)
    return out
