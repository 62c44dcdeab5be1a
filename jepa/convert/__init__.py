"""`jepa convert`: import released V-JEPA 2 checkpoints into a model bundle (see `jepa.models.io`).

Two sources:

* ``--from original``: Meta's PyTorch checkpoints (``torch.load`` of a dict with ``encoder`` / ``target_encoder`` /
  ``predictor``; pretrain keys are prefixed ``module.backbone.``, AC keys ``module.``; probe checkpoints hold a
  ``classifiers`` list). Needs torch (only to unpickle the file).
* ``--from hf``: a transformers directory (``config.json`` + ``model.safetensors`` or a sharded index) of
  ``VJEPA2Model`` or ``VJEPA2ForVideoClassification``; read with ``safetensors.numpy`` (no torch).

Model configs are inferred from the checkpoint's shapes (width, depth, MLP width, patch, tubelet, mask tokens, action
and state sizes). Head counts are not visible in the weights: transformers checkpoints carry them in config.json;
for original checkpoints they come from ``--heads`` / ``--preset`` or the released width -> heads mapping.

Every problem of a checkpoint (missing, unexpected or mis-shaped keys; configs that disagree with the weights) is
reported in ONE error listing all of them; nothing is ever loaded partially. Only ``pos_embed`` /
``predictor_pos_embed`` (unused sin-cos tables of RoPE models) and an unused AC ``extrinsics_encoder`` are ignored.

The conversion functions (`convert_original`, `convert_hf`) are pure: nested dicts of arrays in, (configs, parameter
trees of numpy arrays) out. File reading is separate (`read_original`, `read_hf`).

Modules: `read` (checkpoint files -> state dicts), `statedict` (reading a flat state dict with bookkeeping; the one
`ConversionError`), `layouts` (PyTorch parameter layouts -> ours, block name tables, released head counts),
`original` and `hf` (the mapping of each checkpoint format, per model kind), `shapes` (the same on shapes alone)
and `cli` (`jepa convert`, also `python -m jepa.convert`).
"""
from jepa.convert.cli import build_parser, main
from jepa.convert.hf import convert_hf, detect_hf_kind, hf_meta
from jepa.convert.layouts import (AC_PREDICTOR_HEADS, ENCODER_HEADS, HF_BLOCK, HF_POOLER_BLOCK, IGNORED_KEYS,
                                  ORIGINAL_BLOCK, PREDICTOR_HEADS, PROBE_HEADS)
from jepa.convert.original import convert_original, detect_original_kind
from jepa.convert.read import read_hf, read_original
from jepa.convert.shapes import abstract_convert_hf, abstract_convert_original
from jepa.convert.statedict import ConversionError, Params

__all__ = [
    "AC_PREDICTOR_HEADS", "ENCODER_HEADS", "HF_BLOCK", "HF_POOLER_BLOCK", "IGNORED_KEYS", "ORIGINAL_BLOCK",
    "PREDICTOR_HEADS", "PROBE_HEADS", "ConversionError", "Params", "abstract_convert_hf", "abstract_convert_original",
    "build_parser", "convert_hf", "convert_original", "detect_hf_kind", "detect_original_kind", "hf_meta", "main",
    "read_hf", "read_original",
]
