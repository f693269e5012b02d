"""The decoding engines against Hugging Face ``generate`` (greedy, token for token), sampling,
stop tokens and the choice between the fast path and the generic loop."""

from __future__ import annotations

import pytest
import torch

from kiban.generate import GenerationError
from kiban.generate.engine import (
    HFLoopEngine,
    LlamaEngine,
    SamplingConfig,
    _onednn_pack,
    build_engine,
    decode,
    fast_path_problem,
    pick_tokens,
)

from .helpers import llama_config, random_model

VOCAB = 96
ONEDNN = _onednn_pack(torch.randn(4, 4)) is not None


def left_padded(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    for row, length in enumerate(lengths):
        input_ids[row, width - length :] = torch.randint(1, VOCAB, (length,), generator=generator)
        mask[row, width - length :] = True
    return input_ids, mask


def hf_greedy(model, input_ids, mask, new_tokens: int) -> torch.Tensor:
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask.long(),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=0,
        )
    return out[:, input_ids.shape[1] :]


def _models():
    from transformers import GPT2Config, MistralConfig, Qwen2Config

    return {
        "llama-gqa-untied": llama_config(VOCAB),
        "llama-mha-tied": llama_config(VOCAB, num_key_value_heads=4, tie_word_embeddings=True),
        "llama-bias-rope-llama3": llama_config(
            VOCAB,
            attention_bias=True,
            mlp_bias=True,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        ),
        "qwen2-qkv-bias": Qwen2Config(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            eos_token_id=None,
            bos_token_id=None,
        ),
        "mistral": MistralConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            vocab_size=VOCAB,
            max_position_embeddings=256,
            sliding_window=None,
            eos_token_id=None,
            bos_token_id=None,
        ),
        "gpt2": GPT2Config(
            n_embd=64,
            n_layer=2,
            n_head=4,
            vocab_size=VOCAB,
            n_positions=256,
            eos_token_id=None,
            bos_token_id=None,
        ),
    }


MODEL_NAMES = list(_models())


@pytest.fixture(scope="module", params=MODEL_NAMES)
def named_model(request):
    return request.param, random_model(_models()[request.param], seed=3)


@pytest.mark.parametrize(
    "blas,large", [("torch", "torch"), ("numpy", "onednn"), ("torch", "onednn")]
)
@pytest.mark.parametrize("lengths", [[7], [3, 9, 5, 1]], ids=["batch1", "padded-batch"])
def test_greedy_matches_hf_generate_token_for_token(named_model, lengths, blas, large):
    """Every library for small and for larger products; with "numpy", batch 1 runs the
    compiled one-row step (`kiban.generate._onerow`)."""
    name, model = named_model
    if name == "gpt2":
        engine = build_engine(model)
        assert engine.name == "hf-loop"
    else:
        engine = LlamaEngine(model, blas=blas, large=large)
        if large == "onednn" and model.dtype == torch.float32:
            assert engine.linear.large_library == ("onednn" if ONEDNN else "torch")
    input_ids, mask = left_padded(lengths)
    expected = hf_greedy(model, input_ids, mask, 24)
    got = decode(engine, input_ids, mask, max_new_tokens=24).tokens
    assert got.tolist() == expected.tolist()
    if name != "gpt2":
        assert engine.compiled_one_row == (blas == "numpy" and len(lengths) == 1)


def test_products_choose_libraries_and_refuse_bad_settings():
    from kiban.generate.engine import Products

    weights = [torch.randn(64, 192), torch.randn(64, 64)]
    measured = Products(weights)
    assert measured.library in ("torch", "numpy")
    assert measured.large_library in ("torch", "onednn")
    half = Products([w.bfloat16() for w in weights], "numpy", "onednn")
    assert (half.library, half.large_library) == ("torch", "torch")
    assert Products([weights[0].t()], "numpy").library == "torch"  # not contiguous
    products = Products(weights, "numpy", "torch")
    x, bias = torch.randn(2, 64), torch.randn(192)
    assert torch.allclose(products(x, weights[0], bias), x @ weights[0] + bias, atol=1e-5)
    big = torch.randn(9, 64)  # more rows than SMALL_ROWS: torch
    assert torch.equal(products(big, weights[1], None), torch.mm(big, weights[1]))
    with pytest.raises(GenerationError, match="'blas' parameter .* Got 'mkl'"):
        Products(weights, "mkl")
    with pytest.raises(GenerationError, match="'large' parameter .* Got 'numpy'"):
        Products(weights, "torch", "numpy")


@pytest.mark.skipif(not ONEDNN, reason="this torch build has no oneDNN linear")
@pytest.mark.parametrize("rows", [1, 5, 32, 300])
def test_onednn_packed_products_agree_with_torch_mm(rows):
    from kiban.generate.engine import Products

    weights = [torch.randn(96, 160), torch.randn(160, 96)]
    products = Products(weights, "torch", "onednn")
    assert products.large_library == "onednn"
    for weight in weights:
        x, bias = torch.randn(rows, weight.shape[0]), torch.randn(weight.shape[1])
        torch.testing.assert_close(products(x, weight, bias), torch.addmm(bias, x, weight))
        torch.testing.assert_close(products(x, weight, None), torch.mm(x, weight))


