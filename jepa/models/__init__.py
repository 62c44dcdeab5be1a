"""V-JEPA 2 models in Flax NNX."""
import flax

# Parameters carry logical axis names; the trainer places them on meshes itself (jepa.sharding), so variables
# are not sharded eagerly at creation.
flax.config.update("flax_always_shard_variable", False)

from jepa.models.ac_predictor import ACPredictor
from jepa.models.config import (
    ENCODERS,
    ACPredictorConfig,
    PredictorConfig,
    ProbeConfig,
    ViTConfig,
    ac_predictor_for,
    encoder_preset,
    predictor_for,
)
from jepa.models.encoder import VisionTransformer
from jepa.models.predictor import Predictor
from jepa.models.probe import AttentiveProbe

__all__ = [
    "ENCODERS", "ACPredictor", "ACPredictorConfig", "AttentiveProbe", "Predictor", "PredictorConfig",
    "ProbeConfig", "ViTConfig", "VisionTransformer", "ac_predictor_for", "encoder_preset", "predictor_for",
]
