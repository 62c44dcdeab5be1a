"""Transformer building blocks shared by every V-JEPA 2 model: init, 3-D RoPE, attention, pre-LN blocks.

Parameters carry logical axis names (`embed`, `mlp`, `qkv`, `heads`, `layers`, ...) through
`nnx.with_partitioning`; `jepa.sharding` maps them to mesh axes. Layers never name mesh axes.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


# --- Initialisation ----------------------------------------------------------------------------------------
def trunc_normal(std: float = 0.02, bound: float = 2.0):
    """The reference's `trunc_normal_(std)`: normal(0, std) truncated to ABSOLUTE bounds [-bound, bound]."""

    def init(key, shape, dtype=jnp.float32):
        return (jax.random.truncated_normal(key, -bound / std, bound / std, shape, jnp.float32) * std).astype(dtype)

    return init


# --- Low-precision matmuls ----------------------------------------------------------------------------------------
def _rows(x: Array) -> Array:
    """x [M, K] -> x.T [K, M] laid out row-major in memory: a real copy, which XLA cannot fold into the consuming
    dot as a transposed operand (the reshapes keep the transpose from being a layout change)."""
    m, k = x.shape
    return x.reshape(m, k, 1).transpose(1, 0, 2).reshape(k, m)


def _dot(a: Array, b: Array, contract_b: int, dtype) -> Array:
    """a [M, K] . b (contracting b's dim `contract_b`) with operands cast to `dtype`, accumulated in float32."""
    return jax.lax.dot_general(a.astype(dtype), b.astype(dtype), (((1,), (contract_b,)), ((), ())),
                               preferred_element_type=jnp.float32)


def matmul(a: Array, b: Array, dtype, transpose_b: bool = False) -> Array:
    """a [..., K] @ b [K, N] (or @ b.T for b [N, K] with transpose_b) with both operands rounded to `dtype`
    (bfloat16), products accumulated in float32 and the result in float32 (a float32 `a` keeps its float32 value
    path: LayerNorm, softmax, residuals stay in float32, as under torch.autocast).

    Written out for XLA:CPU, which runs a bfloat16 dot at the speed of the core's matrix units (AMX / AVX512-BF16
    through YNNPACK: ~5x its float32 GEMM on a Sapphire Rapids core) only as a [M, K] . b [K, N] or . b [N, K] with a
    float32 result; a bfloat16 result or an operand contracted on its leading dim (the weight gradient x^T . g) is
    silently upcast and runs at float32 speed. So both gradients are written in those two forms, with a real
    row-major transposed copy where the leading dim is contracted. Gradients are float32, in the operands' dtypes.
    On GPU / TPU it is the plain dot_general of the cast operands (their compilers pick the layouts)."""
    if jax.default_backend() == "cpu":
        return _cpu_matmul(a, b, dtype, transpose_b)
    return _matmul_fwd(a, b, dtype, transpose_b)[0]  # differentiated by JAX


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _cpu_matmul(a: Array, b: Array, dtype, transpose_b: bool) -> Array:
    return _matmul_fwd(a, b, dtype, transpose_b)[0]


def _matmul_fwd(a, b, dtype, transpose_b):
    out = _dot(a.reshape(-1, a.shape[-1]), b, 1 if transpose_b else 0, dtype)
    return out.reshape(*a.shape[:-1], out.shape[-1]), (a, b)


def _matmul_bwd(dtype, transpose_b, res, g):
    a, b = res
    a2, g2 = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
    if transpose_b:  # out = a . b^T: da = g . b, db = g^T . a
        da, db = _dot(g2, b, 0, dtype), _dot(_rows(g2), a2, 0, dtype)
    else:  # out = a . b: da = g . b^T, db = a^T . g
        da, db = _dot(g2, b, 1, dtype), _dot(_rows(a2), g2, 0, dtype)
    return da.reshape(a.shape).astype(a.dtype), db.astype(b.dtype)