def test_hf_loop_engine_matches_hf_generate_on_llama():
    model = random_model(llama_config(VOCAB), seed=4)
    input_ids, mask = left_padded([2, 6, 4], seed=1)
    got = decode(HFLoopEngine(model), input_ids, mask, max_new_tokens=16).tokens
    assert got.tolist() == hf_greedy(model, input_ids, mask, 16).tolist()


def test_fast_path_refuses_what_it_cannot_run():
    dynamic = random_model(
        llama_config(
            VOCAB, rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
        )
    )
    assert "dynamic" in fast_path_problem(dynamic)
    assert isinstance(build_engine(dynamic), HFLoopEngine)
    with pytest.raises(GenerationError, match="rope_type='dynamic'"):
        build_engine(dynamic, "fast")
    from transformers import MistralConfig

    windowed = random_model(
        MistralConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=1,
            vocab_size=VOCAB,
            sliding_window=8,
        )
    )
    assert isinstance(build_engine(windowed, total_length=20), HFLoopEngine)
    assert isinstance(build_engine(windowed, total_length=8), LlamaEngine)
    with pytest.raises(GenerationError, match="'engine' parameter .* Got 'turbo'"):
        build_engine(windowed, "turbo")


@pytest.fixture(scope="module")
def llama():
    return random_model(llama_config(VOCAB), seed=5)


def test_sampling_is_reproducible_by_seed(llama):
    engine = LlamaEngine(llama)
    input_ids, mask = left_padded([4, 8, 6])
    sampling = SamplingConfig(temperature=1.0, top_p=0.9)

    def sample(seed: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(seed)
        return decode(
            engine, input_ids, mask, max_new_tokens=20, sampling=sampling, generator=generator
        ).tokens.tolist()

    assert sample(11) == sample(11)
    assert sample(11) != sample(12)


def test_tiny_top_p_is_greedy(llama):
    engine = LlamaEngine(llama)
    input_ids, mask = left_padded([5, 3])
    greedy = decode(engine, input_ids, mask, max_new_tokens=12).tokens
    nucleus = decode(
        engine,
        input_ids,
        mask,
        max_new_tokens=12,
        sampling=SamplingConfig(temperature=1.0, top_p=1e-9),
        generator=torch.Generator().manual_seed(0),
    ).tokens
    assert nucleus.tolist() == greedy.tolist()


def test_top_p_samples_only_the_nucleus():
    # probabilities 0.4, 0.3, 0.2, 0.1: top_p=0.6 keeps the first two (0.4 < 0.6 <= 0.7)
    logits = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log().repeat(4000, 1)
    picked = pick_tokens(
        logits, SamplingConfig(temperature=1.0, top_p=0.6), torch.Generator().manual_seed(0)
    )
    counts = torch.bincount(picked, minlength=4).tolist()
    assert counts[2] == counts[3] == 0
    assert 0.5 < counts[0] / 4000 < 0.64  # 4/7 = 0.571 of the nucleus


def test_stop_tokens_end_rows_and_pad_after(llama):
    engine = LlamaEngine(llama)
    input_ids, mask = left_padded([4, 7])
    free = decode(engine, input_ids, mask, max_new_tokens=10).tokens
    # stop row 0 at the token it emits 3rd, row 1 never
    stop = torch.tensor([[int(free[0, 2]), -1], [-1, -1]])
    out = decode(engine, input_ids, mask, max_new_tokens=10, stop_ids=stop, pad_id=0)
    first_stop = free[0].tolist().index(int(free[0, 2])) + 1
    assert out.lengths.tolist() == [first_stop, 10]
    assert out.stopped.tolist() == [True, False]
    assert out.tokens[0, :first_stop].tolist() == free[0, :first_stop].tolist()
    assert out.tokens[0, first_stop:].tolist() == [0] * (10 - first_stop)
    assert out.tokens[1].tolist() == free[1].tolist()


def test_prompt_longer_than_the_model_allows_is_an_error(llama):
    input_ids, mask = left_padded([250])
    with pytest.raises(GenerationError, match=r"250 \+ max_new_tokens 10 = 260 exceeds .*=256"):
        decode(LlamaEngine(llama), input_ids, mask, max_new_tokens=10)


@pytest.mark.parametrize(
    "field, value", [("temperature", -0.5), ("top_p", 0.0), ("top_p", 1.5), ("temperature", "hot")]
)
def test_sampling_config_rejects_out_of_range_values(field, value):
    with pytest.raises(GenerationError, match=rf"'{field}' parameter .* Got {value!r} instead"):
        SamplingConfig(**{field: value})


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_greedy_matches_hf_generate_in_other_dtypes(dtype):
    model = random_model(llama_config(VOCAB), seed=3).to(dtype)
    engine = build_engine(model)
    assert engine.name == "fast-llama"
    input_ids, mask = left_padded([3, 9, 5, 1])
    got = decode(engine, input_ids, mask, max_new_tokens=24).tokens
    assert got.tolist() == hf_greedy(model, input_ids, mask, 24).tolist()
