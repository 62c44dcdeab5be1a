"""Simulated robot episodes in RLDS form (tensorflow-datasets builder; see robot_episodes_dataset_builder.py)."""
from .robot_episodes_dataset_builder import Builder

__all__ = ["Builder"]