_cpu_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _low_precision_dot(dtype):
    """nnx.Linear's dot_general computing the dense layer's product with `matmul` in `dtype`; anything but the dense
    contraction (lhs's last dim with rhs's first, no batch dims) stays a plain `lax.dot_general`."""

    def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kw):
        (lc, rc), (lb, rb) = dimension_numbers
        if tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb and not rb and rhs.ndim == 2:
            return matmul(lhs, rhs, dtype).astype(jnp.result_type(lhs, rhs))
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type, **kw)

    return dot_general


def dense(
    din: int,
    dout: int,
    names: tuple[str | None, str | None],
    *,
    rngs: nnx.Rngs,
    std: float = 0.02,
    bias: bool = True,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    matmul_dtype=None,
) -> nnx.Linear:
    """Linear layer with the reference init (trunc-normal kernel, zero bias) and logical axis names; with
    `matmul_dtype` (e.g. bfloat16) its product runs in that precision (`matmul`), the rest in `dtype`."""
    return nnx.Linear(
        din,
        dout,
        use_bias=bias,
        kernel_init=nnx.with_partitioning(trunc_normal(std), names),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (names[1],)),
        dtype=dtype,
        param_dtype=param_dtype,
        dot_general=jax.lax.dot_general if matmul_dtype is None else _low_precision_dot(jnp.dtype(matmul_dtype)),
        rngs=rngs,
    )


def layer_norm(dim: int, eps: float, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32, affine=True):
    return nnx.LayerNorm(
        dim,
        epsilon=eps,
        use_bias=affine,
        use_scale=affine,
        scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("norm",)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("norm",)),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def as_dtype(name) -> jnp.dtype:
    return jnp.dtype(name)


def matmul_dtype_of(cfg):
    """A model config's `matmul_dtype` as a dtype, or None (products in the compute dtype)."""
    name = getattr(cfg, "matmul_dtype", None)
    return None if name is None else jnp.dtype(name)


