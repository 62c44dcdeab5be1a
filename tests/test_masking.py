"""Multi-block 3-D masks: fixed sizes per config, disjoint sorted context/targets, determinism, and the
reference's multi-block law (block sizes, tubes through time, unions of uniform blocks, one size per batch)."""
import numpy as np
import pytest

from jepa.masking import DEFAULT_SPECS, LONG_RANGE, SHORT_RANGE, BlockSpec, MultiBlockMasker


@pytest.mark.parametrize("grid", [(8, 16, 16), (4, 8, 8), (2, 6, 10)])
def test_fixed_sizes_disjoint_sorted(grid):
    m = MultiBlockMasker(grid)
    n = int(np.prod(grid))
    for seed in range(5):
        out = m(6, np.random.default_rng(seed))
        for g, (kc, kt) in enumerate(m.sizes):
            ctx, tgt = out[f"ctx_{g}"], out[f"tgt_{g}"]
            assert ctx.shape == (6, kc) and tgt.shape == (6, kt) and ctx.dtype == np.int32
            for c, t in zip(ctx, tgt):
                assert np.all(np.diff(c) >= 0) and np.all(np.diff(t) >= 0)
                assert c.min() >= 0 and t.max() < n
                assert not set(c.tolist()) & set(t.tolist()), "a context token is also a target"


def test_reference_target_fractions_at_256px_16_frames():
    # At 8x16x16 the reference's short-range masks hide ~62% and long-range ~81% of the tokens on average; the
    # fixed sizes are a low quantile of those counts.
    m = MultiBlockMasker((8, 16, 16))
    rng = np.random.default_rng(0)
    fracs = [[], []]
    for _ in range(200):
        for g, spec in enumerate(DEFAULT_SPECS):
            keep = m._sample_mask(spec, m._block_size(spec, rng), rng)
            fracs[g].append(1 - keep.mean())
    short, long_ = np.mean(fracs[0]), np.mean(fracs[1])
    assert 0.55 < short < 0.70 and 0.72 < long_ < 0.90, (short, long_)
    for (kc, kt), f in zip(m.sizes, (short, long_)):
        assert kt <= f * 2048 and kc <= (1 - f) * 2048


# --- the spec's multi-block law, stated independently of the masker --------------------------------------------
def _reference_block_sizes(grid, spec: BlockSpec, n: int, rng) -> np.ndarray:
    """n block sizes (t, h, w) drawn as the reference does: t = max(1, int(T * U(temporal))),
    n_keep = int(H * W * U(spatial)), ar = U(aspect), h = min(H, round(sqrt(n_keep * ar))),
    w = min(W, round(sqrt(n_keep / ar))) (and at least 1, as the masker does for tiny grids)."""
    t_dim, h_dim, w_dim = grid
    t = np.maximum(1, (t_dim * rng.uniform(*spec.temporal_scale, n)).astype(int))
    keep = (h_dim * w_dim * rng.uniform(*spec.spatial_scale, n)).astype(int)
    ar = rng.uniform(*spec.aspect_ratio, n)
    h = np.minimum(h_dim, np.maximum(1, np.round(np.sqrt(keep * ar)).astype(int)))
    w = np.minimum(w_dim, np.maximum(1, np.round(np.sqrt(keep / ar)).astype(int)))
    return np.stack([t, h, w], axis=1)


def _distribution(rows) -> dict:
    values, counts = np.unique(np.asarray(rows), axis=0, return_counts=True)
    return {tuple(v): c / counts.sum() for v, c in zip(values.tolist(), counts)}


def _total_variation(p: dict, q: dict) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def _is_union_of_boxes(footprint: np.ndarray, h: int, w: int) -> bool:
    """True if every cell of the boolean [H, W] footprint lies in some h x w box that lies inside the footprint."""
    covered = np.zeros_like(footprint)
    for i in range(footprint.shape[0] - h + 1):
        for j in range(footprint.shape[1] - w + 1):
            if footprint[i:i + h, j:j + w].all():
                covered[i:i + h, j:j + w] = True
    return bool(footprint.any()) and np.array_equal(covered, footprint)


def _expected_coverage(h_dim: int, w_dim: int, h: int, w: int, k: int) -> float:
    """Expected fraction of cells covered by k independent h x w boxes placed uniformly inside the grid."""
    def axis(n, b):  # probability that a uniformly placed segment of length b covers each index
        return np.array([min(i, n - b) - max(0, i - b + 1) + 1 for i in range(n)]) / (n - b + 1)

    p = axis(h_dim, h)[:, None] * axis(w_dim, w)[None, :]
    return float(np.mean(1 - (1 - p) ** k))


SPECS = [SHORT_RANGE, LONG_RANGE, BlockSpec(num_blocks=3, spatial_scale=(0.1, 0.3), temporal_scale=(0.5, 1.0))]


@pytest.mark.parametrize("grid", [(8, 16, 16), (2, 6, 10)])
@pytest.mark.parametrize("spec", SPECS, ids=["short", "long", "ranges"])
def test_block_sizes_follow_the_reference_law(grid, spec):
    """Block sizes: duration, area and aspect ratio distributed as the reference draws them."""
    m = MultiBlockMasker(grid, [spec])
    rng = np.random.default_rng(0)
    ours = np.array([m._block_size(spec, rng) for _ in range(8000)])
    ref = _reference_block_sizes(grid, spec, 200_000, np.random.default_rng(1))
    for cols, what in (([0], "duration"), ([1, 2], "(h, w)")):
        p, q = _distribution(ours[:, cols]), _distribution(ref[:, cols])
        assert set(p) <= set(q), f"{what}: sizes the reference never draws: {sorted(set(p) - set(q))}"
        assert _total_variation(p, q) < 0.05, (what, p, q)


