"""AC predictor for gymnasium's Reacher-v5 as a goal-image task (jepa/GoalReacher-v0), trained on its own episodes.

The arm is torque-controlled, so the world model learns the env's recorded joint torques (not end-effector deltas):
one model step is `frame_stride` env steps (DINO-WM's frameskip 5), its action the 5 torques concatenated (10-d).
There is no pose to integrate from torques, so the predictor sees no proprioception (states='none'); the planner
gives it two observed frames, from which it can read the arm's velocity.

  jepa collect --task reacher --episodes 300 --steps 100 --out runs/reacher/robot
  jepa train-ac --config configs/ac/reacher.py --workdir runs/reacher/ac
  (python -m jepa.demo --stages reacher does all three steps, then `jepa eval-planner --config configs/plan/reacher.py`)
"""
import ml_collections

from configs.ac import demo


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = demo.get_config(arg)
    c.data.paths = ["runs/reacher/robot/robot_episodes/reacher/1.0.0"]
    c.data.frame_stride = 5  # 0.1 s per model step (Reacher-v5 steps at 50 Hz)
    c.data.actions = "recorded"  # 5 joint-torque pairs per model step, as the env executes them
    c.data.states = "none"
    # The planner sees 2 frames (velocity): train on 4-frame clips (1-3 frames of context) with a 2-step rollout.
    c.data.clip_frames = 4
    c.train.rollout_steps = 2
    c.train.batch_size = 8 if arg == "smoke" else 16
    c.train.steps = 20 if arg == "smoke" else 1500
    c.optim.cooldown_steps = 10 if arg == "smoke" else 300
    return c
