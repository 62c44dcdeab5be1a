"""The sharded train state shared by pretraining and AC training.

A train state is a pytree {'step', 'params', 'opt_state', 'rng', ...} whose parameters are sharded by their
logical axis names (jepa.sharding rules), optimizer moments like their parameters, and scalars replicated. It is
created directly in that layout by a jitted init, and described without computing anything for restores.
"""
from __future__ import annotations

from typing import Any, Callable

import jax

from jepa import sharding


class NonFiniteError(RuntimeError):
    """A step produced a non-finite loss, gradient or parameter; the state was left as it was before it."""


def base_shardings(abstract: dict, names: Any, mesh: jax.sharding.Mesh, rules: tuple) -> dict:
    """Shardings of 'step', 'params', 'opt_state' and 'rng' of an abstract state (add any other entries)."""
    p_sh = sharding.tree_shardings(abstract["params"], names, mesh, rules)
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return {"step": rep, "params": p_sh, "rng": rep,
            "opt_state": sharding.like_params_shardings(abstract["opt_state"], abstract["params"], p_sh, mesh)}


def with_shardings(abstract: Any, shard: Any) -> Any:
    """ShapeDtypeStructs carrying their shardings (the target a checkpoint restores into)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shard)


def create(init: Callable[[jax.Array], dict], key: jax.Array, shard: dict, mesh: jax.sharding.Mesh) -> dict:
    """`init(key)` run as one jitted program whose outputs are created already sharded."""
    with mesh:
        return jax.jit(init, out_shardings=shard)(key)
