"""Probe-training augmentation: clip-level RandAugment and random erasing (jepa.data.augment), their pipeline
config keys `randaugment` / `erase_prob`, and that the defaults leave the train path exactly as it was."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from jepa.data import augment, pipeline, records, transforms

# sha256[:16] of outputs of the code before these options existed (same inputs as below): the defaults must
# reproduce them bit for bit.
OLD_TRAIN_TRANSFORM_SHA = "27b1e4ff119b06f5"
OLD_PIPELINE_BATCH_SHA = "ca1c7ccc6a31d2af"


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def noisy_gradient_clip(seed: int = 0, t: int = 4, h: int = 40, w: int = 56) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) * 255 // (w + h - 2)], -1)
    noise = rng.integers(0, 64, (t, h, w, 3))
    return np.clip(base[None] * 3 // 4 + noise, 0, 255).astype(np.uint8)


def scene(size: int = 64) -> np.ndarray:
    """A coloured, mid-range, textured image [size, size, 3]: every op of OPS but identity changes it."""
    im = Image.new("RGB", (size, size), (40, 70, 100))
    d = ImageDraw.Draw(im)
    d.rectangle([size // 5, size // 5, size // 2, size // 2], fill=(200, 60, 50))
    d.ellipse([size // 2, size // 2, size - 8, size - 8], fill=(60, 180, 80))
    d.line([0, 0, size - 1, size - 1], fill=(210, 200, 40), width=2)
    return np.asarray(im).copy()


def png_records(n: int = 8) -> list[bytes]:
    out = []
    for i in range(n):
        frames = []
        for f in noisy_gradient_clip(100 + i, t=6, h=36, w=44):
            buf = io.BytesIO()
            Image.fromarray(f).save(buf, format="PNG")  # lossless: decoded frames are exact
            frames.append(buf.getvalue())
        out.append(records.encode({"frames": frames, "fps": 8.0, "num_frames": 6, "label": i, "path": f"png-{i}"}))
    return out


@pytest.fixture(scope="module")
def source():
    return {"data_source": png_records()}


def first_batch(source, **kw):
    cfg = {**dict(sources=[source], num_frames=4, stride=1, crop_size=24, batch_size=4, read_threads=0), **kw}
    return next(iter(pipeline.make_dataset(cfg, split="train", seed=3, shard_index=0, shard_count=1)))


# ------------------------------------------------------------------------------------------- defaults


def test_defaults_leave_train_transform_bit_for_bit_unchanged():
    clip = noisy_gradient_clip()
    rng_default, rng_off = np.random.default_rng(7), np.random.default_rng(7)
    default = transforms.train_transform(clip, rng_default, crop_size=32)
    off = transforms.train_transform(clip, rng_off, crop_size=32, randaugment=None, erase_prob=0.0)
    np.testing.assert_array_equal(default, off)
    assert sha(default) == OLD_TRAIN_TRANSFORM_SHA
    # The generator is used exactly as before: the crop's draws and the flip's, nothing more.
    assert rng_default.bit_generator.state == rng_off.bit_generator.state
    ref = np.random.default_rng(7)
    transforms.random_resized_crop_params(ref, 40, 56, (0.3, 1.0), (0.75, 1.35))
    ref.random()
    assert ref.bit_generator.state == rng_off.bit_generator.state


def test_defaults_leave_pipeline_batches_bit_for_bit_unchanged(source):
    default = first_batch(source)
    off = first_batch(source, randaugment=None, erase_prob=0.0)
    for key in default:
        np.testing.assert_array_equal(default[key], off[key])
    assert sha(default["video"]) == OLD_PIPELINE_BATCH_SHA
    cfg = pipeline.resolve_config({"sources": [source]})
    assert cfg["randaugment"] is None and cfg["erase_prob"] == 0.0


# ------------------------------------------------------------------------------------------- RandAugment


def test_same_rng_same_output_and_the_generator_drives_it():
    clip = noisy_gradient_clip(1, t=3)
    kw = dict(crop_size=32, randaugment=(4, 7), erase_prob=0.5)
    a = transforms.train_transform(clip, np.random.default_rng(11), **kw)
    b = transforms.train_transform(clip, np.random.default_rng(11), **kw)
    np.testing.assert_array_equal(a, b)
    outs = [transforms.train_transform(clip, np.random.default_rng(s), **kw) for s in range(6)]
    assert len({sha(o) for o in outs}) == 6
    x = scene()[None].repeat(2, 0)
    np.testing.assert_array_equal(augment.rand_augment(x, np.random.default_rng(3), 4, 7),
                                  augment.rand_augment(x, np.random.default_rng(3), 4, 7))


def test_every_frame_of_a_clip_gets_the_same_ops():
    img = scene(48)
    changed = 0
    for s in range(30):
        # Identical frames stay identical frames.
        out = augment.rand_augment(img[None].repeat(5, 0), np.random.default_rng(s), 4, 7)
        assert out.shape == (5, 48, 48, 3) and out.dtype == np.uint8
        for t in range(1, 5):
            np.testing.assert_array_equal(out[t], out[0])
        changed += not np.array_equal(out[0], img)
    assert changed >= 25  # P(no op applied) = 1/16 per clip (+ identity draws)
    # Different frames: each frame is augmented exactly as it would be alone with the same draws.
    clip = noisy_gradient_clip(2, t=4, h=32, w=32)
    for s in range(8):
        whole = augment.rand_augment(clip, np.random.default_rng(s), 4, 9)
        for t in range(4):
            alone = augment.rand_augment(clip[t:t + 1], np.random.default_rng(s), 4, 9)
            np.testing.assert_array_equal(whole[t], alone[0])
    # Through train_transform too (one crop, one flip, one RandAugment for the clip).
    out = transforms.train_transform(img[None].repeat(3, 0), np.random.default_rng(4), crop_size=32,
                                     randaugment=(4, 9))
    np.testing.assert_array_equal(out[1], out[0])
    np.testing.assert_array_equal(out[2], out[0])


def test_each_op_changes_an_image_and_identity_does_not():
    img = scene()[None]
    np.testing.assert_array_equal(augment.apply_op(img, "identity", 10), img)
    for name in augment.OPS[1:]:
        for sign in (1.0, -1.0):
            out = augment.apply_op(img, name, 7, sign)
            assert out.shape == img.shape and out.dtype == np.uint8
            assert not np.array_equal(out, img), (name, sign)
        if name in augment.SIGNED_OPS:  # the sign matters
            assert not np.array_equal(augment.apply_op(img, name, 7, 1.0), augment.apply_op(img, name, 7, -1.0)), name
            # magnitude 0 leaves the image as it is
            np.testing.assert_array_equal(augment.apply_op(img, name, 0, 1.0), img, err_msg=name)
    np.testing.assert_array_equal(augment.apply_op(img, "solarize", 0), img)
    with pytest.raises(ValueError, match="unknown RandAugment op"):
        augment.apply_op(img, "invert", 5)


def test_op_semantics_and_magnitude_mapping():
    strength = augment.op_strength
    assert strength("rotate", 10) == pytest.approx(30) and strength("rotate", 7) == pytest.approx(21)
    assert strength("shear_x", 10) == pytest.approx(0.3) and strength("translate_y", 10) == pytest.approx(0.45)
    assert strength("contrast", 7) == pytest.approx(0.63) and strength("sharpness", 10) == pytest.approx(0.9)
    assert strength("solarize", 7) == 256 - 179 and strength("solarize", 0) == 256
    assert strength("posterize", 7) == 2 and strength("posterize", 0) == 4 and strength("posterize", 10) == 1
    assert strength("rotate", 15) == strength("rotate", 10)  # clipped to [0, 10]
    img = scene()[None]
    # translate_x at m 10 on a 100-wide image: 45 px, content moves left (sign +1), grey fill behind.
    wide = np.random.default_rng(0).integers(0, 256, (1, 20, 100, 3), dtype=np.uint8)
    moved = augment.apply_op(wide, "translate_x", 10, 1.0)
    np.testing.assert_array_equal(moved[:, :, :55], wide[:, :, 45:])
    assert (moved[:, :, 56:] == 128).all()
    # solarize inverts exactly the pixels >= the threshold; posterize keeps the top 2 bits at m 7.
    sol = augment.apply_op(img, "solarize", 7)
    np.testing.assert_array_equal(sol, np.where(img >= 77, 255 - img, img))
    np.testing.assert_array_equal(augment.apply_op(img, "posterize", 7), img & 0b11000000)
    # auto-contrast stretches every channel to the full range; brightness darkens / brightens with the sign.
    ac = augment.apply_op((img // 2 + 40).astype(np.uint8), "auto_contrast", 5)
    assert (ac.reshape(-1, 3).min(0) == 0).all() and (ac.reshape(-1, 3).max(0) == 255).all()
    assert augment.apply_op(img, "brightness", 7, -1.0).mean() < img.mean() < augment.apply_op(
        img, "brightness", 7, 1.0).mean()
    # rotate by +-21 degrees: the corners are filled with grey.
    rot = augment.apply_op(img, "rotate", 7, 1.0)
    assert (rot[0, 0, 0] == 128).all() and (rot[0, -1, -1] == 128).all()


def test_draws_follow_the_policy():
    n, counts, applied, mags = 3000, dict.fromkeys(augment.OPS, 0), [], []
    rng = np.random.default_rng(0)
    for _ in range(n):
        chosen = augment.draw_rand_augment(rng, 4, 7)
        applied.append(len(chosen))
        for name, m, sign in chosen:
            counts[name] += 1
            mags.append(m)
            assert sign in (1.0, -1.0) and (sign == 1.0 or name in augment.SIGNED_OPS)
    # Each of the 4 ops is applied with p 0.5: Binomial(4, 0.5) per clip.
    assert abs(np.mean(applied) - 2.0) < 4 * np.sqrt(1.0 / n)
    # Ops are uniform over OPS (with replacement).
    total = sum(counts.values())
    expect = total / len(augment.OPS)
    assert all(abs(c - expect) < 5 * np.sqrt(expect) for c in counts.values()), counts
    # Magnitudes ~ N(7, 0.5) within [0, 10].
    mags = np.array(mags)
    assert mags.min() >= 0 and mags.max() <= 10
    assert abs(mags.mean() - 7) < 0.05 and abs(mags.std() - 0.5) < 0.05
    # A fixed magnitude without noise; op_prob 1 applies all.
    fixed = augment.draw_rand_augment(np.random.default_rng(1), 4, 7, op_prob=1.0, magnitude_std=0.0)
    assert len(fixed) == 4 and all(m == 7 for _, m, _ in fixed)


# ------------------------------------------------------------------------------------------- random erasing


def test_random_erasing_area_probability_and_noise():
    video = np.zeros((2, 32, 40, 3), np.float32)
    rng = np.random.default_rng(0)
    n, prob, erased, fractions, aspects, noise = 2000, 0.25, 0, [], [], []
    for _ in range(n):
        out = augment.random_erase(video, rng, prob)
        mask = out != 0
        if not mask.any():
            assert out is video
            continue
        erased += 1
        # One rectangle, the same on every frame and channel.
        for t in range(2):
            for ch in range(3):
                np.testing.assert_array_equal(mask[t, :, :, ch], mask[0, :, :, 0])
        rows, cols = np.nonzero(mask[0, :, :, 0])
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert mask[0, :, :, 0].sum() == h * w
        fractions.append(h * w / (32 * 40))
        aspects.append(h / w)
        noise.append(out[mask])
    assert video.max() == 0  # the input is not touched
    assert abs(erased - prob * n) < 4 * np.sqrt(n * prob * (1 - prob))
    fractions = np.array(fractions)
    assert fractions.min() >= 0.02 and fractions.max() <= 1 / 3
    assert fractions.min() < 0.04 and fractions.max() > 0.28  # the whole range is used
    assert np.mean(np.log(aspects)) == pytest.approx(0, abs=0.15)
    assert min(aspects) < 0.5 and max(aspects) > 2
    noise = np.concatenate(noise)
    assert abs(noise.mean()) < 0.02 and abs(noise.std() - 1) < 0.02
    # prob 0 draws nothing; prob 1 always erases.
    r = np.random.default_rng(5)
    assert augment.random_erase(video, r, 0.0) is video
    assert r.bit_generator.state == np.random.default_rng(5).bit_generator.state
    assert all((augment.random_erase(video, r, 1.0) != 0).any() for _ in range(50))


def test_erasing_comes_after_everything_else_in_train_transform():
    clip = noisy_gradient_clip(3)
    for s in range(5):
        plain = transforms.train_transform(clip, np.random.default_rng(s), crop_size=32, randaugment=(2, 5))
        erased = transforms.train_transform(clip, np.random.default_rng(s), crop_size=32, randaugment=(2, 5),
                                            erase_prob=1.0)
        diff = (plain != erased).any(-1)
        assert diff.any()
        np.testing.assert_array_equal(diff, diff[:1].repeat(len(diff), 0))  # same rectangle on every frame
        np.testing.assert_array_equal(erased[~diff], plain[~diff])  # nothing else changed
        noise = erased[diff]  # N(0, 1) in the normalised space: erased after normalisation
        assert noise.size >= 4 * 20 * 3 and abs(noise.mean()) < 0.4 and 0.7 < noise.std() < 1.3


# ------------------------------------------------------------------------------------------- pipeline


def test_pipeline_augments_in_train_mode_only(source):
    plain = first_batch(source)
    aug = first_batch(source, randaugment=(4, 7), erase_prob=1.0)
    again = first_batch(source, randaugment=(4, 7), erase_prob=1.0)
    np.testing.assert_array_equal(aug["video"], again["video"])  # a function of (config, seed, position)
    np.testing.assert_array_equal(aug["label"], plain["label"])
    assert aug["video"].shape == plain["video"].shape and aug["video"].dtype == np.float32
    for i in range(len(plain["video"])):
        assert not np.array_equal(aug["video"][i], plain["video"][i])
    # Each key on its own reaches the transform: RandAugment changes some clips; erasing changes every clip, in
    # one rectangle repeated on all frames, nothing else.
    ra_only = first_batch(source, randaugment=(4, 9))
    assert sum(not np.array_equal(a, b) for a, b in zip(ra_only["video"], plain["video"])) >= 2
    erase_only = first_batch(source, erase_prob=1.0)
    for a, b in zip(erase_only["video"], plain["video"]):
        diff = (a != b).any(-1)
        assert diff.any() and (diff == diff[:1]).all()
    t = pipeline.ClipTransform.from_config(pipeline.resolve_config(
        {"sources": [source], "randaugment": [4, 7], "erase_prob": 0.25}))
    assert t.randaugment == (4, 7.0) and t.erase_prob == 0.25
    # Eval mode ignores both.
    ev = dict(eval=True, num_views=2, num_segments=2, repeat=False, shuffle=False)
    ev_plain = first_batch(source, **ev)
    ev_aug = first_batch(source, randaugment=(4, 7), erase_prob=1.0, **ev)
    assert ev_aug["video"].shape == (4, 2, 2, 4, 24, 24, 3)
    for key in ev_plain:
        np.testing.assert_array_equal(ev_plain[key], ev_aug[key])


def test_config_validation():
    base = {"sources": [{"glob": "x"}]}
    ok = pipeline.resolve_config({**base, "randaugment": [4, 7], "erase_prob": 0.25})
    assert ok["randaugment"] == (4, 7.0) and ok["erase_prob"] == 0.25
    assert pipeline.resolve_config(ok)["randaugment"] == (4, 7.0)  # resolving twice is stable
    cfg = pipeline.default_config()
    cfg.sources, cfg.randaugment, cfg.erase_prob = [{"glob": "x"}], (2, 9), 1
    assert pipeline.resolve_config(cfg)["randaugment"] == (2, 9.0)
    for bad in [(0, 7), (4, 11), (4, -1), 4, (4,), (4.0, 7), (True, 7), (4, 7, 1), "4,7", (4, float("nan"))]:
        with pytest.raises(pipeline.PipelineConfigError, match=r"randaugment=.*pair \(num_ops, magnitude\)"):
            pipeline.resolve_config({**base, "randaugment": bad})
    for bad in [-0.1, 1.5, True, "0.25", None, float("nan")]:
        with pytest.raises(pipeline.PipelineConfigError, match=r"erase_prob=.*probability in \[0, 1\]"):
            pipeline.resolve_config({**base, "erase_prob": bad})
