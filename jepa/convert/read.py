"""Reading checkpoint files: Meta's `.pt` (torch.load, weights only) and transformers directories (safetensors)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from jepa.convert.statedict import ConversionError


def read_original(path: str | Path) -> dict[str, Any]:
    """torch.load a Meta checkpoint (weights only, on CPU). Tensors stay torch tensors until converted."""
    try:
        import torch
    except ImportError:
        raise ConversionError("reading original .pt checkpoints needs torch (a CPU build is enough)") from None
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors have many types
        raise ConversionError(f"{path}: cannot load with torch.load(weights_only=True): {e}") from None
    if not isinstance(ckpt, Mapping):
        raise ConversionError(f"{path}: expected a dict of state dicts, got {type(ckpt).__name__}")
    return dict(ckpt)


def read_hf(directory: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(state dict of numpy arrays, config.json) of a transformers model directory (safetensors, maybe sharded)."""
    from safetensors.numpy import load_file

    d = Path(directory)
    cfg_file = d / "config.json"
    if not cfg_file.is_file():
        raise ConversionError(f"{d}: no config.json (expected a transformers model directory)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{cfg_file}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if cfg.get("model_type") not in (None, "vjepa2"):
        raise ConversionError(f"{cfg_file}: model_type={cfg.get('model_type')!r}, expected 'vjepa2'")
    single, index = d / "model.safetensors", d / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = sorted({d / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        raise ConversionError(f"{d}: no model.safetensors or model.safetensors.index.json "
                              "(save with save_pretrained(..., safe_serialization=True))")
    sd: dict[str, np.ndarray] = {}
    for f in files:
        sd.update(load_file(f))
    return sd, cfg
