"""The converters on shapes alone (`jax.eval_shape`): the same code path as on data, nothing allocated."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from jepa.convert.hf import convert_hf
from jepa.convert.original import convert_original


def _abstract(fn: Callable[[dict], tuple[dict, dict]], shapes: Mapping[str, Any]):
    """Run a converter on shapes alone under jax.eval_shape -> (configs, parameter ShapeDtypeStructs)."""
    def leaf(s):
        return jax.ShapeDtypeStruct(tuple(s.shape) if hasattr(s, "shape") else tuple(s), jnp.float32)

    def is_shape(x):
        return hasattr(x, "shape") or (isinstance(x, tuple) and all(isinstance(i, int) for i in x))

    abstract = jax.tree_util.tree_map(leaf, dict(shapes), is_leaf=is_shape)
    box = {}

    def run(sd):
        box["configs"], params = fn(sd)
        return params

    params = jax.eval_shape(run, abstract)
    return box["configs"], params


def abstract_convert_hf(shapes: Mapping[str, Any], hf_config: Mapping[str, Any], **kw):
    """`convert_hf` on {key: shape or tensor with .shape} (e.g. a model on torch's meta device): nothing allocated."""
    return _abstract(lambda sd: convert_hf(sd, hf_config, **kw), shapes)


def abstract_convert_original(ckpt_shapes: Mapping[str, Any], **kw):
    """`convert_original` on a checkpoint of shapes ({'encoder': {key: shape}, ...}): nothing allocated."""
    return _abstract(lambda ck: convert_original(ck, **kw), ckpt_shapes)
