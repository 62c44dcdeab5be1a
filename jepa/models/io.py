"""The model bundle: the on-disk format every `jepa` tool reads and writes.

A bundle is a directory:

    bundle/
      config.json        {"format": {"name": "jepa-bundle", "version": 1, "classes": {"encoder": "ViTConfig", ...}},
                          "encoder": ViTConfig.to_dict(), "predictor": ..., "ac_predictor": ..., "probe": ...,
                          "meta": {...}}                       (any subset of the models)
      encoder/           orbax checkpoint (StandardCheckpointer) of nnx.state(encoder, nnx.Param) as a plain
      predictor/         nested dict of arrays (integer keys, e.g. a probe's `heads`, stored as strings)
      ...

Each model entry of config.json is exactly its config's `to_dict()`, so `ViTConfig.from_dict(cfg["encoder"])`
works on the raw JSON. Model classes follow the config class recorded under `format.classes` (or, for bundles
written by hand, the conventional names `encoder`, `target_encoder`, `predictor`, `ac_predictor`, `probe`).

Loading builds each model abstractly (`nnx.eval_shape`, nothing allocated), checks every stored array against it
(one error lists every missing, unexpected and mis-shaped parameter), then restores straight into the model's
parameter shapes and dtypes.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jepa.models.ac_predictor import ACPredictor
from jepa.models.config import ACPredictorConfig, PredictorConfig, ProbeConfig, ViTConfig
from jepa.models.encoder import VisionTransformer
from jepa.models.predictor import Predictor
from jepa.models.probe import AttentiveProbe

FORMAT_NAME = "jepa-bundle"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"

Config = ViTConfig | PredictorConfig | ACPredictorConfig | ProbeConfig

# config class name -> (config class, model class)
MODEL_CLASSES: dict[str, tuple[type, type]] = {
    "ViTConfig": (ViTConfig, VisionTransformer),
    "PredictorConfig": (PredictorConfig, Predictor),
    "ACPredictorConfig": (ACPredictorConfig, ACPredictor),
    "ProbeConfig": (ProbeConfig, AttentiveProbe),
}
# Conventional bundle entry names -> config class name (used when config.json carries no `format.classes`).
DEFAULT_CLASSES = {
    "encoder": "ViTConfig",
    "target_encoder": "ViTConfig",
    "predictor": "PredictorConfig",
    "ac_predictor": "ACPredictorConfig",
    "probe": "ProbeConfig",
}
_RESERVED = ("format", "meta")


class BundleError(ValueError):
    """A bundle that cannot be read or does not match its models."""


# --- configs ------------------------------------------------------------------------------------------------
def config_from_dict(cls: type, d: Mapping[str, Any]) -> Config:
    """`cls.from_dict` with JSON lists turned back into tuples (configs are frozen and must stay hashable)."""
    return cls.from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def build_model(cfg: Config, *, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """A freshly initialised model for a config."""
    _, model_cls = MODEL_CLASSES[type(cfg).__name__]
    return model_cls(cfg, rngs=rngs or nnx.Rngs(0))


def abstract_model(cfg: Config) -> nnx.Module:
    """The model with ShapeDtypeStruct leaves instead of arrays (`nnx.eval_shape`: no allocation, no compute)."""
    _, model_cls = MODEL_CLASSES[type(cfg).__name__]
    return nnx.eval_shape(lambda: model_cls(cfg, rngs=nnx.Rngs(0)))


def param_shapes(cfg: Config) -> dict:
    """Nested dict (string keys) of the model's parameter ShapeDtypeStructs."""
    return _str_keys(nnx.to_pure_dict(nnx.state(abstract_model(cfg), nnx.Param)))


