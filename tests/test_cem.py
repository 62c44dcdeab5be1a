"""The planner's pieces: CEM on a known energy, the KV-cached rollout against the uncached one, states integrated
inside jit, the planner's energy against a plain statement of it, and the evaluation metrics."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jepa import world_model as wm
from jepa.models import ACPredictor, ACPredictorConfig, VisionTransformer
from jepa.models.config import ViTConfig
from planning import cem, metrics

SPACE = cem.ActionSpace(7, (0, 1, 2, 6), (-0.075,) * 3 + (-1.0,), (0.075,) * 3 + (1.0,))


def _predictor(**kw) -> ACPredictor:
    cfg = ACPredictorConfig(**{**dict(embed_dim=16, width=32, depth=2, num_heads=2, mlp_dim=64, grid_size=4,
                                      pos_embed=True, residual=True, rope="rotation"), **kw})
    p = ACPredictor(cfg, rngs=nnx.Rngs(0))
    # The residual predictor starts as copy-last (zero output layer): make it do something.
    p.proj.kernel.set_value(jax.random.normal(jax.random.key(3), p.proj.kernel.shape) * 0.1)
    return p


def test_cem_finds_the_minimum_of_a_known_energy():
    cfg = cem.CEMConfig(samples=128, elites=12, iterations=12, horizon=2, min_std=0.01)
    target = jnp.array([[0.05, -0.03, 0.02, 0.5], [0.01, 0.02, -0.04, -0.2]])
    scale = 1.0 / SPACE.half_range  # each dimension in units of its range

    def energy(c):
        return jnp.square((c - target) * scale).sum((1, 2))

    res = jax.jit(lambda k: cem.optimize(energy, k, SPACE, cfg))(jax.random.key(0))
    err = np.abs(np.asarray(res.mean) - np.asarray(target)) / np.asarray(SPACE.half_range)
    assert err.max() < 0.05, err
    assert res.trace[-1] < res.trace[0] / 10  # the best energy of each iteration falls
    # A minimum outside the bounds: the plan ends on the bound, never beyond.
    far = jnp.array([[0.5, -0.5, 0.0, 3.0]] * 2)
    res = jax.jit(lambda k: cem.optimize(lambda c: jnp.square((c - far) * scale).sum((1, 2)), k, SPACE, cfg))(
        jax.random.key(1))
    np.testing.assert_allclose(res.mean[:, [0, 1, 3]], [[0.075, -0.075, 1.0]] * 2, atol=5e-3)


def test_warm_start_shift_and_action_space():
    mean = jnp.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(cem.shift(mean), [[2, 3], [4, 5], [0, 0]])
    full = SPACE.full(jnp.array([[0.01, 0.02, 0.03, 0.5]]))
    np.testing.assert_allclose(full, [[0.01, 0.02, 0.03, 0, 0, 0, 0.5]], rtol=1e-6)
    with pytest.raises(ValueError, match="elites"):
        cem.CEMConfig(samples=4, elites=8)
    with pytest.raises(ValueError, match="dims"):
        cem.ActionSpace(7, (0, 9), (-1.0, -1.0), (1.0, 1.0))


@pytest.mark.parametrize("context", [1, 2, 3])
def test_kv_cached_rollout_equals_the_uncached_rollout(context):
    p = _predictor()
    k = jax.random.split(jax.random.key(1), 3)
    b, steps = 2, 3
    t = context + steps - 1
    z0 = wm.layer_norm(jax.random.normal(k[0], (b, context, 4, 4, 16)))
    a = jax.random.normal(k[1], (b, t, 7))
    s = jax.random.normal(k[2], (b, t, 7))
    ref = wm.rollout(p, z0, a, s, steps)  # grows the sequence and recomputes every step
    got = jax.jit(lambda z0, a, s: wm.rollout_cached(p, z0, a, s, steps))(z0, a, s)
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_decode_in_pieces_equals_one_forward_pass():
    p = _predictor(residual=False)
    k = jax.random.split(jax.random.key(2), 3)
    f = jax.random.normal(k[0], (2, 5, 4, 4, 16))
    a, s = jax.random.normal(k[1], (2, 5, 7)), jax.random.normal(k[2], (2, 5, 7))
    full = p(f, a, s)
    cache = p.init_cache(2, 5, 16)
    outs = []
    for lo, hi in ((0, 2), (2, 3), (3, 5)):
        o, cache = p.decode(f[:, lo:hi], a[:, lo:hi], s[:, lo:hi], cache, lo)
        outs.append(o)
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=2e-5)


def test_states_integrated_in_jit_match_numpy():
    rng = np.random.default_rng(0)
    s0 = np.concatenate([rng.normal(size=3) * 0.1, rng.uniform(-0.5, 0.5, 3), [0.3]]).astype(np.float32)
    acts = np.concatenate([rng.normal(size=(5, 3)) * 0.05, rng.normal(size=(5, 3)) * 0.2,
                           rng.normal(size=(5, 1)) * 0.2], 1).astype(np.float32)
    ref = wm.integrate_states(s0, acts)
    got = jax.jit(wm.integrate_states_jax)(jnp.asarray(s0), jnp.asarray(acts))
    np.testing.assert_allclose(got, ref, atol=1e-5)
    clipped = wm.integrate_states_jax(jnp.asarray(s0), jnp.asarray(acts) * 10, gripper_range=(0.0, 1.0))
    assert float(clipped[:, 6].min()) >= 0.0 and float(clipped[:, 6].max()) <= 1.0


@pytest.mark.parametrize("context", [1, 2])
def test_planner_energy_equals_a_plain_statement_of_it(context):
    """energies() == L1 between the goal's features and the last frame of an uncached rollout of the candidate,
    with the states integrated from its actions and everything standardised as in training."""
    enc = VisionTransformer(ViTConfig(width=16, depth=1, num_heads=2, mlp_dim=32, patch_size=8, tubelet_size=2),
                            rngs=nnx.Rngs(0))
    pred = _predictor()
    rng = np.random.default_rng(0)
    norm = {"action_mean": rng.normal(size=7).tolist(), "action_std": rng.uniform(0.5, 2, 7).tolist(),
            "state_mean": rng.normal(size=7).tolist(), "state_std": rng.uniform(0.5, 2, 7).tolist()}
    model = wm.WorldModel(enc, pred, norm, 32, 1)
    cfg = cem.CEMConfig(samples=8, elites=2, iterations=1, horizon=2)
    planner = cem.LatentPlanner(model, SPACE, cfg, context=context)
    frames = rng.integers(0, 255, (1, context, 32, 32, 3), dtype=np.uint8)
    goal = rng.integers(0, 255, (1, 32, 32, 3), dtype=np.uint8)
    states = np.concatenate([rng.normal(size=(1, context, 6)) * 0.1, rng.uniform(0, 1, (1, context, 1))], -1)
    past = rng.normal(size=(1, context - 1, 7)).astype(np.float32) * 0.02
    cands = np.asarray(SPACE.uniform(jax.random.key(0), (1, 5, 2)))
    got = np.asarray(planner.energies(frames, past, states, planner.encode_goals(goal), cands))[0]

    z = wm.encode_frames(enc, jnp.asarray(frames))
    zg = wm.encode_frames(enc, jnp.asarray(goal)[:, None])[0, 0]
    want = []
    for c in cands[0]:
        acts = np.asarray(SPACE.full(jnp.asarray(c)))
        st = wm.integrate_states(states[0, -1], acts)[:-1]
        st[:, 6] = np.clip(st[:, 6], 0, 1)
        a_all = wm.normalize(np.concatenate([past[0], acts]), norm, "action")[None]
        s_all = wm.normalize(np.concatenate([states[0], st[1:]]).astype(np.float32), norm, "state")[None]
        pr = wm.rollout(pred, z, jnp.asarray(a_all), jnp.asarray(s_all), 2)
        want.append(float(jnp.abs(pr[0, -1] - zg).mean()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_wilson_interval_and_spearman():
    lo, hi = metrics.wilson_interval(18, 20)
    assert lo == pytest.approx(0.6990, abs=1e-3) and hi == pytest.approx(0.9721, abs=1e-3)
    lo, hi = metrics.wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-3)
    assert metrics.spearman(np.arange(10), np.arange(10) ** 3) == pytest.approx(1.0)
    assert metrics.spearman(np.arange(10), -np.arange(10)) == pytest.approx(-1.0)
    np.testing.assert_allclose(metrics.rankdata([3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0])
    assert np.isnan(metrics.spearman(np.ones(5), np.arange(5)))
