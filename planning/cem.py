"""The cross-entropy method (CEM) toward a goal image in representation space, as pure jitted programs.

V-JEPA 2-AC plans by CEM over action sequences: sample N candidate sequences of H actions from a per-step Gaussian,
score each by the energy of the world model's imagined future against the goal, refit the Gaussian to the k best
(elites), repeat I times, execute the first action of the mean, observe, re-plan (MPC).

The pieces (`initial`, `sample`, `refit`, `optimize`) are plain functions of arrays, shared by every planner:
`LatentPlanner` scores candidates with the world model inside one XLA program per re-plan; the oracle of
`planning.evaluate` scores the same CEM's candidates with the true simulator.

One re-plan of `LatentPlanner` is ONE program, vmapped over episodes: the observed frames are encoded once, the
keys/values of the observed context steps are computed once and shared by every candidate and iteration (the
predictor is block-causal, see `ACPredictor.decode`), `lax.scan` runs the H imagined steps over fixed-size cache
buffers with the states integrated from the sampled actions, a `lax.scan` runs the I iterations, `top_k` picks the
elites. The planner's settings are static; the model's parameters are arguments.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jepa import world_model as wm

Array = jax.Array


# --- What is searched --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ActionSpace:
    """The searched subspace of an env's action: `dims` of the `dim`-dimensional action, each within [low, high];
    the other dimensions are held at zero (table-top tasks: dxyz and gripper searched, orientation held)."""

    dim: int
    dims: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self):
        if not (len(self.dims) == len(self.low) == len(self.high)) or not self.dims:
            raise ValueError(f"dims, low and high must be non-empty and of one length: {self}")
        if any(not 0 <= d < self.dim for d in self.dims) or len(set(self.dims)) != len(self.dims):
            raise ValueError(f"dims {self.dims} must be distinct indices below the action dimension {self.dim}")
        if any(lo >= hi for lo, hi in zip(self.low, self.high)):
            raise ValueError(f"each low must be below its high: {self.low} vs {self.high}")

    @property
    def size(self) -> int:
        return len(self.dims)

    @property
    def half_range(self) -> Array:
        return (jnp.asarray(self.high) - jnp.asarray(self.low)) / 2

    def clip(self, x: Array) -> Array:
        return jnp.clip(x, jnp.asarray(self.low, x.dtype), jnp.asarray(self.high, x.dtype))

    def full(self, x: Array) -> Array:
        """Searched actions [..., size] -> the env's actions [..., dim] (zeros in the held dimensions)."""
        out = jnp.zeros(x.shape[:-1] + (self.dim,), x.dtype)
        return out.at[..., jnp.asarray(self.dims)].set(x)

    def uniform(self, key: Array, shape: tuple[int, ...]) -> Array:
        """Uniform random searched actions [*shape, size] within the bounds."""
        return jax.random.uniform(key, shape + (self.size,), minval=jnp.asarray(self.low),
                                  maxval=jnp.asarray(self.high))


def action_space_for(env, dims: str = "auto", max_xyz: float | None = None, repeat: int = 1) -> ActionSpace:
    """The searched action space of a task env.

    Table-top tasks (Cartesian control): dx, dy, dz within the env's step bound (or `max_xyz`: the reference clips
    to an L-inf ball of 5-7.5 cm) and the gripper change within [-1, 1]; orientation held at zero (V-JEPA 2-AC's
    search space). gymnasium adapters: every joint torque within the env's bounds. `dims='all'` searches every
    dimension within the env's action bounds. `repeat` > 1: one planner action is `repeat` env actions
    concatenated (world models trained with a frame stride on recorded actions)."""
    low, high = np.asarray(env.action_space.low, float), np.asarray(env.action_space.high, float)
    if max_xyz is not None:
        if low.shape != (7,):
            raise ValueError(f"max_xyz applies to 7-d Cartesian actions, this env's are {low.shape}")
        low[:3], high[:3] = np.maximum(low[:3], -max_xyz), np.minimum(high[:3], max_xyz)
    low, high = np.tile(low, repeat), np.tile(high, repeat)
    if dims == "auto":
        dims = "xyz+gripper" if hasattr(env, "ee_state") else "all"
    if dims == "xyz+gripper":
        if low.shape != (7,) or repeat != 1:
            raise ValueError(f"'xyz+gripper' needs a 7-d Cartesian action, this env's has {low.shape}")
        idx = (0, 1, 2, 6)
    elif dims == "all":
        idx = tuple(range(low.shape[0]))
    else:
        raise ValueError(f"dims must be 'auto', 'xyz+gripper' or 'all', got {dims!r}")
    return ActionSpace(int(low.shape[0]), idx, tuple(float(low[i]) for i in idx), tuple(float(high[i]) for i in idx))


