"""Goal-image planning on the table-top push task from a contact start: latent CEM with the demo's world model
vs baselines (the settings of configs/plan/reach.py otherwise).

  jepa eval-planner --config configs/plan/push.py --workdir runs/plan/push
  jepa plan --config configs/plan/push.py --workdir runs/plan/push_one --episode 0
"""
import ml_collections

from configs.plan import reach


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = reach.get_config(arg)
    c.task = "push"
    # env kwargs: the closed gripper starts 3-5 cm behind the cube; the goal is 4 steps of the push expert from there
    # (the cube moves about 10-17 cm), in an image that shows at least half of the cube (PushEnv.goal_min_visible)
    c.env = ml_collections.ConfigDict(dict(start="contact", goal_steps=4))
    c.steps = 10  # the step budget: success is judged after it
    return c
