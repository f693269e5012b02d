"""`Generator`: loading model directories, results, stopping, valid-only resampling, errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from kiban.generate import Completion, GeneratedSpan, GenerationError, check_spans, load_generator


def test_greedy_generation_matches_hf_generate(trained_generator, science_tokenizer):
    """constrain=False, a batch of prompts of different lengths: the same ids as
    ``model.generate`` up to each row's end-of-text (HF pads after it, so do we)."""
    tok = science_tokenizer
    prompts = [
        "The",
        "Benzene is aromatic and flat. The compound <mol>CCO</mol> has",
        "Measured at room temperature,",
    ]
    results = trained_generator.generate(prompts, max_new_tokens=30, constrain=False)
    ids = [tok.encode(p) for p in prompts]
    width = max(map(len, ids))
    input_ids = torch.tensor([[tok.pad_id] * (width - len(i)) + i for i in ids])
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
    with torch.inference_mode():
        expected = trained_generator.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=30,
            eos_token_id=tok.eos_id,
            pad_token_id=tok.pad_id,
        )[:, width:].tolist()
    assert trained_generator.last_engine == "fast-llama"
    for completion, row in zip(results, expected):
        if tok.eos_id in row:
            row = row[: row.index(tok.eos_id) + 1]
            assert completion.stop_reason == "eos"
        assert list(completion.completion_ids) == row
        assert completion.completion_tokens == len(row)
        assert completion.text == completion.prompt + completion.completion
    assert any(c.stop_reason == "eos" for c in results)


def test_prompt_inside_a_span_stops_when_it_closes(trained_generator):
    results = trained_generator.generate(
        "The compound <mol>CC(", n=6, max_new_tokens=40, temperature=1.0, seed=3
    )
    closed = [c for c in results if c.stop_reason == "span_closed"]
    assert closed
    for completion in closed:
        assert completion.completion.endswith("</mol>")
        assert completion.completion.count("</mol>") == 1
        (span,) = completion.spans
        assert span.modality == "mol"
        assert span.text == "CC(" + completion.completion[: -len("</mol>")]
        assert completion.valid == (span.error is None)
        if span.valid:
            from kiban.modalities import get_codec

            assert span.canonical == get_codec("mol").canonical(span.text)


def test_sampling_is_reproducible_through_the_generator(kiban_generator):
    def run(seed):
        return [
            c.text
            for c in kiban_generator.generate(
                ["A", "The compound <mol>"],
                n=3,
                max_new_tokens=12,
                temperature=0.9,
                top_p=0.95,
                seed=seed,
            )
        ]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_valid_only_returns_only_valid_molecules(trained_generator):
    kwargs = dict(n=12, max_new_tokens=40, temperature=1.5, seed=11)
    plain = trained_generator.generate("The compound <mol>", **kwargs)
    assert not all(c.valid for c in plain)  # without it, some molecules are invalid ...
    guided = trained_generator.generate(
        "The compound <mol>", valid_only=True, max_tries=20, **kwargs
    )
    assert all(c.valid for c in guided)  # ... with it, none
    assert max(c.tries for c in guided) > 1
    from rdkit import Chem

    for completion in guided:
        (span,) = completion.spans
        assert Chem.MolFromSmiles(span.text) is not None
        assert completion.stop_reason == "span_closed"


def test_valid_only_reports_failure_after_the_retries(kiban_generator):
    # a random model with 6 tokens cannot close its SMILES: every row fails every try
    results = kiban_generator.generate(
        "The compound <mol>",
        n=4,
        max_new_tokens=6,
        temperature=1.0,
        seed=0,
        valid_only=True,
        max_tries=3,
    )
    assert [(c.valid, c.tries) for c in results] == [(False, 3)] * 4
    assert all("not closed" in c.spans[0].error for c in results)


def test_greedy_valid_only_does_not_retry(kiban_generator):
    (result,) = kiban_generator.generate("The compound <mol>", max_new_tokens=4, valid_only=True)
    assert (result.valid, result.tries) == (False, 1)


