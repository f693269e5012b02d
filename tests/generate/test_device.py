"""Generation on a chosen device: the checks that run everywhere, and (on a machine with a CUDA
device only) greedy tokens on the GPU equal to Hugging Face's on the same GPU."""

from __future__ import annotations

import pytest
import torch

from kiban.generate import GenerationError, load_generator
from kiban.generate.constraints import ModalityConstraints, PromptState
from kiban.generate.engine import HFLoopEngine, LlamaEngine, SamplingConfig, decode
from kiban.generate.generator import check_device

from .helpers import llama_config, random_model
from .test_engine import VOCAB, hf_greedy, left_padded

CUDA = torch.cuda.is_available()


def test_check_device_names_what_is_wrong():
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(
        GenerationError,
        match=r"'device' parameter must name a torch device.*"
        r"Got 'gpu0'",
    ):
        check_device("gpu0")
    with pytest.raises(
        GenerationError,
        match=r"device 'meta': generation runs on 'cpu' or "
        r"'cuda'",
    ):
        check_device("meta")
    if not CUDA:
        with pytest.raises(
            GenerationError,
            match=r"device 'cuda': no CUDA device is usable "
            r"here .*use device='cpu'",
        ):
            check_device("cuda")


def test_load_generator_on_the_cpu_by_name(kiban_model_dir):
    generator = load_generator(kiban_model_dir, device="cpu")
    assert generator.device == torch.device("cpu")
    first = generator.generate("<mol>", max_new_tokens=8, temperature=1.0, seed=3)
    again = generator.generate("<mol>", max_new_tokens=8, temperature=1.0, seed=3)
    assert first[0].text == again[0].text
    with pytest.raises(GenerationError, match="'device' parameter"):
        load_generator(kiban_model_dir, device="gpu0")


def test_decode_refuses_a_generator_on_another_device():
    engine = LlamaEngine(random_model(llama_config(VOCAB), seed=5))
    engine.device = torch.device("meta")  # as if the model lived elsewhere
    input_ids, mask = left_padded([4])
    with pytest.raises(
        GenerationError,
        match=r"generator is on cpu, the model on meta: make "
        r"it with torch.Generator\(device='meta'\)",
    ):
        decode(
            engine,
            input_ids,
            mask,
            max_new_tokens=4,
            sampling=SamplingConfig(temperature=1.0),
            generator=torch.Generator(),
        )


def test_engines_report_their_device():
    model = random_model(llama_config(VOCAB), seed=5)
    assert LlamaEngine(model).device == torch.device("cpu")
    assert HFLoopEngine(model).device == torch.device("cpu")


def test_constraint_tables_and_state_move_together(science_tokenizer):
    tables = ModalityConstraints(science_tokenizer, science_tokenizer.vocab_size)
    assert tables.on("cpu") is tables
    meta = tables.on("meta")  # a device without data: checks where every tensor goes
    assert meta is tables.on(torch.device("meta")) and meta.device.type == "meta"
    assert all(getattr(meta, name).device.type == "meta" for name in tables._TABLES)
    assert all(getattr(tables, name).device.type == "cpu" for name in tables._TABLES)
    tracker = tables.track([PromptState.of("<mol>C"), PromptState.of("text")])
    assert tracker.to(torch.device("cpu")) is tracker
    moved = tracker.to(torch.device("meta"))
    assert moved.tables is meta
    assert all(getattr(moved, name).device.type == "meta" for name in tracker._STATE)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("lengths", [[7], [3, 9, 5, 1]], ids=["batch1", "padded-batch"])
def test_greedy_on_cuda_matches_hf_generate_on_cuda(lengths):
    model = random_model(llama_config(VOCAB), seed=3).to("cuda")
    engine = LlamaEngine(model)
    assert engine.device.type == "cuda" and engine.linear.library == "torch"
    input_ids, mask = left_padded(lengths)
    expected = hf_greedy(model, input_ids.cuda(), mask.cuda(), 24).cpu()
    out = decode(engine, input_ids, mask, max_new_tokens=24)
    assert out.tokens.device.type == "cpu"
    assert out.tokens.tolist() == expected.tolist()


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_constrained_generation_on_cuda(trained_model_dir):
    gpu = load_generator(trained_model_dir, device="cuda")
    cpu = load_generator(trained_model_dir)
    assert gpu.device.type == "cuda"
    prompts = ["The compound <mol>", "<mol>C"]
    # greedy and constrained: the same tokens as on the CPU (fp32 both)
    assert [c.text for c in gpu.generate(prompts, max_new_tokens=48)] == [
        c.text for c in cpu.generate(prompts, max_new_tokens=48)
    ]
    # sampling draws other random numbers on another device; the masks hold there too
    for completion in gpu.generate("<mol>", n=32, max_new_tokens=48, temperature=1.0, seed=0):
        assert [span.modality for span in completion.spans] == ["mol"]