@pytest.mark.parametrize("grid", [(8, 16, 16), (4, 8, 8)])
@pytest.mark.parametrize("spec", SPECS[:2], ids=["short", "long"])
def test_targets_are_the_union_of_num_blocks_uniform_tubes(grid, spec):
    """Each mask: the targets are a union of `num_blocks` boxes of the drawn size spanning all time steps, placed
    uniformly (their mean coverage matches the exact expectation for that many uniform boxes); context = the rest."""
    m = MultiBlockMasker(grid, [spec])
    rng = np.random.default_rng(3)
    t_dim, h_dim, w_dim = grid
    diffs = []
    for _ in range(600):
        t, h, w = size = m._block_size(spec, rng)
        keep = m._sample_mask(spec, size, rng).reshape(grid)
        assert t == t_dim and all(np.array_equal(keep[0], keep[s]) for s in range(1, t_dim)), "not tubes in time"
        footprint = ~keep[0]
        assert _is_union_of_boxes(footprint, h, w), (size, footprint.astype(int))
        assert h * w <= footprint.sum() <= spec.num_blocks * h * w
        diffs.append(footprint.mean() - _expected_coverage(h_dim, w_dim, h, w, spec.num_blocks))
    diffs = np.asarray(diffs)
    se = diffs.std() / np.sqrt(len(diffs))
    assert abs(diffs.mean()) < 4 * se + 2e-3, (diffs.mean(), se)


def _footprints(ids: np.ndarray, grid) -> np.ndarray:
    """[B, K] token ids -> boolean [B, H, W] spatial footprints."""
    _, h_dim, w_dim = grid
    out = np.zeros((len(ids), h_dim * w_dim), bool)
    for b, row in enumerate(ids):
        out[b, row % (h_dim * w_dim)] = True
    return out.reshape(len(ids), h_dim, w_dim)


def test_batches_hold_one_tube_exactly_when_the_size_is_fixed():
    """One 4x4 block through all 4 frames of a 4x8x8 grid: nothing is trimmed, so each sample's targets are exactly
    that tube (a position per sample) and its context exactly the other tokens."""
    grid = (4, 8, 8)
    m = MultiBlockMasker(grid, [BlockSpec(num_blocks=1, spatial_scale=(0.25, 0.25), aspect_ratio=(1.0, 1.0))])
    assert m.sizes == [(192, 64)]
    rng = np.random.default_rng(4)
    corners = set()
    for _ in range(10):
        out = m(8, rng)
        for ctx, tgt in zip(out["ctx_0"], out["tgt_0"]):
            t, h, w = np.unravel_index(tgt, grid)
            top, left = h.min(), w.min()
            box = np.zeros(grid, bool)
            box[:, top:top + 4, left:left + 4] = True
            np.testing.assert_array_equal(tgt, np.flatnonzero(box))
            np.testing.assert_array_equal(ctx, np.flatnonzero(~box))
            corners.add((top, left))
    assert len(corners) > 10, corners  # positions are drawn per sample


def test_block_size_is_drawn_per_batch_and_positions_per_sample():
    """One block of a random size: within a batch every sample's block (the region its context avoids) is a box of
    the SAME size at its own position, holding all of its targets; across batches the size changes. Lists are
    trimmed to the same lengths across the batch. (16 frames: a trimmed context still covers every column outside
    the block.)"""
    grid = (16, 12, 12)
    spec = BlockSpec(num_blocks=1, spatial_scale=(0.1, 0.3))
    m = MultiBlockMasker(grid, [spec])
    (kc, kt), = m.sizes
    allowed = {tuple(x) for x in _reference_block_sizes(grid, spec, 100_000, np.random.default_rng(0))[:, 1:]}
    rng = np.random.default_rng(5)
    sizes = set()
    for _ in range(30):
        out = m(6, rng)
        assert out["ctx_0"].shape == (6, kc) and out["tgt_0"].shape == (6, kt)
        boxes, corners = set(), set()
        for tgt_fp, ctx_fp in zip(_footprints(out["tgt_0"], grid), _footprints(out["ctx_0"], grid)):
            block = ~ctx_fp
            rows, cols = np.flatnonzero(block.any(1)), np.flatnonzero(block.any(0))
            assert block[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all(), "the context avoids more than one box"
            assert tgt_fp.any() and not (tgt_fp & ctx_fp).any(), "targets outside the block"
            boxes.add((rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))
            corners.add((rows[0], cols[0]))
        assert len(boxes) == 1, f"block sizes differ within a batch: {boxes}"
        assert boxes <= allowed, boxes
        assert len(corners) > 1, "every sample of the batch has its block at the same place"
        sizes |= boxes
    assert len(sizes) >= 4, sizes


def test_deterministic_given_rng():
    m = MultiBlockMasker((4, 8, 8))
    a, b = m(3, np.random.default_rng(7)), m(3, np.random.default_rng(7))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_impossible_generator_is_a_clear_error():
    with pytest.raises(ValueError, match="almost never leaves both context and targets"):
        MultiBlockMasker((1, 2, 2), [BlockSpec(num_blocks=8, spatial_scale=(0.9, 0.9))])