# --- 3-D RoPE ----------------------------------------------------------------------------------------------
def rope_sub_dim(head_dim: int) -> int:
    """Dims rotated per axis (t, h, w): 2 * ((hd // 3) // 2). The remaining hd - 3 * Ds dims are not rotated."""
    return 2 * ((head_dim // 3) // 2)


def grid_positions(idx: Array, grid: tuple[int, int, int]) -> Array:
    """Flat token ids in raster order (t, h, w) -> float positions [..., 3] on a (T', H', W') grid."""
    _, gh, gw = grid
    t = idx // (gh * gw)
    rem = idx - t * (gh * gw)
    h = rem // gw
    w = rem - h * gw
    return jnp.stack([t, h, w], axis=-1).astype(jnp.float32)


def rope_tables(pos: Array, head_dim: int, mode: str = "reference", dtype=jnp.float32) -> tuple[Array, Array]:
    """cos/sin tables [..., N, 1, head_dim] for positions [..., N, 3]: one sub-block of Ds dims each for t, h, w,
    then cos 1 and sin 0 over the head_dim - 3*Ds dims that are not rotated ([..., N, 1, 3*Ds] for an odd head_dim).

    mode='reference' reproduces the released weights: frequencies are expanded by CONCATENATION
    ([f0..f_{k-1}, f0..f_{k-1}]) while the rotation partner is the adjacent element, which is not a true rotation.
    mode='rotation' expands by interleaving ([f0, f0, f1, f1, ...]), a true rotation of adjacent pairs.
    Angles are computed in `dtype` (the reference computes them in the activation dtype).
    """
    ds = rope_sub_dim(head_dim)
    half = ds // 2
    omega = jnp.arange(half, dtype=dtype) / jnp.asarray(half, dtype)
    omega = 1.0 / (jnp.asarray(10000.0, dtype) ** omega)  # [half]
    freqs = pos.astype(dtype)[..., None] * omega  # [..., N, 3, half]
    if mode == "reference":
        freqs = jnp.concatenate([freqs, freqs], axis=-1)
    elif mode == "rotation":
        freqs = jnp.repeat(freqs, 2, axis=-1)
    else:
        raise ValueError(f"unknown rope mode {mode!r}")
    freqs = freqs.reshape(*freqs.shape[:-2], 3 * ds)[..., None, :]  # [..., N, 1, 3*ds]
    cos, sin = jnp.cos(freqs), jnp.sin(freqs)
    rest = head_dim - 3 * ds
    if rest and head_dim % 2 == 0:  # full-width tables: cos 1, sin 0 leave the last dims as they are
        cos = jnp.concatenate([cos, jnp.ones((*cos.shape[:-1], rest), cos.dtype)], axis=-1)
        sin = jnp.concatenate([sin, jnp.zeros((*sin.shape[:-1], rest), sin.dtype)], axis=-1)
    return cos, sin


def apply_rope(x: Array, tables: tuple[Array, Array]) -> Array:
    """x [B, N, heads, hd]: rotate the first 3*Ds dims (t | h | w sub-blocks); leave the rest untouched.

    One elementwise pass over the whole head (x * cos + partner * sin, partner[2i] = -x[2i+1],
    partner[2i+1] = x[2i]): with full-width tables the unrotated dims get cos 1 and sin 0, so no slice and
    concatenation copies are needed (they cost more than the arithmetic on CPU)."""
    cos, sin = tables
    r = cos.shape[-1]
    xr, xp = (x, None) if r == x.shape[-1] else (x[..., :r], x[..., r:])
    pairs = xr.reshape(*xr.shape[:-1], r // 2, 2)
    partner = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(xr.shape)  # y[2i]=-x[2i+1], y[2i+1]=x[2i]
    out = xr * cos.astype(x.dtype) + partner * sin.astype(x.dtype)
    return out if xp is None else jnp.concatenate([out, xp], axis=-1)


# --- Attention and blocks ----------------------------------------------------------------------------------
LOOP_BYTES = 4 * 2**20  # logits of all heads above which CPU attention loops over (example, head) ...
LOOP_MIN_HEAD = 256 * 256  # ... if one head's logits are at least this many
EXAMPLE_BYTES = 8 * 2**20  # float32 logits of one example's heads up to which the loop goes example by example


@functools.partial(jax.checkpoint, static_argnums=(4,))
def _attention_one(q: Array, k: Array, v: Array, mask: Array | None, matmul_dtype=None) -> Array:
    """One head of one example: q [Nq, hd], k / v [Nk, hd], mask [Nq, Nk] or None -> [Nq, hd]. Rematerialised:
    the backward pass recomputes the head's logits and softmax from q and k (as flash attention does) instead of
    keeping [Nq, Nk] probabilities of every head of every layer; less memory traffic and measured faster on CPU."""
    if matmul_dtype is None:
        logits = jnp.einsum("qd,kd->qk", q, k, preferred_element_type=jnp.float32)
    else:
        logits = matmul(q, k, matmul_dtype, True)
    logits = logits * jnp.float32(q.shape[-1] ** -0.5)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.float32(-0.7 * jnp.finfo(jnp.float32).max))
    probs = jax.nn.softmax(logits, axis=-1)
    if matmul_dtype is None:
        return probs.astype(v.dtype) @ v
    return matmul(probs, v, matmul_dtype).astype(v.dtype)


def _cast(x: Array, dtype) -> Array:
    """x in `dtype` (an attention product's operand in its matmul dtype), or x as it is for dtype None."""
    return x if dtype is None else x.astype(dtype)


def _attention_batched(q: Array, k: Array, v: Array, mask: Array | None, matmul_dtype=None) -> Array:
    """All heads at once, for short sequences on CPU: [B, N, heads, hd] -> [B, Nq, heads, hd].

    Heads go first ([B, heads, N, hd]) so that each product is a plain batched matmul over (example, head) whose
    operands XLA:CPU reads without strided gathers; the softmax's normalisation is applied after the weighted sum
    (o = (exp(s - max) . v) / sum exp(s - max)): a division over [Nq, hd] instead of [Nq, Nk], one pass less over
    the logits. The same function as softmax-then-weight (within float32 rounding; the max is a constant of the
    gradient, which it cancels from exactly). Measured on the planner's shapes (128 candidates x 2 heads x 65
    tokens): the forward 5x faster than the [B, N, heads, hd] einsums with a separate softmax."""
    heads_first = lambda x: x.transpose(0, 2, 1, 3)
    q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    logits = jnp.einsum("bhqd,bhkd->bhqk", _cast(heads_first(q), matmul_dtype), _cast(heads_first(k), matmul_dtype),
                        preferred_element_type=jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.float32(-0.7 * jnp.finfo(jnp.float32).max))
    weights = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
    out = jnp.einsum("bhqk,bhkd->bhqd", _cast(weights.astype(v.dtype), matmul_dtype),
                     _cast(heads_first(v), matmul_dtype), preferred_element_type=jnp.float32)
    out = out / weights.sum(-1, keepdims=True)
    return heads_first(out).astype(v.dtype)


def _attention_per_example(q: Array, k: Array, v: Array, mask: Array | None) -> Array:
    """float32 attention one example at a time, its heads batched (`_attention_batched` on [1, N, heads, hd]),
    rematerialised in the backward pass like `_attention_one`. Where one example's logits of all heads are a few MB
    (the small config: 6 heads x 512 tokens) this beats the per-head loop (measured: forward 1.4x, forward and
    backward 1.2x): fewer, larger products and fewer loop iterations. `mask`: None or 4-D [B or 1, heads or 1, Nq,
    Nk]."""
    one = jax.checkpoint(lambda q, k, v, m: _attention_batched(q[None], k[None], v[None], m, None)[0])
    if mask is None:
        return jax.lax.map(lambda a: one(*a, None), (q, k, v))
    if mask.shape[0] == 1:
        return jax.lax.map(lambda a: one(*a, mask), (q, k, v))
    per = jnp.broadcast_to(mask, (q.shape[0],) + mask.shape[1:])
    return jax.lax.map(lambda a: one(*a[:3], a[3][None]), (q, k, v, per))


def attention(q: Array, k: Array, v: Array, mask: Array | None = None, matmul_dtype=None) -> Array:
    """Scaled dot-product attention over [B, N, heads, hd]; `mask` is boolean, True where attention is allowed,
    broadcastable to [B, heads, Nq, Nk]. With `matmul_dtype` (bfloat16) the two products take operands in that
    dtype (float32 accumulation; logits and softmax stay float32).

    On GPU / TPU this is jax.nn.dot_product_attention (XLA picks fused kernels there). On CPU the same operations
    (logits in f32, scaled, masked with a large negative number, softmax, weighted sum) run one (example, head) at a
    time in a loop: one head's [Nq, Nk] logits stay in the core's cache through the softmax's passes, where all
    heads' at once (tens of MB) would stream through memory several times. Below `LOOP_BYTES` of logits in all, or
    for heads of fewer than `LOOP_MIN_HEAD` logits (short sequences: the AC predictor's steps, planning candidates),
    the loop costs more than it saves and the heads go in one batched product (`_attention_batched`); in float32,
    where one example's heads' logits fit in `EXAMPLE_BYTES`, the loop goes example by example with the heads
    batched (`_attention_per_example`).
    """
    if jax.default_backend() != "cpu":
        out = jax.nn.dot_product_attention(*(_cast(x, matmul_dtype) for x in (q, k, v)), mask=mask,
                                           scale=q.shape[-1] ** -0.5)
        return out.astype(v.dtype)
    b, nq, h, hd = q.shape
    nk = k.shape[1]
    if mask is not None:  # 4-D: [B or 1, heads or 1, Nq, Nk]
        mask = jnp.asarray(mask)
        mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    if nq * nk < LOOP_MIN_HEAD or b * h * nq * nk * 4 < LOOP_BYTES:
        return _attention_batched(q, k, v, mask, matmul_dtype)
    if matmul_dtype is None and h * nq * nk * 4 <= EXAMPLE_BYTES:
        return _attention_per_example(q, k, v, mask)
    fold = lambda x: x.transpose(0, 2, 1, 3).reshape(b * h, x.shape[1], hd)
    xs = (fold(q), fold(k), fold(v))
    if mask is None:
        out = jax.lax.map(lambda a: _attention_one(*a, None, matmul_dtype), xs)
    else:
        if mask.shape[0] == 1 and mask.shape[1] == 1:
            shared = jnp.broadcast_to(mask[0, 0], (nq, nk))
            out = jax.lax.map(lambda a: _attention_one(*a, shared, matmul_dtype), xs)
        else:
            per = jnp.broadcast_to(mask, (b, h, nq, nk)).reshape(b * h, nq, nk)
            out = jax.lax.map(lambda a: _attention_one(*a, matmul_dtype), (*xs, per))
    return out.reshape(b, h, nq, hd).transpose(0, 2, 1, 3)


def gelu(x: Array) -> Array:
    """Exact GELU as PyTorch computes it, x / 2 * (1 + erf(x / sqrt 2)). The same function as
    jax.nn.gelu(approximate=False) (within 1e-6), which goes through erfc: XLA:CPU expands erfc with an exp and
    a division where erf is one rational polynomial, ~5x the time on CPU, a tenth of a small model's step."""
    return x * 0.5 * (1.0 + jax.lax.erf(x * jnp.asarray(2 ** -0.5, x.dtype)))


class MLP(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, rngs, std, dtype, param_dtype, matmul_dtype=None):
        kw = dict(rngs=rngs, std=std, dtype=dtype, param_dtype=param_dtype, matmul_dtype=matmul_dtype)
        self.fc1 = dense(dim, hidden, ("embed", "mlp"), **kw)
        self.fc2 = dense(hidden, dim, ("mlp", "embed"), **kw)

    def __call__(self, x: Array) -> Array:
        return self.fc2(gelu(self.fc1(x)))


class SelfAttention(nnx.Module):
    """Fused-qkv multi-head self-attention with optional 3-D RoPE and boolean mask."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias=True, rngs, std, dtype, param_dtype, matmul_dtype=None):
        kw = dict(rngs=rngs, std=std, dtype=dtype, param_dtype=param_dtype, matmul_dtype=matmul_dtype)
        self.num_heads = num_heads
        self.matmul_dtype = matmul_dtype
        self.qkv = dense(dim, 3 * dim, ("embed", "qkv"), bias=qkv_bias, **kw)
        self.proj = dense(dim, dim, ("heads", "embed"), **kw)

    def qkv_heads(self, x: Array, rope: tuple[Array, Array] | None):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return q, k, v

    def __call__(self, x: Array, rope=None, mask=None) -> Array:
        q, k, v = self.qkv_heads(x, rope)
        o = attention(q, k, v, mask, self.matmul_dtype)
        return self.proj(o.reshape(x.shape))


class Block(nnx.Module):
    """Pre-LN transformer block: x += attn(LN1(x)); x += mlp(LN2(x))."""

    def __init__(self, dim, num_heads, mlp_dim, *, eps, qkv_bias=True, rngs, std=0.02, dtype=jnp.float32,
                 param_dtype=jnp.float32, matmul_dtype=None):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.norm1 = layer_norm(dim, eps, **kw)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=qkv_bias, std=std, matmul_dtype=matmul_dtype, **kw)
        self.norm2 = layer_norm(dim, eps, **kw)
        self.mlp = MLP(dim, mlp_dim, std=std, matmul_dtype=matmul_dtype, **kw)

    def __call__(self, x: Array, rope=None, mask=None) -> Array:
        x = x + self.attn(self.norm1(x), rope, mask)
        return x + self.mlp(self.norm2(x))

    def decode(self, x: Array, rope, keys: Array, values: Array, offset, mask) -> tuple[Array, Array, Array]:
        """The block on new tokens x [B, n, W] with a key/value cache [B, L, heads, hd]: the new tokens' keys and
        values are written at `offset` and the queries attend to the whole buffer under `mask` [.., n, L].
        Returns (output, keys, values) with the buffers updated."""
        q, k, v = self.attn.qkv_heads(self.norm1(x), rope)
        keys = jax.lax.dynamic_update_slice_in_dim(keys, k.astype(keys.dtype), offset, axis=1)
        values = jax.lax.dynamic_update_slice_in_dim(values, v.astype(values.dtype), offset, axis=1)
        o = attention(q, keys.astype(q.dtype), values.astype(q.dtype), mask, self.attn.matmul_dtype)
        x = x + self.attn.proj(o.reshape(x.shape))
        return x + self.mlp(self.norm2(x)), keys, values


class BlockStack(nnx.Module):
    """`depth` blocks with parameters stacked on a leading `layers` axis, run with `lax.scan`.

    Scanning keeps compile time flat in depth; `remat` checkpoints each block's activations. Parameter i of the
    stack is block i of the reference (checkpoint conversion stacks them). The reference init divides block i's
    (1-based) attn.proj and mlp.fc2 kernels by sqrt(2 i).
    """

    def __init__(self, depth: int, make_block: Callable[[nnx.Rngs], Block], *, rngs: nnx.Rngs, remat=False,
                 rescale=True, unroll=False):
        self.depth = depth
        self.remat = remat
        self.unroll = unroll

        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def create(r):
            return make_block(r)

        self.blocks = create(rngs)
        if rescale:
            scale = 1.0 / jnp.sqrt(2.0 * jnp.arange(1, depth + 1, dtype=jnp.float32))
            for kernel in (self.blocks.attn.proj.kernel, self.blocks.mlp.fc2.kernel):
                kernel.set_value((kernel[...] * scale[:, None, None]).astype(kernel.dtype))

    def __call__(self, x: Array, rope=None, mask=None, *, collect: bool = False):
        """Returns the output, and (if collect) every block's output stacked as [depth, ...]."""
        graphdef, state = nnx.split(self.blocks)

        def body(h, layer_state):
            blk = nnx.merge(graphdef, layer_state)
            out = blk(h, rope, mask)
            return out, (out if collect else None)

        if self.remat:
            body = jax.checkpoint(body, prevent_cse=False)
        x, hs = jax.lax.scan(body, x, state, unroll=self.depth if self.unroll else 1)
        return (x, hs) if collect else x

    def decode(self, x: Array, rope, keys: Array, values: Array, offset, mask) -> tuple[Array, Array, Array]:
        """Cached forward of new tokens (see `Block.decode`); keys / values are stacked per layer
        [depth, B, L, heads, hd]. Returns (output, keys, values)."""
        graphdef, state = nnx.split(self.blocks)

        def body(h, xs):
            layer_state, k, v = xs
            h, k, v = nnx.merge(graphdef, layer_state).decode(h, rope, k, v, offset, mask)
            return h, (k, v)

        x, (keys, values) = jax.lax.scan(body, x, (state, keys, values), unroll=self.depth if self.unroll else 1)
        return x, keys, values


def block_stack(cfg, *, rngs: nnx.Rngs) -> BlockStack:
    """The transformer trunk of any model config with width / depth / num_heads / mlp_dim / ln_eps / qkv_bias /
    init_std / remat / unroll / dtype / param_dtype (/ matmul_dtype) fields."""
    dtype, pdtype = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
    return BlockStack(
        cfg.depth,
        lambda r: Block(cfg.width, cfg.num_heads, cfg.mlp_dim, eps=cfg.ln_eps, qkv_bias=cfg.qkv_bias, rngs=r,
                        std=cfg.init_std, dtype=dtype, param_dtype=pdtype, matmul_dtype=matmul_dtype_of(cfg)),
        rngs=rngs,
        remat=cfg.remat,
        unroll=getattr(cfg, "unroll", False),
    )


def select_layers(hs: Array, layers: Sequence[int], depth: int) -> list[Array]:
    """Pick block outputs by index (negative indices count from the end)."""
    out = []
    for i in layers:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ValueError(f"layer index {i} out of range for depth {depth}")
        out.append(hs[j])
    return out