def read_bundle_config(path: str | os.PathLike) -> tuple[dict[str, Config], dict[str, Any]]:
    """(configs by model name, meta) of a bundle, from its config.json."""
    f = Path(path) / CONFIG_FILE
    if not f.is_file():
        raise BundleError(f"{path}: not a model bundle (no {CONFIG_FILE})")
    try:
        raw = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{f}: invalid JSON at line {e.lineno}: {e.msg}") from None
    classes = dict(DEFAULT_CLASSES)
    classes.update((raw.get("format") or {}).get("classes", {}))
    configs = {}
    for name, d in raw.items():
        if name in _RESERVED:
            continue
        cls_name = classes.get(name)
        if cls_name not in MODEL_CLASSES:
            raise BundleError(f"{f}: entry {name!r} has no known config class (got {cls_name!r}); "
                              f"known: {sorted(MODEL_CLASSES)}")
        try:
            configs[name] = config_from_dict(MODEL_CLASSES[cls_name][0], d)
        except (TypeError, ValueError) as e:
            raise BundleError(f"{f}: entry {name!r}: {e}") from None
    return configs, dict(raw.get("meta") or {})


# --- saving -------------------------------------------------------------------------------------------------
def save_bundle(path: str | os.PathLike, models: Mapping[str, nnx.Module], meta: Mapping[str, Any] | None = None,
                *, overwrite: bool = False) -> Path:
    """Save models (each must have a `.cfg`) and free-form JSON `meta` as a bundle at `path`."""
    configs, params = {}, {}
    for name, model in models.items():
        cfg = getattr(model, "cfg", None)
        if type(cfg).__name__ not in MODEL_CLASSES:
            raise BundleError(f"model {name!r} ({type(model).__name__}) has no known config `.cfg`")
        configs[name] = cfg
        params[name] = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return save_bundle_params(path, configs, params, meta, overwrite=overwrite)


def save_bundle_params(path: str | os.PathLike, configs: Mapping[str, Config], params: Mapping[str, Mapping],
                       meta: Mapping[str, Any] | None = None, *, overwrite: bool = False,
                       check: bool = True) -> Path:
    """Save already-extracted parameter trees (numpy or jax arrays) with their configs as a bundle.

    With `check`, every tree is validated against its model's abstract shapes first, so a bundle that
    would not load is never written.
    """
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    if set(configs) != set(params):
        raise BundleError(f"configs {sorted(configs)} and params {sorted(params)} name different models")
    for name in configs:
        if name in _RESERVED or not name.isidentifier():
            raise BundleError(f"invalid model name {name!r} (reserved or not an identifier)")
    if check:
        for name, cfg in configs.items():
            _check_tree(_str_keys(params[name]), param_shapes(cfg), f"{path}/{name}", check_dtype=False)
    if path.exists():
        if any(path.iterdir()) and not overwrite:
            raise BundleError(f"{path} exists and is not empty (pass overwrite=True / --overwrite)")
        if overwrite:
            shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "format": {"name": FORMAT_NAME, "version": FORMAT_VERSION,
                   "classes": {n: type(c).__name__ for n, c in configs.items()}},
    }
    doc.update({n: c.to_dict() for n, c in configs.items()})
    doc["meta"] = dict(meta or {})
    ckptr = ocp.StandardCheckpointer()
    for name in configs:
        ckptr.save(path / name, _str_keys(params[name]))
    ckptr.wait_until_finished()
    ckptr.close()
    (path / CONFIG_FILE).write_text(json.dumps(doc, indent=2, sort_keys=False, default=_json_default) + "\n")
    return path


