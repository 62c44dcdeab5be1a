"""Simulated robot episodes in RLDS form (tensorflow-datasets builder; see robot_episodes_dataset_builder.py)."""
from data.robot_episodes.robot_episodes_dataset_builder import Builder, collect_episode, observe

__all__ = ["Builder", "collect_episode", "observe"]