def test_check_spans():
    spans = check_spans(
        "p <mol>CCO</mol> q <mol>C1CC</mol> r </num> <num>1.5 eV</num> <mol>c1", generated_from=2
    )
    assert spans == (
        GeneratedSpan("mol", "CCO", canonical="CCO"),
        GeneratedSpan("mol", "C1CC", error=spans[1].error),
        GeneratedSpan("num", "", error="stray closing tag </num>"),
        GeneratedSpan("num", "1.5 eV", canonical=spans[3].canonical),
        GeneratedSpan("mol", "c1", error="<mol> span not closed when generation stopped"),
    )
    assert "ring" in spans[1].error.lower() or "unclosed" in spans[1].error.lower()
    # spans wholly inside the prompt are not the completion's
    assert check_spans("<mol>CCO</mol> and", generated_from=15) == ()
    nested = check_spans("<mol>CC<num>1</num>", generated_from=0)
    assert nested[0] == GeneratedSpan("mol", "CC", error="<num> opened inside <mol>")


def test_completion_as_dict_is_json(kiban_generator):
    (result,) = kiban_generator.generate("The compound <mol>", max_new_tokens=3)
    payload = json.loads(json.dumps(result.as_dict()))
    assert set(payload) == {
        "prompt",
        "text",
        "completion",
        "valid",
        "spans",
        "prompt_tokens",
        "completion_tokens",
        "stop_reason",
        "tries",
    }
    assert isinstance(result, Completion)


def test_plain_hugging_face_directory(plain_model_dir):
    generator = load_generator(plain_model_dir)
    assert generator.science is None
    results = generator.generate(
        ["Benzene is", "The"], n=2, max_new_tokens=10, temperature=0.7, seed=1
    )
    assert generator.last_engine == "fast-llama"
    assert [c.spans for c in results] == [()] * 4 and all(c.valid for c in results)
    assert all(c.text == c.prompt + c.completion for c in results)
    # ids beyond the tokenizer (the embedding has 4 more rows) are never sampled, even when
    # the model prefers them
    vocab = generator.hf_tokenizer.get_vocab_size()
    head = generator.model.lm_head.weight
    with torch.no_grad():  # real ids score 0; one of the two extra rows scores |h.v| > 0
        direction = torch.randn(head.shape[1])
        head[:vocab] = 0.0
        head[vocab], head[vocab + 1] = direction, -direction
    ids = torch.tensor([generator.hf_tokenizer.encode("Benzene is").ids])
    with torch.inference_mode():
        assert generator.model(input_ids=ids).logits[0, -1].argmax() >= vocab
    generator._engines.clear()  # a fast engine holds the weights it read
    results = generator.generate(["Benzene is", "The"], n=2, max_new_tokens=5, temperature=0.0)
    assert all(max(c.completion_ids) < vocab for c in results)


def test_hf_engine_can_be_forced(kiban_model_dir, kiban_generator):
    generator = load_generator(kiban_model_dir, engine="hf")
    fast = kiban_generator.generate(["x", "The compound <mol>C"], max_new_tokens=8)
    slow = generator.generate(["x", "The compound <mol>C"], max_new_tokens=8)
    assert generator.last_engine == "hf-loop" and kiban_generator.last_engine == "fast-llama"
    assert [c.completion_ids for c in slow] == [c.completion_ids for c in fast]


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"temperature": -1.0},
            r"'temperature' parameter must be a finite number >= 0\. Got -1\.0",
        ),
        (
            {"temperature": float("inf")},
            r"'temperature' parameter must be a finite number >= 0\. Got inf",
        ),
        ({"top_p": 0.0}, r"'top_p' parameter must be a number in \(0, 1\]\. Got 0\.0"),
        ({"top_p": 1.01}, r"'top_p' parameter .* Got 1\.01"),
        ({"n": 0}, r"'n' parameter must be an integer >= 1\. Got 0"),
        ({"max_new_tokens": 0}, r"'max_new_tokens' parameter must be an integer >= 1\. Got 0"),
        ({"max_new_tokens": 2.5}, r"'max_new_tokens' .* Got 2\.5"),
        ({"seed": -3}, r"'seed' parameter must be an integer >= 0\. Got -3"),
    ],
)
def test_out_of_range_parameters(kiban_generator, kwargs, message):
    with pytest.raises(GenerationError, match=message):
        kiban_generator.generate("x", **kwargs)


