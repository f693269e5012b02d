"""Decoding engines and the sampling loop they share.

Two engines produce next-token logits for a left-padded batch:

* `LlamaEngine` ("fast-llama"): reads the weights of a loaded Hugging Face Llama-family model
  (`LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`) into a few fused (in, out)
  matrices (q|k|v, gate|up) and runs its own forward pass with a preallocated static KV cache,
  issuing as few torch ops per layer as it can: one matmul for q, k and v, RMSNorm as one fused
  op, rotate-half as one ``flip``, one gathered cos/sin row per step for every layer, the cache
  written by slice assignment, attention as one `scaled_dot_product_attention` over the slots
  written so far, no mask rebuilt per step.
* `HFLoopEngine` ("hf-loop"): any other causal LM, by calling the model's own forward with its
  own cache object. Correct, slower.

`decode` runs prefill + one step per new token: constraint mask, greedy or seeded sampling
(temperature, top-p), per-row stop tokens, ``max_new_tokens``.

Greedy decoding with `LlamaEngine` gives the tokens of ``model.generate``: every elementwise
step is Hugging Face's arithmetic (RMSNorm bit for bit, ``q * cos + rotate_half(q) * sin`` with
the model's own cos/sin, residuals in the same order); the matrix products read the same weights
in (in, out) layout, so logits agree to float rounding (not always bitwise). The tests (Llama,
GQA, biases, rope scaling, Qwen2, Mistral; batch 1 and padded batches) and every repeat of
``benchmarks/bench_generate.py`` check the tokens.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from kiban.generate._errors import GenerationError

#: Rotary types whose cos/sin depend on the length of the current call, not only on the position:
#: a table computed once would differ from what the model computes, so they take the HF loop.
_LENGTH_DEPENDENT_ROPE = frozenset({"dynamic", "longrope"})


# --- sampling ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """``temperature == 0`` is greedy (argmax); otherwise softmax(logits / temperature) restricted
    to the smallest set of tokens whose probability reaches ``top_p`` (nucleus sampling)."""

    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not (
            isinstance(self.temperature, int | float)
            and math.isfinite(self.temperature)
            and self.temperature >= 0
        ):
            raise GenerationError(
                f"The 'temperature' parameter must be a finite number >= 0. "
                f"Got {self.temperature!r} instead."
            )
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise GenerationError(
                f"The 'top_p' parameter must be a number in (0, 1]. Got {self.top_p!r} instead."
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def pick_tokens(
    logits: Tensor,
    sampling: SamplingConfig,
    generator: torch.Generator | None,
) -> Tensor:
    """One token per row of ``logits`` (B, V) -> (B,)."""
    if sampling.greedy:
        return logits.argmax(-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_p < 1:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already reach top_p (the first stays)
        outside = probs.cumsum(-1) - probs >= sampling.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(outside, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


# --- engines ----------------------------------------------------------------------------------
class DecodeEngine(abc.ABC):
    """Next-token logits for a left-padded batch: `prefill` once, then `step` per token."""

    name: ClassVar[str]
    device: torch.device = torch.device("cpu")  # where its weights, caches and logits live

    @abc.abstractmethod
    def prefill(self, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int) -> Tensor:
        """Run the prompts (B, T) (``attention_mask`` (B, T) bool, False on left padding) and
        return the logits (B, V) after each row's last prompt token."""

    @abc.abstractmethod
    def step(self, tokens: Tensor) -> Tensor:
        """Append one token per row (B,) and return the next logits (B, V)."""


class TokenConstraint(abc.ABC):
    """Per-generation state that masks logits and follows the tokens chosen."""

    @abc.abstractmethod
    def mask_(self, logits: Tensor) -> Tensor:
        """Set the logits of forbidden tokens to -inf (in place) and return them."""

    @abc.abstractmethod
    def advance(self, tokens: Tensor) -> None:
        """Update the state with the tokens (B,) just chosen."""

    def to(self, device: torch.device) -> TokenConstraint:
        """This constraint with its tensors on ``device`` (the engine's); itself by default."""
        return self