# --- loading ------------------------------------------------------------------------------------------------
def load_bundle(
    path: str | os.PathLike,
    names: list[str] | tuple[str, ...] | None = None,
    *,
    dtype: str | None = None,
    param_dtype: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    sharding: Callable[[str, dict], Any] | None = None,
) -> dict[str, nnx.Module]:
    """Load models from a bundle.

    names: models to load (default: all in the bundle).
    dtype / param_dtype: override every loaded config's compute / parameter dtype (parameters are cast on restore).
    overrides: per-model config overrides, e.g. {"encoder": {"remat": True}}; only fields that do not change
        parameter shapes are sensible here (shape changes are reported as mismatches).
    sharding: optional fn(name, abstract_params) -> tree of jax.sharding.Sharding (same structure) placing
        each restored array; default: the first device.
    """
    path = Path(path).absolute()
    configs, _ = read_bundle_config(path)
    names = list(configs) if names is None else list(names)
    unknown = [n for n in names if n not in configs]
    if unknown:
        raise BundleError(f"{path}: no model(s) {unknown} in the bundle; it holds {sorted(configs)}")
    overrides = dict(overrides or {})
    bad = sorted(set(overrides) - set(names))
    if bad:
        raise BundleError(f"overrides for model(s) {bad} that are not being loaded ({names})")
    out = {}
    for name in names:
        cfg = configs[name]
        kw = dict(overrides.get(name, {}))
        if dtype is not None:
            kw.setdefault("dtype", dtype)
        if param_dtype is not None:
            kw.setdefault("param_dtype", param_dtype)
        cfg = cfg.replace(**kw) if kw else cfg
        abstract = abstract_model(cfg)
        graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
        if jax.tree_util.tree_leaves(rest):
            raise BundleError(f"{type(abstract).__name__} has non-parameter state; bundles hold parameters only")
        target = _str_keys(nnx.to_pure_dict(params))
        shardings = sharding(name, target) if sharding is not None else None
        restored = restore_params(path / name, target, shardings)
        nnx.replace_by_pure_dict(params, restored)
        out[name] = nnx.merge(graphdef, params, rest)
    return out


def restore_params(directory: str | os.PathLike, target: Mapping, shardings: Any = None) -> dict:
    """Restore one stored parameter tree into `target` (nested dict of ShapeDtypeStructs / arrays).

    Every stored array is checked against the target first (missing, unexpected, mis-shaped: one error listing
    all); values are cast to the target dtypes and placed with `shardings` (default: first device).
    """
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise BundleError(f"{directory}: missing parameter checkpoint")
    ckptr = ocp.StandardCheckpointer()
    try:
        stored = ckptr.metadata(directory).item_metadata.tree
        target = _str_keys(target)
        _check_tree(stored, target, str(directory), check_dtype=False)
        if shardings is None:
            dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            shardings = jax.tree_util.tree_map(lambda _: dev, target)
        abstract = jax.tree_util.tree_map(
            lambda t, s: jax.ShapeDtypeStruct(t.shape, t.dtype, sharding=s), target, _str_keys(shardings)
        )
        return ckptr.restore(directory, abstract)
    finally:
        ckptr.close()


# --- helpers ------------------------------------------------------------------------------------------------
def _str_keys(tree):
    if isinstance(tree, Mapping):
        return {str(k): _str_keys(v) for k, v in tree.items()}
    return tree


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {'a/b/c': leaf}."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _check_tree(got: Mapping, want: Mapping, where: str, *, check_dtype: bool) -> None:
    """One error listing every missing, unexpected and mis-shaped leaf of `got` relative to `want`."""
    g, w = flatten(got), flatten(want)
    missing = sorted(set(w) - set(g))
    unexpected = sorted(set(g) - set(w))
    misshaped = [
        f"{k}: stored {tuple(g[k].shape)} vs model {tuple(w[k].shape)}"
        for k in sorted(set(g) & set(w))
        if tuple(g[k].shape) != tuple(w[k].shape)
    ]
    if check_dtype:
        misshaped += [f"{k}: dtype {g[k].dtype} vs {w[k].dtype}" for k in sorted(set(g) & set(w))
                      if np.dtype(g[k].dtype) != np.dtype(w[k].dtype)]
    if missing or unexpected or misshaped:
        lines = [f"{where}: parameters do not match the model"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines += [f"    {x}" for x in items]
        raise BundleError("\n".join(lines))


def _json_default(x):
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, (jnp.dtype, np.dtype)):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


__all__ = [
    "BundleError", "MODEL_CLASSES", "abstract_model", "build_model", "config_from_dict", "flatten", "load_bundle",
    "param_shapes", "read_bundle_config", "restore_params", "save_bundle", "save_bundle_params",
]
