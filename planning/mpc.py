"""Closed-loop goal-image control (MPC) on MuJoCo tasks: episodes, controllers, and the loop that runs them.

A batch of E episodes of one task advances in lockstep on ONE simulator: each episode's full MuJoCo state is
saved and restored around its turn (`get_state` / `set_state` reproduce rendering and physics bit for bit), so the
planner sees all E observations at once and plans them in one vmapped program.

Controllers map the batch's observations to actions:
  LatentCEM   CEM in the world model's representation space toward the goal image (planning.cem.LatentPlanner)
  OracleCEM   the same CEM (planning.cem.sample / refit), candidates scored by the true simulator's distance to
              the goal after running them (`rollout_distances`): what the search could do with a perfect model
  RandomActions / ZeroAction   baselines
Success is judged from the true simulator after the step budget; the planners never see the simulator's goal
quantities (the oracle excepted, by design).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from planning import cem, rollout
from planning.envs.goal import Goal


def observe_state(env) -> np.ndarray:
    """The agent's state as the world model saw it in training: RLDS cartesian_position (6) + gripper_position (1)
    (table-top: [TCP xyz, Euler xyz, gripper]; adapters: [end effector xyz, 0, 0, 0, 0])."""
    o = rollout.observe(env)
    return np.concatenate([o["cartesian_position"], o["gripper_position"]]).astype(np.float32)


# --- Episodes ------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Episode:
    """A start state and a goal reached from it (env.reset(seed) with its goal sampler)."""

    seed: int
    start: np.ndarray  # full simulator state
    goal: Goal
    initial_distance: float


def make_episodes(env, count: int, seed: int, min_distance: float = 0.0) -> list[Episode]:
    """`count` episodes from seeds seed, seed + 1, ...: reset (which samples a reachable goal), keep the start.
    Seeds whose goal lies closer than `min_distance` to the start are passed over (deterministically), so that
    doing nothing does not count as reaching the goal."""
    out: list[Episode] = []
    s = seed
    while len(out) < count:
        if s - seed >= 20 * count:
            raise ValueError(f"only {len(out)} of {20 * count} seeds from {seed} give a goal >= {min_distance} away; "
                             f"lower min_distance")
        env.reset(seed=s)
        if env.goal is None:
            raise ValueError(f"{type(env).__name__}.reset sampled no goal: make the env with auto_goal=True")
        d = env.distance_to_goal()
        if d >= min_distance:
            out.append(Episode(s, env.get_state(), env.goal, d))
        s += 1
    return out


class EpisodeBatch:
    """E episodes of one task stepped in lockstep on one env (their states swapped in and out).

    `action_repeat` > 1: each action is `action_repeat` env actions concatenated (a world model trained with a frame
    stride on recorded actions), executed one after the other."""

    def __init__(self, env, episodes: list[Episode], action_repeat: int = 1):
        if not episodes:
            raise ValueError("an episode batch needs at least one episode")
        self.env, self.episodes, self.action_repeat = env, episodes, int(action_repeat)
        self.states = [e.start.copy() for e in episodes]

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def threshold(self) -> float:
        return float(self.env.success_threshold)

    def _enter(self, i: int) -> None:
        self.env.set_state(self.states[i])
        self.env.goal = self.episodes[i].goal  # the state already holds any goal marker the goal placed

    def observe(self) -> dict[str, np.ndarray]:
        """frames uint8 [E, H, W, 3], states [E, 7], distances [E] (true distance to each episode's goal)."""
        frames, states, dist = [], [], []
        for i in range(len(self)):
            self._enter(i)
            frames.append(self.env.render_image())
            states.append(observe_state(self.env))
            dist.append(self.env.distance_to_goal())
        return {"frames": np.stack(frames), "states": np.stack(states), "distances": np.asarray(dist)}

    def distances(self) -> np.ndarray:
        out = []
        for i in range(len(self)):
            self._enter(i)
            out.append(self.env.distance_to_goal())
        return np.asarray(out)

    def step(self, actions: np.ndarray) -> None:
        """Executes one action [E, action_repeat * A] per episode."""
        actions = np.asarray(actions, np.float32).reshape(len(self), self.action_repeat, -1)
        for i in range(len(self)):
            self._enter(i)
            for a in actions[i]:
                self.env.advance(a)
            self.states[i] = self.env.get_state()

    def rollout_distances(self, i: int, sequences: np.ndarray) -> np.ndarray:
        """True distance to episode i's goal after each candidate sequence [N, H, action_repeat * A] from its
        current state (the oracle's energy)."""
        self._enter(i)
        seqs = np.asarray(sequences, np.float32)
        n, h = seqs.shape[:2]
        return self.env.rollout_distances(self.states[i], seqs.reshape(n, h * self.action_repeat, -1))

    def goal_images(self) -> np.ndarray:
        return np.stack([e.goal.image for e in self.episodes])


# --- Controllers ---------------------------------------------------------------------------------------------------
class Controller:
    """Maps observations of a batch to actions [E, space.dim]. `model_steps`: world-model (or simulator) steps spent
    per action and episode."""

    name = "controller"
    model_steps = 0

    def reset(self, batch: EpisodeBatch, obs: dict[str, np.ndarray], seed: int) -> None:
        pass

    def act(self, batch: EpisodeBatch, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        raise NotImplementedError


class ZeroAction(Controller):
    name = "zero"

    def __init__(self, space: cem.ActionSpace):
        self.space = space

    def act(self, batch, obs):
        return np.zeros((len(batch), self.space.dim), np.float32), {}


class RandomActions(Controller):
    """Uniform random actions within the searched bounds (held dimensions zero)."""

    name = "random"

    def __init__(self, space: cem.ActionSpace):
        self.space = space
        self._full = jax.jit(lambda k, n: space.full(space.uniform(k, (n,))), static_argnums=1)

    def reset(self, batch, obs, seed):
        self.key = jax.random.key(seed)

    def act(self, batch, obs):
        self.key, k = jax.random.split(self.key)
        return np.asarray(self._full(k, len(batch))), {}


class LatentCEM(Controller):
    """CEM in representation space with a world model (V-JEPA 2-AC's planner), warm-started from the previous
    plan shifted by one step. Keeps the last `planner.context` observations of each episode."""

    name = "latent_cem"

    def __init__(self, planner: cem.LatentPlanner):
        self.planner = planner
        self.model_steps = planner.cfg.model_steps

    def reset(self, batch, obs, seed):
        self.key = jax.random.key(seed)
        self.goal_z = self.planner.encode_goals(batch.goal_images())
        e, c = len(batch), self.planner.context
        self.frames = np.repeat(obs["frames"][:, None], c, axis=1)  # a still past before the first observation
        self.states = np.repeat(obs["states"][:, None], c, axis=1)
        self.actions = np.zeros((e, c - 1, self.planner.space.dim), np.float32)
        self.warm = np.zeros((e, self.planner.cfg.horizon, self.planner.space.size), np.float32)

    def _context_actions(self) -> np.ndarray:
        """The actions between the context frames as the world model was trained on them."""
        if self.planner.model.actions == "delta_pose" and self.planner.context > 1:
            from jepa.data.rlds import poses_to_actions

            return np.stack([poses_to_actions(s) for s in self.states])
        return self.actions

    def act(self, batch, obs):
        self.frames = np.concatenate([self.frames[:, 1:], obs["frames"][:, None]], axis=1)
        self.states = np.concatenate([self.states[:, 1:], obs["states"][:, None]], axis=1)
        self.key, k = jax.random.split(self.key)
        res = self.planner.replan(self.frames, self._context_actions(), self.states, self.goal_z, self.warm, k)
        self.warm = np.asarray(cem.shift(res.mean))
        action = np.asarray(self.planner.space.full(res.mean[:, 0]))
        if self.actions.shape[1]:
            self.actions = np.concatenate([self.actions[:, 1:], action[:, None]], axis=1)
        return action, {"energy": np.asarray(res.best_energy)}


class OracleCEM(Controller):
    """The same CEM (sample / refit, same settings), each candidate scored by the true distance to the goal after
    running it in the simulator from the episode's current state."""

    name = "oracle_cem"

    def __init__(self, space: cem.ActionSpace, cfg: cem.CEMConfig):
        self.space, self.cfg = space, cfg
        self.model_steps = cfg.model_steps
        self._sample = jax.jit(jax.vmap(lambda k, m, s: cem.sample(k, m, s, space, cfg)))
        self._refit = jax.jit(jax.vmap(lambda m, s, c, e: cem.refit(m, s, c, e, space, cfg)))
        self._full = jax.jit(space.full)

    def reset(self, batch, obs, seed):
        self.key = jax.random.key(seed)
        self.warm = np.zeros((len(batch), self.cfg.horizon, self.space.size), np.float32)

    def act(self, batch, obs):
        e = len(batch)
        mean, std = jax.vmap(lambda w: cem.initial(self.space, self.cfg, w))(jnp.asarray(self.warm))
        best_e = np.full(e, np.inf)
        for _ in range(self.cfg.iterations):
            self.key, k = jax.random.split(self.key)
            cands = self._sample(jax.random.split(k, e), mean, std)
            full = np.asarray(self._full(cands))
            energies = np.stack([batch.rollout_distances(i, full[i]) for i in range(e)])
            best_e = np.minimum(best_e, energies.min(1))
            mean, std = self._refit(mean, std, cands, jnp.asarray(energies, jnp.float32))
        mean = self.space.clip(mean)
        self.warm = np.asarray(cem.shift(mean))
        return np.asarray(self._full(mean[:, 0])), {"energy": best_e}


# --- The loop ------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Trajectories:
    """What one controller did on a batch: distances [E, T + 1] (true, after each step; column 0 = start),
    energies [E, T] (the planner's best energy per re-plan; nan without one), actions [E, T, A], seconds [T] (wall
    time of each batched act), frames [E, T + 1, H, W, 3] when recorded."""

    name: str
    distances: np.ndarray
    energies: np.ndarray
    actions: np.ndarray
    seconds: np.ndarray
    model_steps: int
    frames: np.ndarray | None = None


def run(batch: EpisodeBatch, controller: Controller, steps: int, *, seed: int = 0, record_frames: bool = False,
        progress: Callable[[int], None] | None = None) -> Trajectories:
    """Runs `controller` for `steps` actions on every episode of `batch` (from their start states)."""
    batch.states = [e.start.copy() for e in batch.episodes]
    obs = batch.observe()
    controller.reset(batch, obs, seed)
    e = len(batch)
    dist = [obs["distances"]]
    frames = [obs["frames"]] if record_frames else None
    energies, actions, seconds = [], [], []
    for _ in range(steps):
        t = time.perf_counter()
        action, info = controller.act(batch, obs)
        seconds.append(time.perf_counter() - t)
        batch.step(action)
        obs = batch.observe()
        dist.append(obs["distances"])
        energies.append(info.get("energy", np.full(e, np.nan)))
        actions.append(action)
        if record_frames:
            frames.append(obs["frames"])
        if progress is not None:
            progress(1)
    return Trajectories(controller.name, np.stack(dist, 1), np.stack(energies, 1).astype(np.float64),
                        np.stack(actions, 1), np.asarray(seconds), controller.model_steps,
                        np.stack(frames, 1) if record_frames else None)