def fast_path_problem(model: Any) -> str | None:
    """Why `LlamaEngine` cannot run ``model``, or None when it can."""
    from transformers import LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM

    if type(model) not in (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM):
        return f"{type(model).__name__} is not one of the Llama-family classes"
    config = model.config
    if config.hidden_act != "silu":
        return f"hidden_act={config.hidden_act!r} (the fast path implements 'silu')"
    rope_type = model.model.rotary_emb.rope_type
    if rope_type in _LENGTH_DEPENDENT_ROPE:
        return f"rope_type={rope_type!r} depends on the sequence length"
    if not model.dtype.is_floating_point:
        return f"dtype {model.dtype} is not a floating point type"
    return None


def sliding_window_of(model: Any) -> int | None:
    """The attention window of a Mistral/Qwen2 model that uses one (None otherwise)."""
    from transformers import MistralForCausalLM

    layer_types = getattr(model.config, "layer_types", None) or ()
    if "sliding_attention" not in layer_types and type(model) is not MistralForCausalLM:
        return None
    return getattr(model.config, "sliding_window", None)


@dataclass(frozen=True, slots=True)
class _Layer:
    attn_norm: Tensor  # (C,)
    qkv: Tensor  # (C, A + Hkv*D): columns of q, k, v
    qkv_bias: Tensor | None
    out: Tensor  # (H*D, C)
    out_bias: Tensor | None
    mlp_norm: Tensor  # (C,)
    gate_up: Tensor  # (C, 2I)
    gate_up_bias: Tensor | None
    down: Tensor  # (I, C)
    down_bias: Tensor | None


def _cat_bias(*biases: Tensor | None) -> Tensor | None:
    return (
        None if all(b is None for b in biases) else torch.cat([b for b in biases if b is not None])
    )


def _columns(*weights: Tensor) -> Tensor:
    """nn.Linear weights (out, in), stacked on out, as one contiguous (in, out) matrix."""
    return torch.cat([w.detach() for w in weights]).t().contiguous()


def _linear(x: Tensor, columns: Tensor, bias: Tensor | None) -> Tensor:
    """x (M, in) @ columns (in, out) [+ bias]. With the weight stored (in, out) a one-row
    product streams it row by row, which measured 1.3-2x faster than `F.linear`'s (out, in)
    dot products at batch 1 on the project's CPUs."""
    return torch.mm(x, columns) if bias is None else torch.addmm(bias, x, columns)


#: products with at most this many rows may go through NumPy's BLAS (see `Products`)
SMALL_ROWS = 4
_SMALL_CHOICES = ("auto", "torch", "numpy")
_LARGE_CHOICES = ("auto", "torch", "onednn")


