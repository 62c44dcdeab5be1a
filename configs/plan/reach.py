"""Goal-image planning on the table-top reach task: latent CEM with the demo's world model vs baselines.

  jepa eval-planner --config configs/plan/reach.py --workdir runs/plan/reach
  jepa plan --config configs/plan/reach.py --workdir runs/plan/reach_one --episode 0
"""
import dataclasses

import ml_collections

from planning.cem import CEMConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "reach"  # planning.envs short name or id
    c.env = ml_collections.ConfigDict(dict(goal_steps=5))  # env kwargs: the goal is 5 steps of the reach expert
    c.image_size = 64
    c.world_model = "runs/demo/ac/model"  # a `jepa train-ac` bundle
    c.episodes = 20
    c.seed = 1000  # episode i resets with seed + i (seeds with a goal closer than min_distance are passed over)
    c.min_distance = 0.08  # m
    c.steps = 8  # the step budget: success is judged after it
    c.context = 1  # observed frames the predictor sees per re-plan
    c.action = ml_collections.ConfigDict(dict(dims="auto", max_xyz=0.0))  # 0: the env's own step bound
    # The world model's products at plan time: None (float32) or 'bfloat16' (bf16 operands, float32 accumulation;
    # re-plans ~1.4-1.7x faster on CPUs with AMX / AVX512-BF16, energies within ~1e-4 relative; README: its success).
    c.matmul_dtype = None
    c.cem = dataclasses.asdict(CEMConfig(samples=128, elites=12, iterations=3, horizon=1))
    c.methods = ["latent_cem", "oracle_cem", "random", "zero"]
    c.report = ml_collections.ConfigDict(dict(gifs=3, landscape_grid=21, correlation_samples=64))
    return c
