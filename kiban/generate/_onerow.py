"""One decoding step of a Llama-family model for a single sequence, compiled with numba.

At batch 1 a step is ~17 matrix-vector products and ~70 small elementwise ops; through torch
each small op costs a dispatch (~5-8 us here), together about as much as the products. This
kernel runs the whole step — RMSNorm, q/k/v, rotary embedding, the KV-cache write, attention
over the written slots, the output projection, the SiLU-gated MLP, the residuals and the final
norm and ``lm_head`` — in one compiled call; the products go to the BLAS through ``np.dot``.

The arithmetic is Hugging Face's (RMSNorm in the weights' dtype for float32, ``x * cos +
rotate_half(x) * sin`` with the model's own cos/sin rows, softmax over ``q.k * scaling``, heads
grouped as ``repeat_kv`` groups them); sums run in another order than torch's kernels, so
logits agree to rounding, and `LlamaEngine` checks greedy tokens against ``generate`` in the
tests. Layer weights come as a tuple of per-layer tuples of the engine's own arrays (views of
its torch tensors: nothing is copied). float32 only.
"""

from __future__ import annotations

import numpy as np
from numba import njit

ONE = np.float32(1.0)
ZERO = np.float32(0.0)


@njit(cache=True, fastmath=False)
def _rms_norm(x, weight, eps):
    variance = ZERO
    for i in range(x.shape[0]):
        variance += x[i] * x[i]
    scale = ONE / np.sqrt(variance / np.float32(x.shape[0]) + eps)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = weight[i] * (x[i] * scale)
    return out


@njit(cache=True, fastmath=False)
def _rope_(v, cos, sin, heads, head_dim, offset):
    """In place: rotate heads [0, heads) of ``v`` starting at column ``offset`` (the table
    ``sin`` has its first half negated, so ``rotate_half`` is a swap of the halves)."""
    half = head_dim // 2
    for h in range(heads):
        base = offset + h * head_dim
        for i in range(half):
            a = v[base + i]
            b = v[base + half + i]
            v[base + i] = a * cos[base + i] + b * sin[base + i]
            v[base + half + i] = b * cos[base + half + i] + a * sin[base + half + i]


@njit(cache=True, fastmath=False)
def _layer(
    x,
    norm1,
    qkv,
    qkv_bias,
    out_w,
    out_bias,
    norm2,
    gate_up,
    gate_up_bias,
    down,
    down_bias,
    k_cache,
    v_cache,
    slot,
    cos,
    sin,
    heads,
    kv_heads,
    head_dim,
    scaling,
    eps,
):
    """One decoder layer for one token; writes slot ``slot`` of the (Hkv, T, D) caches."""
    q_width = heads * head_dim
    kv_width = kv_heads * head_dim
    proj = np.dot(_rms_norm(x, norm1, eps), qkv)
    if qkv_bias.shape[0]:
        proj += qkv_bias
    _rope_(proj, cos, sin, heads + kv_heads, head_dim, 0)
    for h in range(kv_heads):
        for d in range(head_dim):
            k_cache[h, slot, d] = proj[q_width + h * head_dim + d]
            v_cache[h, slot, d] = proj[q_width + kv_width + h * head_dim + d]
    group = heads // kv_heads
    end = slot + 1
    attended = np.empty(q_width, dtype=np.float32)
    scores = np.empty(end, dtype=np.float32)
    for h in range(heads):
        kv = h // group
        for t in range(end):
            s = proj[h * head_dim] * k_cache[kv, t, 0]
            for d in range(1, head_dim):
                s += proj[h * head_dim + d] * k_cache[kv, t, d]
            scores[t] = s * scaling
        best = scores[0]
        for t in range(1, end):
            if scores[t] > best:
                best = scores[t]
        total = ZERO
        for t in range(end):
            scores[t] = np.exp(scores[t] - best)
            total += scores[t]
        for d in range(head_dim):
            acc = ZERO
            for t in range(end):
                acc += scores[t] * v_cache[kv, t, d]
            attended[h * head_dim + d] = acc / total
    attn_out = np.dot(attended, out_w)
    if out_bias.shape[0]:
        attn_out += out_bias
    x = x + attn_out
    hidden = np.dot(_rms_norm(x, norm2, eps), gate_up)
    if gate_up_bias.shape[0]:
        hidden += gate_up_bias
    inner = hidden.shape[0] // 2
    act = np.empty(inner, dtype=np.float32)
    for i in range(inner):
        g = hidden[i]
        act[i] = g / (ONE + np.exp(-g)) * hidden[inner + i]
    mlp_out = np.dot(act, down)
    if down_bias.shape[0]:
        mlp_out += down_bias
    return x + mlp_out


@njit(cache=True, fastmath=False)
def step_one(
    x, layers, caches, slot, cos, sin, final_norm, lm_head, heads, kv_heads, head_dim, scaling, eps
):
    """The logits (V,) after the token whose embedding is ``x`` (C,) at cache slot ``slot``.
    ``layers``: a tuple, per layer (norm1, qkv, qkv_bias, out, out_bias, norm2, gate_up,
    gate_up_bias, down, down_bias), empty arrays for absent biases; ``caches``: a tuple, per
    layer (K, V) of shape (Hkv, T, D). float32 throughout; ``scaling`` and ``eps`` float32."""
    for i in range(len(layers)):
        w = layers[i]
        x = _layer(
            x,
            w[0],
            w[1],
            w[2],
            w[3],
            w[4],
            w[5],
            w[6],
            w[7],
            w[8],
            w[9],
            caches[i][0],
            caches[i][1],
            slot,
            cos,
            sin,
            heads,
            kv_heads,
            head_dim,
            scaling,
            eps,
        )
    return np.dot(_rms_norm(x, final_norm, eps), lm_head)
