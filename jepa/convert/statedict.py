"""Flat state dicts (key -> array or torch tensor) read with bookkeeping, and the one error every problem goes into.

`Reader` hands out arrays by key and expected shape, recording what is missing, mis-shaped or inconsistent; keys
never read are unexpected. `raise_if_problems` turns the records of all readers into ONE `ConversionError`, so a
checkpoint is never loaded partially. Arrays become numpy float32 (floating) without importing torch; under
`jax.eval_shape` (the shapes-only converters) they stay abstract and `array_module` picks jax.numpy.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, Any]


class ConversionError(ValueError):
    """A checkpoint that does not match the expected layout; the message lists every problem."""


# --- reading a flat state dict with bookkeeping -------------------------------------------------------------
def is_abstract(a) -> bool:
    return isinstance(a, jax.core.Tracer)


def array_module(*arrays):
    """numpy for data; jax.numpy while tracing shapes (`abstract_convert_*`: same code path, nothing allocated)."""
    return jnp if any(is_abstract(a) for a in arrays) else np


def to_numpy(v) -> np.ndarray:
    """numpy / ml_dtypes / torch tensor -> float32 (floating) or native numpy, without importing torch."""
    if is_abstract(v):
        return v.astype(jnp.float32)
    if hasattr(v, "detach"):  # torch.Tensor
        v = v.detach().cpu()
        v = v.float() if v.is_floating_point() else v
        v = v.numpy()
    a = np.asarray(v)
    if a.dtype.kind == "f" or a.dtype.name == "bfloat16":
        a = a.astype(np.float32)
    return a


class Reader:
    """Reads keys of one flat state dict, recording missing and mis-shaped keys; the rest are unexpected."""

    def __init__(self, sd: Mapping[str, Any], where: str):
        self.sd, self.where = sd, where
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.misshaped: list[str] = []
        self.problems: list[str] = []  # other problems (configs that disagree with the weights, ...)

    def has(self, key: str) -> bool:
        return key in self.sd

    def shape(self, key: str) -> tuple[int, ...] | None:
        return tuple(self.sd[key].shape) if key in self.sd else None

    def count(self, prefix: str) -> int:
        """1 + the largest i of keys `{prefix}.{i}` or `{prefix}.{i}.*` (0 if none)."""
        pat = re.compile(rf"^{re.escape(prefix)}\.(\d+)(\.|$)")
        ids = [int(m.group(1)) for k in self.sd if (m := pat.match(k))]
        return max(ids) + 1 if ids else 0

    def get(self, key: str, shape: Sequence[int]) -> np.ndarray:
        shape = tuple(int(s) for s in shape)
        if key not in self.sd:
            self.missing.append(f"{key} {shape}")
            return np.zeros(shape, np.float32)
        self.used.add(key)
        a = to_numpy(self.sd[key])
        if a.shape != shape:
            self.misshaped.append(f"{key}: {a.shape}, expected {shape}")
            return np.zeros(shape, np.float32)
        return a

    def ignore(self, *keys: str) -> None:
        self.used.update(k for k in keys if k in self.sd)

    def report(self) -> list[str]:
        unexpected = sorted(set(self.sd) - self.used)
        lines = []
        for title, items in (("missing", self.missing), ("unexpected", unexpected), ("mis-shaped", self.misshaped),
                             ("inconsistent", self.problems)):
            if items:
                lines.append(f"  {self.where}: {title} ({len(items)}):")
                lines += [f"    {x}" for x in items]
        return lines


def raise_if_problems(readers: Sequence[Reader], source: str) -> None:
    lines = [line for r in readers for line in r.report()]
    if lines:
        head = f"{source}: the checkpoint does not match the expected V-JEPA 2 layout"
        raise ConversionError("\n".join([head, *lines]))


def require_keys(r: Reader, keys: Sequence[str], what: str, source: str) -> None:
    """Keys the configs are inferred from: without them nothing else can be checked."""
    absent = [k for k in keys if not r.has(k)]
    if absent:
        raise ConversionError(f"{source}: {r.where}: cannot infer the {what} config; missing key(s): {absent} "
                              f"(keys present: {sample_keys(r.sd)})")


def sample_keys(sd: Mapping, n: int = 8) -> str:
    keys = sorted(sd)
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")



def strip_prefixes(sd: Mapping[str, Any], where: str) -> tuple[dict[str, Any], str]:
    """Drop DDP / wrapper prefixes (`module.`, `backbone.`) from the front of every key.

    Returns the stripped dict and a note naming the removed prefixes (for error messages).
    """
    out: dict[str, Any] = {}
    removed: set[str] = set()
    for k, v in sd.items():
        k2 = k
        for p in ("module.", "backbone.", "module."):
            k2 = k2[len(p):] if k2.startswith(p) else k2
        if k2 in out:
            raise ConversionError(f"{where}: keys collide after removing prefixes: {k!r} -> {k2!r}")
        removed.add(k[: len(k) - len(k2)])
        out[k2] = v
    removed.discard("")
    note = f" (keys shown without their {' / '.join(repr(r) for r in sorted(removed))} prefix)" if removed else ""
    return out, note
