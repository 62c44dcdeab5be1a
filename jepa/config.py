"""Experiment configs: `get_config(arg)` files returning locked ml_collections ConfigDicts, plus overrides.

`load_config('configs/pretrain/demo.py:smoke', ['--config.train.steps=10'])` imports the file, calls
`get_config('smoke')` and applies `--config.a.b=value` overrides. Values are parsed as Python literals and
type-checked against the existing field (the config is locked, so unknown keys fail with one clear message).
"""
from __future__ import annotations

import ast
import importlib.util
import os
from typing import Sequence

import ml_collections


class ConfigError(ValueError):
    """A config that cannot be used: a bad file, override or value. The message names the file or key."""


def _import_file(path: str):
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"_jepa_config_{abs(hash(path))}", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # a config file is the user's code: name it and what went wrong
        raise ConfigError(f"config file {path!r} failed to load: {type(e).__name__}: {e}") from e
    if not hasattr(mod, "get_config"):
        raise ConfigError(f"config file {path!r} has no get_config()")
    return mod


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    path, _, arg = spec.partition(":")
    mod = _import_file(path)
    try:
        cfg = mod.get_config(arg) if arg else mod.get_config()
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"config file {path!r}: get_config({arg!r}) failed: {type(e).__name__}: {e}") from e
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    cfg.lock()
    apply_overrides(cfg, overrides)
    return cfg


def _parse(raw: str):
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # a bare string


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    for item in overrides:
        if not item.startswith("--config."):
            raise ConfigError(f"override {item!r} must look like --config.a.b=value")
        key, sep, raw = item[len("--config."):].partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} has no '=value'")
        *parents, leaf = key.split(".")
        node = cfg
        for i, p in enumerate(parents):
            if p not in node:
                raise ConfigError(f"unknown config key {'.'.join(parents[:i + 1])!r} in override {item!r}")
            node = node[p]
            if not isinstance(node, (ml_collections.ConfigDict, dict)):
                raise ConfigError(f"override {item!r}: {'.'.join(parents[:i + 1])!r} is a value, not a group of keys")
        if leaf not in node:
            raise ConfigError(f"unknown config key {key!r} in override {item!r}; known under "
                              f"{'.'.join(parents) or 'config'}: {sorted(node.keys())}")
        value = _parse(raw)
        old = node[leaf]
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(old, tuple) and isinstance(value, list):
            value = tuple(value)
        if old is not None and not isinstance(value, type(old)) and not (
                isinstance(old, (list, tuple)) and isinstance(value, (list, tuple))):
            raise ConfigError(f"override {item!r}: {key} takes {type(old).__name__}, got {type(value).__name__} "
                              f"{value!r}")
        with node.unlocked() if hasattr(node, "unlocked") else _null():
            node[leaf] = value


def check_values(cfg: ml_collections.ConfigDict, *, positive: Sequence[str] = (), non_negative: Sequence[str] = (),
                 fractions: Sequence[str] = ()) -> list[str]:
    """What is wrong with numeric fields given by dotted keys (absent keys are skipped): `positive` must be > 0,
    `non_negative` >= 0, `fractions` in [0, 1]; returns one message per bad field, naming it."""
    errors = []

    def get(key):
        node = cfg
        for part in key.split("."):
            if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
                return _MISSING
            node = node[part]
        return node

    for keys, ok, need in ((positive, lambda v: v > 0, "> 0"), (non_negative, lambda v: v >= 0, ">= 0"),
                           (fractions, lambda v: 0 <= v <= 1, "in [0, 1]")):
        for key in keys:
            v = get(key)
            if v is _MISSING or v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v):
                errors.append(f"{key}={v!r} must be a number {need}")
    return errors


_MISSING = object()


def save_run_config(cfg: ml_collections.ConfigDict, workdir: str) -> None:
    """Creates a run directory and writes the config it runs with (`config.json`, process 0 only)."""
    import jax

    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(cfg.to_json_best_effort(indent=2))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def split_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate `--config.x=v` overrides from the other arguments."""
    overrides = [a for a in argv if a.startswith("--config.")]
    rest = [a for a in argv if not a.startswith("--config.")]
    return rest, overrides
