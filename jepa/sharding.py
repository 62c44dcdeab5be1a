"""Meshes and logical-axis sharding rules.

Layers name logical axes on their parameters (`embed`, `mlp`, `qkv`, `heads`, `layers`, `norm`, ...). A rules
table -- config data -- maps logical axes to mesh axes. With the default rules, every weight matrix is sharded
FSDP-style along its `embed` dimension over the `fsdp` mesh axis and batches are split over (`data`, `fsdp`).
A logical axis whose size is not divisible by its mesh axes, or whose mesh axis is already used by another
dimension of the same array, stays replicated.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

Rules = Sequence[tuple[str, Any]]

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("act_batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("embed_in", "fsdp"),
    ("mlp", None),
    ("qkv", None),
    ("heads", None),
    ("layers", None),
    ("norm", None),
    ("classes", None),
)
BATCH_AXES = ("data", "fsdp")


def make_mesh(axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Mesh from {'data': -1, 'fsdp': 4}: one -1 axis absorbs the remaining devices. Axes are Auto."""
    devices = list(jax.devices() if devices is None else devices)
    names = tuple(axes)
    sizes = [int(v) for v in axes.values()]
    n = len(devices)
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh {dict(axes)}: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n % known:
            raise ValueError(f"mesh {dict(axes)} does not divide the {n} available devices")
        sizes[sizes.index(-1)] = n // known
    if math.prod(sizes) != n:
        raise ValueError(f"mesh {dict(axes)} has {math.prod(sizes)} devices but {n} are available "
                         f"({jax.process_count()} process(es) x {jax.local_device_count()} local devices)")
    return jax.make_mesh(tuple(sizes), names, axis_types=(AxisType.Auto,) * len(names), devices=devices)


def logical_to_mesh(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules) -> P:
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name, dim in zip(names, shape):
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a in mesh.shape)
        size = math.prod(mesh.shape[a] for a in axes) if axes else 1
        if not axes or any(a in used for a in axes) or dim % size or size == 1:
            out.append(None)
        else:
            used.update(axes)
            out.append(axes[0] if len(axes) == 1 else axes)
    return P(*out)


def logical_names(module: nnx.Module, filter_=nnx.Param) -> dict:
    """Pure dict (like nnx.to_pure_dict of the params) of each parameter's logical axis names."""
    specs = nnx.get_partition_spec(nnx.state(module, filter_))
    return jax.tree.map(lambda p: tuple(p) if isinstance(p, P) else (), nnx.to_pure_dict(specs),
                        is_leaf=lambda x: isinstance(x, P))


def tree_shardings(abstract: Any, names: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """NamedShardings for a pytree of arrays (or ShapeDtypeStructs) given the matching tree of logical names."""
    def one(x, n):
        n = tuple(n) + (None,) * (len(x.shape) - len(n))
        return NamedSharding(mesh, logical_to_mesh(n, x.shape, mesh, rules))

    return jax.tree.map(one, abstract, names, is_leaf=lambda x: isinstance(x, tuple) and all(
        isinstance(e, (str, type(None))) for e in x))


def like_params_shardings(abstract_tree: Any, params: Any, param_shardings: Any, mesh: Mesh):
    """Shardings for optimizer state: a leaf whose path ends with a parameter's path (and has its shape) gets that
    parameter's sharding (Adam moments), anything else is replicated (counts, scalars)."""
    by_path = {}
    for (path, p), s in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(param_shardings)):
        by_path[tuple(_key(k) for k in path)] = (tuple(p.shape), s)
    rep = NamedSharding(mesh, P())

    def one(path, leaf):
        keys = tuple(_key(k) for k in path)
        for i in range(len(keys)):
            hit = by_path.get(keys[i:])
            if hit and hit[0] == tuple(leaf.shape):
                return hit[1]
        return rep

    return jax.tree_util.tree_map_with_path(one, abstract_tree)


def _key(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    axes = tuple(a for a in BATCH_AXES if a in mesh.shape)
    return NamedSharding(mesh, P(axes if axes else None, *([None] * (ndim - 1))))


def per_device_bytes(tree: Any) -> int:
    """Bytes held by the first addressable device for a tree of jax.Arrays."""
    dev = jax.local_devices()[0]
    total = 0
    for x in jax.tree.leaves(tree):
        for shard in x.addressable_shards:
            if shard.device == dev:
                total += shard.data.nbytes
    return total


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Process-local numpy batch -> global jax.Arrays split over the batch axes (one global batch per step)."""
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), np.asarray(v))
            for k, v in local.items()}