@dataclasses.dataclass(frozen=True)
class CEMConfig:
    """CEM settings (static: each distinct config compiles its own program).

    samples N, elites k (top-k lowest energy), iterations I, horizon H (actions per candidate).
    init_std: the sampling std at the start of each re-plan, as a fraction of each searched dimension's half range.
    min_std: the floor of the std (same units), so the search never collapses onto one point.
    momentum: mean/std <- momentum * old + (1 - momentum) * elites' (0: plain CEM).
    energy: 'l1' (V-JEPA 2-AC) or 'l2' distance between predicted and goal features (mean over tokens and dims).
    all_frames: the energy is the mean over every imagined frame (else the last one only).
    keep_mean: candidate 0 of every iteration is the current mean, so a good plan is never lost to sampling noise.
    """

    samples: int = 64
    elites: int = 8
    iterations: int = 3
    horizon: int = 2
    init_std: float = 0.5
    min_std: float = 0.05
    momentum: float = 0.0
    energy: str = "l1"
    all_frames: bool = False
    keep_mean: bool = True

    def __post_init__(self):
        if not 0 < self.elites <= self.samples:
            raise ValueError(f"need 0 < elites <= samples, got elites={self.elites}, samples={self.samples}")
        if self.iterations < 1 or self.horizon < 1:
            raise ValueError(f"iterations and horizon must be >= 1, got {self.iterations}, {self.horizon}")
        if self.energy not in ("l1", "l2"):
            raise ValueError(f"energy must be 'l1' or 'l2', got {self.energy!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    @property
    def model_steps(self) -> int:
        """World-model (or simulator) steps one re-plan costs: N x H x I."""
        return self.samples * self.horizon * self.iterations


# --- The CEM itself ----------------------------------------------------------------------------------------------
class CEMResult(NamedTuple):
    mean: Array  # [H, size] the plan: execute mean[0]
    std: Array  # [H, size]
    best: Array  # [H, size] the lowest-energy candidate seen
    best_energy: Array  # []
    trace: Array  # [I] the best energy of each iteration


def initial(space: ActionSpace, cfg: CEMConfig, warm: Array | None = None) -> tuple[Array, Array]:
    """Mean (zero, or `warm`) and std of the first iteration, [H, size] each."""
    mean = jnp.zeros((cfg.horizon, space.size), jnp.float32) if warm is None else jnp.asarray(warm, jnp.float32)
    std = jnp.broadcast_to(cfg.init_std * space.half_range, mean.shape).astype(jnp.float32)
    return mean, std


def shift(mean: Array) -> Array:
    """Warm start for the next re-plan: the plan shifted by one step, a zero action appended. [..., H, size]."""
    return jnp.concatenate([mean[..., 1:, :], jnp.zeros_like(mean[..., :1, :])], axis=-2)


def sample(key: Array, mean: Array, std: Array, space: ActionSpace, cfg: CEMConfig) -> Array:
    """N candidate sequences [N, H, size] from the Gaussian, clipped to the bounds (candidate 0 = the mean if
    cfg.keep_mean)."""
    eps = jax.random.normal(key, (cfg.samples,) + mean.shape, mean.dtype)
    cands = mean + std * eps
    if cfg.keep_mean:
        cands = cands.at[0].set(mean)
    return space.clip(cands)


def refit(mean: Array, std: Array, cands: Array, energies: Array, space: ActionSpace,
          cfg: CEMConfig) -> tuple[Array, Array]:
    """The Gaussian refit to the k lowest-energy candidates, with momentum and the std floor."""
    _, idx = jax.lax.top_k(-energies, cfg.elites)
    elites = cands[idx]
    new_mean = cfg.momentum * mean + (1 - cfg.momentum) * elites.mean(0)
    new_std = cfg.momentum * std + (1 - cfg.momentum) * elites.std(0)
    return new_mean, jnp.maximum(new_std, cfg.min_std * space.half_range)


def optimize(energy_fn: Callable[[Array], Array], key: Array, space: ActionSpace, cfg: CEMConfig,
             warm: Array | None = None) -> CEMResult:
    """I iterations of CEM on `energy_fn` (candidates [N, H, size] -> energies [N]) in one `lax.scan`."""
    mean, std = initial(space, cfg, warm)

    def body(carry, k):
        mean, std, best, best_e = carry
        cands = sample(k, mean, std, space, cfg)
        e = energy_fn(cands)
        i = jnp.argmin(e)
        better = e[i] < best_e
        best = jnp.where(better, cands[i], best)
        best_e = jnp.where(better, e[i], best_e)
        mean, std = refit(mean, std, cands, e, space, cfg)
        return (mean, std, best, best_e), e[i]

    init = (mean, std, mean, jnp.asarray(jnp.inf, jnp.float32))
    (mean, std, best, best_e), trace = jax.lax.scan(body, init, jax.random.split(key, cfg.iterations))
    return CEMResult(space.clip(mean), std, best, best_e, trace)


# --- Planning with a latent world model -------------------------------------------------------------------------
def feature_distance(pred: Array, goal: Array, kind: str = "l1") -> Array:
    """Mean L1 (or squared L2) distance over tokens and feature dims: pred [..., H', W', D] vs goal [H', W', D]."""
    d = pred - goal
    return (jnp.abs(d) if kind == "l1" else jnp.square(d)).mean(axis=(-3, -2, -1))


def over_episodes(fn: Callable, *xs):
    """fn over the leading (episode) axis of xs. On GPU / TPU: vmapped, one wide program. On CPU: one episode at a
    time (lax.map), which keeps an episode's N candidates' activations in cache; the demo's 20-episode re-plan
    runs about 2x faster so than vmapped (measured by `jepa bench`), with the same results."""
    if jax.default_backend() == "cpu":
        return jax.lax.map(lambda args: fn(*args), xs)
    return jax.vmap(fn)(*xs)


class LatentPlanner:
    """CEM toward goal images with a `jepa.world_model.WorldModel` (frozen encoder + AC predictor).

        planner = LatentPlanner(load_world_model("runs/demo/ac/model"), action_space_for(env), CEMConfig())
        goal_z = planner.encode_goals(goal_images)                      # [E, H', W', D], once per episode
        result = planner.replan(frames, past_actions, states, goal_z, warm, key)   # one program, E episodes
        action = planner.space.full(result.mean[:, 0])                   # [E, action_dim]

    `context` observed frames per re-plan (the last ones; the first context - 1 steps' executed actions are known).
    `states` (default: the world model's): 'pose' feeds the predictor the poses integrated from the sampled
    delta-pose actions inside the program, as V-JEPA 2-AC does; 'none' feeds zeros (world models trained on
    torque actions with data.states='none').
    """

    def __init__(self, model: wm.WorldModel, space: ActionSpace, cfg: CEMConfig, *, context: int = 1,
                 states: str | None = None, gripper_range: tuple[float, float] | None = (0.0, 1.0)):
        if context < 1:
            raise ValueError(f"context must be >= 1 frame, got {context}")
        pcfg = model.predictor.cfg
        if space.dim != pcfg.action_dim:
            raise ValueError(f"the task's actions have {space.dim} dimensions, the world model's predictor was "
                             f"trained on {pcfg.action_dim}")
        self.model, self.space, self.cfg, self.context = model, space, cfg, context
        self.states = states or model.states
        if self.states not in ("pose", "none"):
            raise ValueError(f"states must be 'pose' or 'none', got {self.states!r}")
        self.gripper_range = gripper_range if self.states == "pose" else None
        self.image_size = model.image_size
        enc_graph, enc_params = nnx.split(model.encoder)
        pred_graph, pred_params = nnx.split(model.predictor)
        norm = None if model.normalization is None else jax.tree.map(
            lambda v: jnp.asarray(v, jnp.float32), dict(model.normalization))
        self.params = {"encoder": enc_params, "predictor": pred_params, "norm": norm}
        self._graphs = (enc_graph, pred_graph)
        self._encode = jax.jit(self._encode_impl)
        self._replan = jax.jit(self._replan_impl)
        self._energies = jax.jit(self._energies_impl)

    # -- public API ---------------------------------------------------------------------------------------------
    def encode_goals(self, images) -> Array:
        """Goal images uint8 [E, H, W, 3] -> goal features [E, H', W', D]."""
        images = self._check_images(images, 4, "goal images")
        return self._encode(self.params, images[:, None])[:, 0]

    def replan(self, frames, past_actions, states, goal_z, warm, key) -> CEMResult:
        """One re-plan of E episodes: frames uint8 [E, C, H, W, 3] (the last C observations), past_actions
        [E, C - 1, action_dim] (executed between them), states [E, C, state_dim], goal_z [E, H', W', D],
        warm [E, H, size] (the previous plan shifted, or zeros), key. Returns a CEMResult of [E, ...] arrays."""
        frames = self._check_images(frames, 5, "observed frames")
        return self._replan(self.params, frames, jnp.asarray(past_actions, jnp.float32),
                            jnp.asarray(states, jnp.float32), goal_z, jnp.asarray(warm, jnp.float32), key)

    def energies(self, frames, past_actions, states, goal_z, candidates) -> Array:
        """The planner's energy of given candidates [E, N, H, size] -> [E, N] (for landscapes / correlations)."""
        frames = self._check_images(frames, 5, "observed frames")
        return self._energies(self.params, frames, jnp.asarray(past_actions, jnp.float32),
                              jnp.asarray(states, jnp.float32), goal_z, jnp.asarray(candidates, jnp.float32))

    # -- the programs ---------------------------------------------------------------------------------------------
    def _check_images(self, images, ndim: int, what: str) -> Array:
        images = np.asarray(images)
        if images.ndim != ndim or images.shape[-1] != 3:
            raise ValueError(f"{what} must be uint8 [{'E, C, ' if ndim == 5 else 'E, '}H, W, 3], got shape "
                             f"{images.shape}")
        if self.image_size and images.shape[-3:-1] != (self.image_size, self.image_size):
            raise ValueError(f"{what} are {images.shape[-3]}x{images.shape[-2]}; the world model was trained on "
                             f"{self.image_size}x{self.image_size} frames")
        return jnp.asarray(images, jnp.uint8)

    def _encode_impl(self, params, frames):
        return wm.encode_frames(nnx.merge(self._graphs[0], params["encoder"]), frames)

    def _energy_fn(self, params, z, past_actions, states):
        """energy(candidates [N, H, size]) -> [N] for one episode with encoded context z [C, H', W', D]."""
        cfg, space, c = self.cfg, self.space, z.shape[0]
        predictor = nnx.merge(self._graphs[1], params["predictor"])
        norm = params["norm"]
        total = c - 1 + cfg.horizon
        past_s = self._model_states(states, norm)
        past_a = wm.normalize(past_actions, norm, "action") if c > 1 else past_actions
        prefix = wm.prefill(predictor, z[None], past_a[None], past_s[None], total)

        def energy(cands, goal_z):
            n = cands.shape[0]
            acts = space.full(cands)  # [N, H, A]
            if self.states == "pose":
                st = wm.integrate_states_jax(jnp.broadcast_to(states[-1], (n,) + states[-1].shape), acts,
                                             self.gripper_range)[:, :-1]
            else:
                st = jnp.zeros((n, cfg.horizon, states.shape[-1]), jnp.float32)
            st = self._model_states(st, norm)
            cache = jax.tree.map(lambda x: jnp.broadcast_to(x, x.shape[:1] + (n,) + x.shape[2:]), prefix)
            z_last = jnp.broadcast_to(z[-1], (n, 1) + z.shape[1:])
            preds = wm.imagine(predictor, cache, z_last, wm.normalize(acts, norm, "action"), st, c - 1)
            d = feature_distance(preds, goal_z, cfg.energy)  # [N, H]
            return d.mean(1) if cfg.all_frames else d[:, -1]

        return energy

    def _model_states(self, states, norm):
        """What the predictor sees of states [..., S]: standardised, or zeros with states='none'."""
        if self.states == "none":
            return jnp.zeros_like(states)
        return wm.normalize(states, norm, "state")

    def _replan_impl(self, params, frames, past_actions, states, goal_z, warm, key):
        z = self._encode_impl(params, frames)  # [E, C, H', W', D]: each observed frame encoded once

        def one(z, past_actions, states, goal_z, warm, key):
            energy = self._energy_fn(params, z, past_actions, states)
            return optimize(functools.partial(energy, goal_z=goal_z), key, self.space, self.cfg, warm)

        keys = jax.random.split(key, frames.shape[0])
        return over_episodes(one, z, past_actions, states, goal_z, warm, keys)

    def _energies_impl(self, params, frames, past_actions, states, goal_z, candidates):
        z = self._encode_impl(params, frames)

        def one(z, past_actions, states, goal_z, cands):
            return self._energy_fn(params, z, past_actions, states)(cands, goal_z)

        return over_episodes(one, z, past_actions, states, goal_z, candidates)
