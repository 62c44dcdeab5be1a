"""Goal-image planning on gymnasium's Reacher-v5 (jepa/GoalReacher-v0) with a world model trained on its own episodes
(configs/ac/reacher.py): latent CEM over joint torques vs baselines.

  jepa eval-planner --config configs/plan/reacher.py --workdir runs/reacher/plan
"""
import dataclasses

import ml_collections

from planning.cem import CEMConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "reacher"
    c.env = ml_collections.ConfigDict(dict(goal_steps=25))  # the goal: 25 steps (0.5 s) of the IK expert
    c.image_size = 64
    c.world_model = "runs/reacher/ac/model"
    c.episodes = 20
    c.seed = 1000
    c.min_distance = 0.04  # m (success: fingertip within 2 cm)
    c.steps = 10  # re-plans; each executes one model step = frame_stride (5) env steps
    c.context = 2  # two observed frames: the arm's velocity is in them
    c.action = ml_collections.ConfigDict(dict(dims="all", max_xyz=0.0))  # every joint torque within the env's bounds
    c.matmul_dtype = None  # the world model's products at plan time (see configs/plan/reach.py)
    c.cem = dataclasses.asdict(CEMConfig(samples=64, elites=8, iterations=3, horizon=2))
    c.methods = ["latent_cem", "oracle_cem", "random", "zero"]
    c.report = ml_collections.ConfigDict(dict(gifs=3, landscape_grid=21, correlation_samples=64))
    return c