def _median_seconds(calls: dict[str, Any], repeats: int = 15) -> dict[str, float]:
    """Median wall time of each zero-argument call, timed interleaved after 3 warm-ups."""
    import time

    times: dict[str, list[float]] = {name: [] for name in calls}
    for repeat in range(repeats + 3):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if repeat >= 3:
                times[name].append(time.perf_counter() - start)
    return {name: sorted(v)[len(v) // 2] for name, v in times.items()}


def _onednn_pack(columns: Tensor) -> Tensor | None:
    """The (in, out) weight as oneDNN's prepacked linear weight, or None where this torch build
    has no oneDNN linear (the private ops Inductor's CPU freezing pass uses)."""
    try:
        return torch.ops.mkldnn._reorder_linear_weight(columns.t().contiguous())
    except (AttributeError, RuntimeError):
        return None


def _onednn_linear(x: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class Products:
    """``x @ W [+ b]`` for an engine's fixed (in, out) CPU weights, choosing, by measurement on
    this machine, the library for small products (at most `SMALL_ROWS` rows: matrix-vector
    products, decoding at small batch) and for larger ones (batched decoding, prefill).

    * small: torch sends them to MKL, NumPy to its own BLAS (OpenBLAS). On the project's AMD
      EPYC CPUs OpenBLAS's matrix-vector product measured 1.5-2.6x faster than MKL's for
      256 x 768 ... 256 x 2048 float32 weights, most of a decoding step at batch 1.
    * large: ``torch.mm`` (MKL, which repacks the weight on every call) or oneDNN's linear on a
      weight packed once for it (``torch.ops.mkldnn``, as Inductor's CPU freezing pass uses).
      Packed, the 17 products of a batch-32 decoding step measured 1.7 ms instead of 3.3-3.9 ms
      on the same CPUs. The packed copy is one more copy of the weights in memory.

    ``"auto"`` times both candidates on the largest weight when the engine is built (a few ms)
    and keeps the faster; the other names force one. Other dtypes than float32/float64 (NumPy
    has no bfloat16), non-CPU or non-contiguous weights and a torch without oneDNN always take
    ``torch.mm``. Libraries sum in different orders, so logits can differ in the last bits
    (greedy tokens are checked equal to Hugging Face's with every choice)."""

    def __init__(self, weights: list[Tensor], small: str = "auto", large: str = "auto"):
        for name, value, choices in (
            ("blas", small, _SMALL_CHOICES),
            ("large", large, _LARGE_CHOICES),
        ):
            if value not in choices:
                raise GenerationError(
                    f"The '{name}' parameter must be one of {choices}. Got {value!r} instead."
                )
        usable = bool(weights) and all(
            w.device.type == "cpu"
            and w.dtype in (torch.float32, torch.float64)
            and w.is_contiguous()
            for w in weights
        )
        self._arrays = {w.data_ptr(): w.numpy() for w in weights} if usable else {}
        self._packed: dict[int, Tensor] = {}
        largest = max(weights, key=Tensor.numel) if weights else None
        if not usable or small == "torch":
            self.library = "torch"
        elif small == "numpy":
            self.library = "numpy"
        else:
            self.library = self._measure_small(largest)
        self.large_library = "torch"
        if usable and large != "torch" and largest.dtype == torch.float32:
            packed = _onednn_pack(largest)
            if packed is not None and (large == "onednn" or self._measure_large(largest, packed)):
                self.large_library = "onednn"
                self._packed = {
                    w.data_ptr(): (packed if w is largest else _onednn_pack(w)) for w in weights
                }

    @staticmethod
    def _measure_small(weight: Tensor) -> str:
        import numpy as np

        x = torch.randn(1, weight.shape[0], dtype=weight.dtype)
        xa, wa = x.numpy(), weight.numpy()
        median = _median_seconds(
            {"torch": lambda: torch.mm(x, weight), "numpy": lambda: np.matmul(xa, wa)}
        )
        return "numpy" if median["numpy"] < 0.9 * median["torch"] else "torch"

    @staticmethod
    def _measure_large(weight: Tensor, packed: Tensor) -> bool:
        """Whether oneDNN's packed product beats ``torch.mm`` at 32 rows (and agrees with it)."""
        x = torch.randn(32, weight.shape[0], dtype=weight.dtype)
        expected = torch.mm(x, weight)
        if not torch.allclose(_onednn_linear(x, packed, None), expected, rtol=1e-4, atol=1e-4):
            return False
        median = _median_seconds(
            {
                "torch": lambda: torch.mm(x, weight),
                "onednn": lambda: _onednn_linear(x, packed, None),
            },
            repeats=9,
        )
        return median["onednn"] < 0.9 * median["torch"]

    def __call__(self, x: Tensor, columns: Tensor, bias: Tensor | None) -> Tensor:
        if x.dtype == columns.dtype:
            if self.library == "numpy" and x.shape[0] <= SMALL_ROWS:
                array = self._arrays.get(columns.data_ptr())
                if array is not None:
                    import numpy as np

                    y = torch.from_numpy(np.matmul(x.numpy(), array))
                    return y if bias is None else y.add_(bias)
            packed = self._packed.get(columns.data_ptr())
            if packed is not None:
                return _onednn_linear(x, packed, bias)
        return _linear(x, columns, bias)


class LlamaEngine(DecodeEngine):
    """Static-KV-cache decoder over the weights of a Llama/Mistral/Qwen2 Hugging Face model.

    Supports grouped-query attention, q/k/v (and o, MLP) biases, tied or untied ``lm_head``,
    every rotary type whose cos/sin depend on the position only (default, linear, llama3, yarn
    ...: the table comes from the model's own rotary module). Check `fast_path_problem` first.
    """

    name: ClassVar[str] = "fast-llama"

    def __init__(self, model: Any, *, blas: str = "auto", large: str = "auto"):
        problem = fast_path_problem(model)
        if problem is not None:
            raise GenerationError(f"the fast decoder cannot run this model: {problem}")
        config = model.config
        self.model = model
        self.dtype = model.dtype
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        first = model.model.layers[0].self_attn
        self.head_dim = first.head_dim
        self.scaling = first.scaling
        self.q_width = self.heads * self.head_dim
        self.rotary_width = (self.heads + self.kv_heads) * self.head_dim  # A: q and k together
        self.gqa = self.heads != self.kv_heads
        self.eps = model.model.norm.variance_epsilon
        self._norm_shape = (config.hidden_size,)
        self.embed = model.model.embed_tokens.weight.detach()
        self.device = self.embed.device
        self.final_norm = model.model.norm.weight.detach()
        self.lm_head = _columns(model.lm_head.weight)  # (C, V), tied or not
        self.layers = [self._fuse(layer) for layer in model.model.layers]
        self.linear = Products(
            [self.lm_head]
            + [
                w
                for layer in self.layers
                for w in (layer.qkv, layer.out, layer.gate_up, layer.down)
            ],
            blas,
            large,
        )
        self.max_positions = config.max_position_embeddings
        self._cos: Tensor | None = None
        self._sin: Tensor | None = None
        self._caches: list[tuple[Tensor, Tensor]] = []
        self._one_row: tuple | None = None  # the compiled batch-1 step's arrays, when in use
        self._one_row_weights: tuple | None = None

    @property
    def compiled_one_row(self) -> bool:
        """Whether the current generation's steps run the compiled one-row step."""
        return self._one_row is not None

    def _one_row_arrays(self) -> tuple:
        """The weights as the compiled one-row step takes them (NumPy views, no copies)."""
        if self._one_row_weights is None:
            import numpy as np

            empty = np.empty(0, dtype=np.float32)

            def arr(t: Tensor | None):
                return empty if t is None else t.numpy()

            self._one_row_weights = tuple(
                (
                    arr(w.attn_norm),
                    arr(w.qkv),
                    arr(w.qkv_bias),
                    arr(w.out),
                    arr(w.out_bias),
                    arr(w.mlp_norm),
                    arr(w.gate_up),
                    arr(w.gate_up_bias),
                    arr(w.down),
                    arr(w.down_bias),
                )
                for w in self.layers
            )
        return self._one_row_weights

    def _fuse(self, layer: Any) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        with torch.no_grad():
            q, k, v = attn.q_proj, attn.k_proj, attn.v_proj
            qkv_bias = None
            if q.bias is not None or k.bias is not None or v.bias is not None:
                qkv_bias = torch.cat(
                    [
                        lin.bias
                        if lin.bias is not None
                        else torch.zeros(lin.out_features, dtype=self.dtype)
                        for lin in (q, k, v)
                    ]
                )
            return _Layer(
                attn_norm=layer.input_layernorm.weight.detach(),
                qkv=_columns(q.weight, k.weight, v.weight),
                qkv_bias=qkv_bias,
                out=_columns(attn.o_proj.weight),
                out_bias=_detach(attn.o_proj.bias),
                mlp_norm=layer.post_attention_layernorm.weight.detach(),
                gate_up=_columns(mlp.gate_proj.weight, mlp.up_proj.weight),
                gate_up_bias=_cat_bias(mlp.gate_proj.bias, mlp.up_proj.bias),
                down=_columns(mlp.down_proj.weight),
                down_bias=_detach(mlp.down_proj.bias),
            )

    def _rotary_table(self, length: int) -> None:
        """cos and signed sin (length, A) for positions 0..length-1, repeated over the q and k
        heads, from the model's rotary module (so rope scaling is whatever the model does).

        Hugging Face computes ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) =
        [-x2, x1]``; here ``flip(x) = [x2, x1]`` times ``sin`` with its first half negated, which
        is the same product exactly (a sign flip is exact) and one op cheaper."""
        if self._cos is not None and self._cos.shape[0] >= length:
            return
        positions = torch.arange(length, device=self.device)[None]
        probe = torch.empty(0, dtype=self.dtype, device=self.device)
        cos, sin = self.model.model.rotary_emb(probe, positions)  # (1, L, D)
        sin = sin[0].clone()
        sin[:, : self.head_dim // 2] *= -1
        repeats = self.heads + self.kv_heads
        self._cos = cos[0].repeat(1, repeats).contiguous()
        self._sin = sin.repeat(1, repeats).contiguous()

    def _rms_norm(self, x: Tensor, weight: Tensor) -> Tensor:
        if x.dtype == torch.float32:
            # torch's fused kernel gives Hugging Face's LlamaRMSNorm bit for bit in fp32 (checked
            # by the greedy tests) in one op instead of seven
            return F.rms_norm(x, self._norm_shape, weight, self.eps)
        # as Hugging Face writes it: normalise in fp32, cast back, then scale
        x32 = x.float()
        return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(
            x.dtype
        )

    def _rope(self, qk: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """qk (..., A) with cos/sin (..., A): the rotary embedding of every q and k head."""
        halves = qk.unflatten(-1, (-1, 2, self.head_dim // 2))  # (..., heads, 2, D/2)
        return qk * cos + halves.flip(-2).flatten(-3) * sin

    def _mlp(self, x: Tensor, layer: _Layer) -> Tensor:
        gate, up = self.linear(
            self._rms_norm(x, layer.mlp_norm), layer.gate_up, layer.gate_up_bias
        ).chunk(2, dim=-1)
        return self.linear(F.silu(gate) * up, layer.down, layer.down_bias)

    def prefill(self, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int) -> Tensor:
        batch, length = input_ids.shape
        total = length + max_new_tokens
        if total > self.max_positions:
            raise GenerationError(
                f"prompt length {length} + max_new_tokens {max_new_tokens} = {total} exceeds the "
                f"model's max_position_embeddings={self.max_positions}"
            )
        self._rotary_table(total)
        shape = (batch, self.kv_heads, total, self.head_dim)
        on = {"dtype": self.dtype, "device": self.device}
        self._caches = [(torch.empty(shape, **on), torch.empty(shape, **on)) for _ in self.layers]
        attention_mask = attention_mask.bool()
        padded = not bool(attention_mask.all())
        # positions count real tokens only, as Hugging Face derives them from the mask
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        # decode steps add this (B, 1, 1, total) bias, sliced to the slots written: -inf on
        # left padding (no bias at all when nothing is padded)
        self._key_bias = None
        if padded:
            self._key_bias = torch.zeros(batch, 1, 1, total, **on)
            self._key_bias[:, 0, 0, :length].masked_fill_(~attention_mask, float("-inf"))
            causal = torch.ones(length, length, dtype=torch.bool, device=self.device).tril()
            # a padding query attends to itself only (its output is never used; avoids NaN)
            prefill_mask = (causal & attention_mask[:, None, None, :]) | torch.eye(
                length, dtype=torch.bool, device=self.device
            )
        else:
            prefill_mask = None
        self._slot = length
        self._next_position = positions[:, -1] + 1  # (B,)
        # one sequence in float32 with NumPy's BLAS measured faster: later steps run compiled
        self._one_row = None
        if (
            batch == 1
            and self.dtype == torch.float32
            and self.linear.library == "numpy"
            and self.device.type == "cpu"
        ):
            import numpy as np

            from kiban.generate._onerow import step_one

            self._one_row = (
                step_one,
                self._one_row_arrays(),
                tuple((k[0].numpy(), v[0].numpy()) for k, v in self._caches),
                self._cos.numpy(),
                self._sin.numpy(),
                self.embed.numpy(),
                self.final_norm.numpy(),
                self.lm_head.numpy(),
                np.float32(self.scaling),
                np.float32(self.eps),
            )
        x = F.embedding(input_ids.reshape(-1), self.embed)  # (B*T, C)
        flat = positions.reshape(-1)
        cos, sin = self._cos[flat], self._sin[flat]  # (B*T, A)
        rotary, q_width, head_dim = self.rotary_width, self.q_width, self.head_dim
        for layer, (k_cache, v_cache) in zip(self.layers, self._caches):
            proj = self.linear(self._rms_norm(x, layer.attn_norm), layer.qkv, layer.qkv_bias)
            qk = self._rope(proj[:, :rotary], cos, sin)  # (B*T, A)
            q = qk[:, :q_width].view(batch, length, self.heads, head_dim).transpose(1, 2)
            k_cache[:, :, :length] = (
                qk[:, q_width:].view(batch, length, self.kv_heads, head_dim).transpose(1, 2)
            )
            v_cache[:, :, :length] = (
                proj[:, rotary:].view(batch, length, self.kv_heads, head_dim).transpose(1, 2)
            )
            attended = F.scaled_dot_product_attention(
                q,
                k_cache[:, :, :length],
                v_cache[:, :, :length],
                attn_mask=prefill_mask,
                is_causal=not padded,
                scale=self.scaling,
                enable_gqa=self.gqa,
            )  # (B, H, T, D)
            x = x + self.linear(
                attended.transpose(1, 2).reshape(batch * length, q_width), layer.out, layer.out_bias
            )
            x = x + self._mlp(x, layer)
        last = x.view(batch, length, -1)[:, -1]  # (B, C)
        return self.linear(self._rms_norm(last, self.final_norm), self.lm_head, None)  # (B, V)

    def step(self, tokens: Tensor) -> Tensor:
        """One token per row; everything is (B, features)."""
        if self._one_row is not None:
            return self._step_one_row(int(tokens[0]))
        slot = self._slot
        end = slot + 1
        batch = tokens.shape[0]
        position = self._next_position
        cos = self._cos.index_select(0, position)  # (B, A)
        sin = self._sin.index_select(0, position)
        bias = None if self._key_bias is None else self._key_bias[..., :end]
        rotary, q_width, head_dim = self.rotary_width, self.q_width, self.head_dim
        x = F.embedding(tokens, self.embed)  # (B, C)
        for layer, (k_cache, v_cache) in zip(self.layers, self._caches):
            proj = self.linear(self._rms_norm(x, layer.attn_norm), layer.qkv, layer.qkv_bias)
            qk = self._rope(proj[:, :rotary], cos, sin)  # (B, A)
            k_cache[:, :, slot] = qk[:, q_width:].view(batch, self.kv_heads, head_dim)
            v_cache[:, :, slot] = proj[:, rotary:].view(batch, self.kv_heads, head_dim)
            attended = F.scaled_dot_product_attention(
                qk[:, :q_width].view(batch, self.heads, 1, head_dim),
                k_cache[:, :, :end],
                v_cache[:, :, :end],
                attn_mask=bias,
                scale=self.scaling,
                enable_gqa=self.gqa,
            )  # (B, H, 1, D)
            x = x + self.linear(attended.reshape(batch, q_width), layer.out, layer.out_bias)
            x = x + self._mlp(x, layer)
        self._slot = end
        self._next_position = position + 1
        return self.linear(self._rms_norm(x, self.final_norm), self.lm_head, None)  # (B, V)

    def _step_one_row(self, token: int) -> Tensor:
        """`step` for one sequence, as one compiled call (`kiban.generate._onerow`)."""
        step_one, weights, caches, cos, sin, embed, final_norm, lm_head, scaling, eps = (
            self._one_row
        )
        position = int(self._next_position[0])
        logits = step_one(
            embed[token].copy(),
            weights,
            caches,
            self._slot,
            cos[position],
            sin[position],
            final_norm,
            lm_head,
            self.heads,
            self.kv_heads,
            self.head_dim,
            scaling,
            eps,
        )
        self._slot += 1
        self._next_position = self._next_position + 1
        return torch.from_numpy(logits).unsqueeze(0)


def _detach(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.detach()


class HFLoopEngine(DecodeEngine):
    """Any Hugging Face causal LM, through its own forward and its own (dynamic) cache."""

    name: ClassVar[str] = "hf-loop"

    def __init__(self, model: Any):
        self.model = model
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self.device = model.get_input_embeddings().weight.device

    def prefill(self, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int) -> Tensor:
        from transformers import DynamicCache

        total = input_ids.shape[1] + max_new_tokens
        if self.max_positions is not None and total > self.max_positions:
            raise GenerationError(
                f"prompt length {input_ids.shape[1]} + max_new_tokens {max_new_tokens} = {total} "
                f"exceeds the model's max_position_embeddings={self.max_positions}"
            )
        self._mask = attention_mask.long()
        positions = (self._mask.cumsum(-1) - 1).clamp(min=0)
        self._next_position = positions[:, -1:] + 1
        self._cache = DynamicCache(config=self.model.config)
        output = self.model(
            input_ids=input_ids,
            attention_mask=self._mask,
            position_ids=positions,
            cache=self._cache,
            use_cache=True,
        )
        return output.logits[:, -1]

    def step(self, tokens: Tensor) -> Tensor:
        self._mask = torch.cat([self._mask, self._mask.new_ones(self._mask.shape[0], 1)], dim=1)
        output = self.model(
            input_ids=tokens[:, None],
            attention_mask=self._mask,
            position_ids=self._next_position,
            cache=self._cache,
            use_cache=True,
        )
        self._next_position = self._next_position + 1
        return output.logits[:, -1]


def choose_engine(
    model: Any,
    kind: str = "auto",
    *,
    total_length: int | None = None,
) -> type[DecodeEngine]:
    """`LlamaEngine` when the model allows it (``kind`` "auto" or "fast"), else `HFLoopEngine`.
    ``kind="fast"`` on a model the fast path cannot run is an error naming why."""
    if kind not in ("auto", "fast", "hf"):
        raise GenerationError(
            f"The 'engine' parameter must be 'auto', 'fast' or 'hf'. Got {kind!r} instead."
        )
    if kind == "hf":
        return HFLoopEngine
    problem = fast_path_problem(model)
    window = sliding_window_of(model) if problem is None else None
    if problem is None and window is not None and (total_length is None or total_length > window):
        problem = f"sliding_window={window} is shorter than the sequence ({total_length})"
    if problem is None:
        return LlamaEngine
    if kind == "fast":
        raise GenerationError(f"the fast decoder cannot run this model: {problem}")
    return HFLoopEngine


def build_engine(
    model: Any,
    kind: str = "auto",
    *,
    total_length: int | None = None,
) -> DecodeEngine:
    """The engine `choose_engine` picks, built over ``model``."""
    return choose_engine(model, kind, total_length=total_length)(model)


# --- the loop ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DecodeOutput:
    tokens: Tensor  # (B, N) int64; after a row stops, pad ids
    lengths: Tensor  # (B,) tokens generated per row, its stop token included
    stopped: Tensor  # (B,) bool: the row met one of its stop tokens (else ran out of tokens)


def decode(
    engine: DecodeEngine,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    generator: torch.Generator | None = None,
    stop_ids: Tensor | None = None,
    constraint: TokenConstraint | None = None,
    pad_id: int = 0,
) -> DecodeOutput:
    """Generate up to ``max_new_tokens`` per row of the left-padded ``input_ids`` (B, T).

    ``stop_ids`` (B, K) lists each row's stop tokens (-1 = none); a row that emits one keeps it
    and is finished (pad ids after; the loop ends when every row is finished).

    Everything runs on the engine's device (the inputs, stop ids and constraint are moved
    there; a sampling ``generator`` must already be there); the output comes back on the CPU."""
    device = engine.device
    if generator is not None and not sampling.greedy and generator.device.type != device.type:
        raise GenerationError(
            f"the sampling generator is on {generator.device}, the model on "
            f"{device}: make it with torch.Generator(device={str(device)!r})"
        )
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    if stop_ids is not None:
        stop_ids = stop_ids.to(device)
    if constraint is not None:
        constraint = constraint.to(device)
    batch = input_ids.shape[0]
    out = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.full((batch,), max_new_tokens, dtype=torch.long, device=device)
    with torch.inference_mode():
        logits = engine.prefill(input_ids, attention_mask, max_new_tokens)
        for i in range(max_new_tokens):
            if constraint is not None:
                logits = constraint.mask_(logits)
            tokens = pick_tokens(logits, sampling, generator)
            if stop_ids is not None:
                tokens = tokens.masked_fill(finished, pad_id)
            out[:, i] = tokens
            if constraint is not None:
                constraint.advance(tokens)
            if stop_ids is not None:
                now = (tokens[:, None] == stop_ids).any(-1) & ~finished
                lengths = torch.where(now, i + 1, lengths)
                finished |= now
                if bool(finished.all()):
                    out = out[:, : i + 1]
                    break
            if i + 1 < max_new_tokens:
                logits = engine.step(tokens)
    return DecodeOutput(tokens=out.cpu(), lengths=lengths.cpu(), stopped=finished.cpu())