def test_several_completions_sample_by_default(kiban_generator):
    """Without a temperature, n > 1 samples (temperature 1) instead of n greedy copies."""
    default = kiban_generator.generate("Benzene", n=4, max_new_tokens=6, seed=2, constrain=False)
    tempered = kiban_generator.generate(
        "Benzene", n=4, max_new_tokens=6, seed=2, constrain=False, temperature=1.0
    )
    assert [c.completion_ids for c in default] == [c.completion_ids for c in tempered]
    assert len({c.completion_ids for c in default}) > 1
    (greedy,) = kiban_generator.generate("Benzene", max_new_tokens=6, constrain=False)
    assert (
        greedy.completion_ids
        == kiban_generator.generate("Benzene", max_new_tokens=6, constrain=False, temperature=0.0)[
            0
        ].completion_ids
    )


def test_bad_prompts(kiban_generator):
    with pytest.raises(GenerationError, match=r"'prompts' parameter .* Got \[\]"):
        kiban_generator.generate([])
    with pytest.raises(
        GenerationError,
        match=r"'prompt' parameter is not valid tagged text: "
        r"unknown tag '<mool>'",
    ):
        kiban_generator.generate("a <mool>C")
    with pytest.raises(GenerationError, match=r"exceeds the model's max_position_embeddings=256"):
        kiban_generator.generate("x", max_new_tokens=300)


@pytest.fixture
def copy_of(tmp_path, kiban_model_dir):
    def copy(*drop: str):
        target = tmp_path / "model"
        shutil.copytree(kiban_model_dir, target)
        for name in drop:
            (target / name).unlink()
        return target

    return copy


@pytest.mark.parametrize(
    "missing, message",
    [
        ("config.json", r"config\.json is missing"),
        ("model.safetensors", r"has no weights \(expected one of model\.safetensors"),
        ("tokenizer.json", r"tokenizer\.json is missing"),
    ],
)
def test_missing_files(copy_of, missing, message):
    with pytest.raises(GenerationError, match=message):
        load_generator(copy_of(missing))


def test_missing_directory(tmp_path):
    with pytest.raises(GenerationError, match=r"nowhere: no such directory"):
        load_generator(tmp_path / "nowhere")


def test_tokenizer_larger_than_the_embedding(copy_of, science_tokenizer):
    directory = copy_of()
    config = json.loads((directory / "config.json").read_text())
    small = science_tokenizer.vocab_size - 100
    config["vocab_size"] = small
    (directory / "config.json").write_text(json.dumps(config))
    from transformers import LlamaConfig

    from .helpers import random_model

    random_model(
        LlamaConfig(
            **{
                k: v
                for k, v in config.items()
                if k not in ("architectures", "transformers_version")
            }
        )
    ).save_pretrained(directory)  # the directory now holds a model with `small` rows
    with pytest.raises(
        GenerationError,
        match=rf"tokenizer vocabulary \({science_tokenizer.vocab_size}"
        rf" tokens, .*tokenizer\.json\) is larger than the "
        rf"model's embedding \({small} rows",
    ):
        load_generator(directory)


def test_bad_engine_name(kiban_model_dir):
    with pytest.raises(GenerationError, match=r"'engine' parameter .* Got 'gpu'"):
        load_generator(kiban_model_dir, engine="gpu")


def test_a_prompt_ending_inside_a_bracket_atom_is_encoded_in_bracket_parts(kiban_generator):
    # the model writes bracket parts after "[" (the constraints allow nothing else there), so a
    # prompt that stops inside a bracket must give it those ids, not prose "[" and organic "N"
    science = kiban_generator.science
    parts = science.brackets["parts"]
    ids = kiban_generator._encode("<mol>C[13N@@H")
    closed = science.encode("<mol>C</mol>")[:-1]
    assert ids == closed + [
        parts["open"]["["],
        parts["digit"]["1"],
        parts["digit"]["3"],
        parts["element"]["N"],
        parts["chirality"]["@@"],
        parts["hydrogens"]["H"],
    ]
    organic_n = science.encode("<mol>N</mol>")[1]
    assert organic_n not in ids[len(closed) :]
    assert science.decode(ids) == "<mol>C[13N@@H"
