"""Supervised fine-tuning data (reading, rejects, label masking, batches, split) and LoRA."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from kiban.corpus.readers import Reject
from kiban.tokenizer import train_tokenizer
from kiban.train.batches import IGNORE
from kiban.train.sft import (
    LLAMA_TARGET_MODULES,
    Example,
    SFTDataError,
    SFTSource,
    SupervisedData,
    read_examples,
    write_rejects,
)

TRAINING_TEXTS = [
    "What is the logS of <mol>CCO</mol>? <num>-0.77</num>",
    "Solubility of <mol>c1ccccc1</mol> is <num>-1.64</num>.",
    "The QED of <mol>CC(=O)Oc1ccccc1C(=O)O</mol> is <num>0.5501</num>.",
    "Answer: yes. Answer: no. What is the logS of water?",
] * 3


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TRAINING_TEXTS, vocab_size=300, min_frequency=1)


def write_jsonl(path: Path, lines: list[str | dict]) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
        encoding="utf-8",
    )
    return path


def pairs(n: int) -> list[dict]:
    smiles = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCC", "OCCO", "CC=O", "C#N", "CCCl", "CO"]
    return [
        {
            "prompt": f"What is the logS of <mol>{smiles[i % 10]}</mol>?" + " why" * (i // 10),
            "completion": f" <num>{-i / 4}</num>",
        }
        for i in range(n)
    ]


def reference_example(tokenizer, prompt: str, completion: str) -> tuple[list[int], int]:
    prompt_ids = tokenizer.encode(prompt)
    return prompt_ids + tokenizer.encode(completion) + [tokenizer.eos_id], len(prompt_ids)


# --- reading ----------------------------------------------------------------------------------
def test_jsonl_records_are_read_with_location_and_canonical_spans(tmp_path):
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"question": "What is the logS of <mol>OCC</mol>?", "answer": " <num>-0.77</num>"},
            "",  # blank lines are not records
            {"question": "Cafe\u0301 <mol>C1=CC=CC=C1</mol>", "answer": " <num>+3</num>", "x": 1},
        ],
    )
    source = SFTSource(path=str(path), prompt_field="question", completion_field="answer")
    examples, rejects = read_examples(source)
    assert rejects == []
    assert examples == [
        Example("What is the logS of <mol>CCO</mol>?", " <num>-0.77</num>", f"{path}:1", "qa"),
        Example("Caf\u00e9 <mol>c1ccccc1</mol>", " <num>3</num>", f"{path}:3", "qa"),
    ]


def test_csv_gz_rows_are_rendered_with_templates_and_computed_properties(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import QED

    path = tmp_path / "esol.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("smiles,target\nOCC,-0.77\nC1=CC=CC=C1,-1.64\n")
    source = SFTSource(
        path=str(path),
        prompt_template="QED <num>{qed}</num>. What is the logS of <mol>{smiles}</mol>?",
        completion_template=" <num>{target}</num>",
        properties=("qed",),
    )
    examples, rejects = read_examples(source)
    assert rejects == []
    qed = [f"{QED.qed(Chem.MolFromSmiles(s)):.4g}" for s in ("CCO", "c1ccccc1")]
    assert [(e.prompt, e.completion, e.where) for e in examples] == [
        (
            f"QED <num>{qed[0]}</num>. What is the logS of <mol>CCO</mol>?",
            " <num>-0.77</num>",
            f"{path}:2",
        ),
        (
            f"QED <num>{qed[1]}</num>. What is the logS of <mol>c1ccccc1</mol>?",
            " <num>-1.64</num>",
            f"{path}:3",
        ),
    ]


def test_a_template_naming_an_unknown_field_is_a_configuration_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("smiles,target\nCCO,1\n")
    source = SFTSource(
        path=str(path),
        prompt_template="<mol>{smiles}</mol> QED <num>{qed}</num>",
        completion_template=" <num>{target}</num>",
    )
    with pytest.raises(ValueError, match=r"names \['qed'\].*properties=\('qed',\)"):
        read_examples(source)


def test_source_options_are_validated(tmp_path):
    with pytest.raises(ValueError, match="needs both prompt_template and completion_template"):
        SFTSource(path="a.csv", prompt_template="{smiles}")
    with pytest.raises(ValueError, match="templates and properties apply to CSV"):
        SFTSource(path="a.jsonl", prompt_template="{smiles}")
    with pytest.raises(ValueError, match="format must be one of jsonl, csv; got 'sdf'"):
        SFTSource(path="a.sdf")
    with pytest.raises(ValueError, match="unknown properties"):
        SFTSource(
            path="a.csv", prompt_template="x", completion_template="y", properties=("colour",)
        )


def test_every_bad_jsonl_record_is_rejected_with_its_line_and_reason(tmp_path, tokenizer):
    good = {"prompt": "What is the logS of <mol>CCO</mol>?", "completion": " <num>-0.77</num>"}
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            good,  # 1
            '{"prompt": "What", "completion": ',  # 2 malformed JSON
            {"prompt": "What is the logS of water?"},  # 3 missing field
            {"prompt": "logS of <mol>C1CC</mol>?", "completion": " 1"},  # 4 unparseable SMILES
            {"prompt": "What is the logS?", "completion": "   "},  # 5 empty completion
            "[1, 2]",  # 6 not an object
            {"prompt": "What", "completion": 1.5},  # 7 not a string
            {"prompt": "What is the logS of <mool>CCO</mool>?", "completion": " 1"},  # 8 bad tag
            {
                "prompt": "What is the logS of the logS of the logS of water?",
                "completion": " <num>1</num>",
            },  # 9 prompt > seq_len
            good,  # 10
        ],
    )
    with path.open("ab") as handle:
        handle.write(b'{"prompt": "\xff", "completion": "x"}\n')  # 11 not UTF-8
    examples, rejects = read_examples(str(path))
    assert [e.where for e in examples] == [f"{path}:{n}" for n in (1, 9, 10)]
    reasons = {r.where: r.reason for r in rejects}
    assert list(reasons) == [f"{path}:{n}" for n in (2, 3, 4, 5, 6, 7, 8, 11)]
    assert reasons[f"{path}:2"].startswith("malformed JSON: Expecting value: column 34")
    assert reasons[f"{path}:3"] == "missing field 'completion' (completion); fields: 'prompt'"
    assert reasons[f"{path}:4"].startswith("prompt: span 1 <mol>: invalid mol 'C1CC'")
    assert reasons[f"{path}:5"] == "empty completion"
    assert reasons[f"{path}:6"] == "expected a JSON object, got list"
    assert reasons[f"{path}:7"] == "field 'completion' (completion) must be a string, got float 1.5"
    assert "mool" in reasons[f"{path}:8"]
    assert reasons[f"{path}:11"].startswith("not valid UTF-8: byte 0xff")

    seq_len = len(tokenizer.encode(examples[1].prompt)) - 1
    data = SupervisedData(
        examples, tokenizer, seq_len=seq_len, validation_fraction=0.0, rejects=rejects
    )
    assert data.rejects[-1] == Reject(
        f"{path}:9",
        "bad",
        f"prompt is {seq_len + 1} tokens; seq_len={seq_len} leaves no room for a completion token",
    )
    described = data.describe()
    assert (described["examples"], described["rejected"]) == (2, 9)
    assert described["rejected_by_file"] == {str(path): 9}

    out = write_rejects(data.rejects, tmp_path / "rejects.jsonl")
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == [r.to_dict() for r in data.rejects]


def test_bad_csv_rows_are_rejected_with_their_lines(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("smiles,target\nCCO,-0.77\nC1CC,1.0\nCCN,\nCCC,1,2\nc1ccccc1,-1.64\n")
    source = SFTSource(
        path=str(path),
        prompt_template="<mol>{smiles}</mol> QED <num>{qed}</num>",
        completion_template=" <num>{target}</num>",
        properties=("qed",),
    )
    examples, rejects = read_examples(source)
    assert [e.where for e in examples] == [f"{path}:2", f"{path}:6"]
    assert [r.where for r in rejects] == [f"{path}:{n}" for n in (3, 4, 5)]
    assert "C1CC" in rejects[0].reason
    assert rejects[1].reason == "field 'target' is empty"
    assert rejects[2].reason == "expected 2 fields (smiles, target), got 3"


def test_a_file_with_no_usable_record_is_an_error_naming_it(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "all_bad.jsonl", ["{", {"prompt": "x"}])
    with pytest.raises(
        SFTDataError,
        match=f"{path}: no usable prompt/completion record .all 2 "
        f"rejected.; first: {path}:1: malformed JSON",
    ) as info:
        read_examples(path)
    assert [r.where for r in info.value.rejects] == [f"{path}:1", f"{path}:2"]

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(SFTDataError, match="empty file: no records"):
        read_examples(empty)

    long = write_jsonl(tmp_path / "long.jsonl", pairs(3))
    with pytest.raises(SFTDataError, match=f"no usable example in {long}: 3 records rejected"):
        SupervisedData.from_sources([long], tokenizer, seq_len=2)


# --- rows -------------------------------------------------------------------------------------
def test_labels_take_loss_on_completion_and_eos_only(tmp_path, tokenizer):
    records = pairs(3)
    data = SupervisedData.from_sources(
        [write_jsonl(tmp_path / "p.jsonl", records)], tokenizer, seq_len=64, validation_fraction=0.0
    )
    batch = data.example_batch([0, 1, 2])
    for row, record in enumerate(records):
        example, prompt_len = reference_example(tokenizer, record["prompt"], record["completion"])
        n = len(example) - 1
        assert batch.input_ids[row, :n].tolist() == example[:-1]
        expected = [IGNORE] * (prompt_len - 1) + example[prompt_len:]
        assert batch.labels[row, :n].tolist() == expected
        assert batch.labels[row, n - 1] == tokenizer.eos_id
    assert batch.n_targets == sum(len(tokenizer.encode(r["completion"])) + 1 for r in records)


def test_rows_are_right_padded_to_the_longest_row_with_a_mask(tmp_path, tokenizer):
    records = [
        {"prompt": "What is the logS of <mol>CCO</mol>?", "completion": " <num>1</num>"},
        {"prompt": "What?", "completion": " <num>-0.77</num> yes"},
    ]
    data = SupervisedData.from_sources(
        [write_jsonl(tmp_path / "p.jsonl", records)], tokenizer, seq_len=64, validation_fraction=0.0
    )
    lengths = [
        len(reference_example(tokenizer, r["prompt"], r["completion"])[0]) - 1 for r in records
    ]
    batch = data.example_batch([0, 1])
    assert batch.input_ids.shape == (2, max(lengths))
    assert batch.attention_mask.tolist() == [[1] * n + [0] * (max(lengths) - n) for n in lengths]
    short = int(np.argmin(lengths))
    assert (batch.input_ids[short, lengths[short] :] == tokenizer.pad_id).all()
    assert (batch.labels[short, lengths[short] :] == IGNORE).all()
    alone = data.example_batch([1, 1])  # equal rows: no padding, no mask (the Batch contract)
    assert alone.attention_mask is None and alone.input_ids.shape == (2, lengths[1])


def test_long_completions_are_truncated_to_seq_len_and_counted(tmp_path, tokenizer):
    record = {"prompt": "What is the logS?", "completion": " <num>-0.77</num> yes yes yes"}
    example, prompt_len = reference_example(tokenizer, record["prompt"], record["completion"])
    seq_len = prompt_len + 2
    data = SupervisedData.from_sources(
        [write_jsonl(tmp_path / "p.jsonl", [record, record])],
        tokenizer,
        seq_len=seq_len,
        validation_fraction=0.0,
    )
    batch = data.global_batch(0, 2)
    assert batch.input_ids[0].tolist() == example[:seq_len]
    assert (
        batch.labels[0].tolist() == [IGNORE] * (prompt_len - 1) + example[prompt_len : seq_len + 1]
    )
    assert data.describe()["truncated"] == 2


def test_a_prompt_of_exactly_seq_len_tokens_keeps_one_target(tmp_path, tokenizer):
    record = pairs(1)[0]
    example, prompt_len = reference_example(tokenizer, record["prompt"], record["completion"])
    data = SupervisedData.from_sources(
        [write_jsonl(tmp_path / "p.jsonl", [record])],
        tokenizer,
        seq_len=prompt_len,
        validation_fraction=0.0,
    )
    batch = data.global_batch(0, 1)
    assert batch.n_targets == 1 and batch.labels[0, -1] == example[prompt_len]


class CharTokenizer:
    """Any object with encode / eos_id / pad_id will do: one id per character."""

    eos_id, pad_id = 0, 1

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]


def test_a_plain_tokenizer_object_is_enough():
    data = SupervisedData(
        [Example("ab", "cd", "f:1", "f")], CharTokenizer(), seq_len=8, validation_fraction=0.0
    )
    batch = data.global_batch(0, 1)
    assert batch.input_ids.tolist() == [[97, 98, 99, 100]]
    assert batch.labels.tolist() == [[IGNORE, 99, 100, 0]]


# --- order and split --------------------------------------------------------------------------
def test_global_batches_are_fixed_by_seed_and_step(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "p.jsonl", pairs(12))

    def build(seed):
        return SupervisedData.from_sources(
            [path], tokenizer, seq_len=64, seed=seed, validation_fraction=0.0
        )

    first, again, other = build(1), build(1), build(2)
    for step in (0, 1, 5):
        a, b = first.global_batch(step, 4), again.global_batch(step, 4)
        assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(
        first.global_batch(0, 12).input_ids, first.global_batch(1, 12).input_ids
    )  # a fresh epoch order
    assert not np.array_equal(
        first.global_batch(0, 12).input_ids, other.global_batch(0, 12).input_ids
    )
    # one epoch draws every example once: the prompts of the 12 one-row steps are all distinct
    rows = {tuple(first.global_batch(step, 1).input_ids[0]) for step in range(12)}
    assert len(rows) == 12


def test_validation_split_is_disjoint_stable_and_complete(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "p.jsonl", pairs(40))
    data = SupervisedData.from_sources(
        [path], tokenizer, seq_len=64, validation_fraction=0.3, seed=3
    )
    train = set(data.train_indices.tolist())
    validation = set(data.validation_indices.tolist())
    assert train.isdisjoint(validation) and train | validation == set(range(40))
    assert 0 < len(validation) < 40
    batches = list(data.validation_batches(5))
    assert sum(b.rows for b in batches) == len(validation)
    assert len(list(data.validation_batches(5, max_batches=1))) == 1
    rows = np.concatenate([b.input_ids[:, :8] for b in batches])
    assert np.array_equal(rows, data.example_batch(data.validation_indices).input_ids[:, :8])
    # training never draws a held-out example
    drawn = {tuple(data.global_batch(step, 1).input_ids[0]) for step in range(len(train))}
    held = {tuple(row[row != tokenizer.pad_id]) for b in batches for row in b.input_ids}
    assert drawn.isdisjoint(held)
    # another training seed validates on the same examples
    reseeded = SupervisedData.from_sources(
        [path], tokenizer, seq_len=64, validation_fraction=0.3, seed=4
    )
    assert np.array_equal(reseeded.validation_indices, data.validation_indices)
    described = data.describe()
    assert (described["train_examples"], described["validation_examples"]) == (
        40 - len(validation),
        len(validation),
    )


def test_no_validation_split_and_the_one_training_example_minimum(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "p.jsonl", pairs(4))
    data = SupervisedData.from_sources([path], tokenizer, seq_len=64, validation_fraction=0.0)
    assert list(data.validation_batches(2)) == [] and data.train_examples == 4
    with pytest.raises(SFTDataError, match="at least one training example"):
        SupervisedData.from_sources([path], tokenizer, seq_len=64, validation_fraction=0.9999)


# --- LoRA -------------------------------------------------------------------------------------
def tiny_llama(vocab_size: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def test_apply_lora_trains_only_the_adapters():
    from kiban.train.sft import apply_lora

    model = tiny_llama(64)
    base_total = sum(p.numel() for p in model.parameters())
    shapes = {
        n.rsplit(".", 1)[-1]: (m.in_features, m.out_features)
        for n, m in model.named_modules()
        if n.endswith(LLAMA_TARGET_MODULES)
    }
    wrapped, count = apply_lora(model, r=4, alpha=8)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    expected = 2 * sum(4 * (fan_in + fan_out) for fan_in, fan_out in shapes.values())
    assert (count.trainable, count.total) == (expected, base_total + expected)


def test_apply_lora_rejects_unknown_targets_listing_the_linear_layers():
    from kiban.train.sft import apply_lora

    with pytest.raises(
        ValueError,
        match=r"\['c_attn'\] are not linear layers of "
        r"LlamaForCausalLM; .*down_proj.*q_proj",
    ):
        apply_lora(tiny_llama(64), target_modules=["q_proj", "c_attn"])
    with pytest.raises(ValueError, match="'r' parameter of apply_lora"):
        apply_lora(tiny_llama(64), r=0)


def test_lora_training_and_save_lora_round_trip(tmp_path, tokenizer):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from kiban.train.sft import apply_lora, save_lora

    data = SupervisedData.from_sources(
        [write_jsonl(tmp_path / "p.jsonl", pairs(8))],
        tokenizer,
        seq_len=32,
        validation_fraction=0.0,
    )
    model = tiny_llama(tokenizer.vocab_size)
    model.save_pretrained(tmp_path / "base")
    probe = torch.from_numpy(data.example_batch([0, 1]).input_ids)

    def logits(m):
        with torch.no_grad():
            return m(input_ids=probe).logits

    base_logits = logits(model)
    wrapped, _ = apply_lora(model, r=4, alpha=8)
    assert torch.equal(logits(wrapped), base_logits)  # B starts at zero
    optimizer = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
    wrapped.train()
    losses = []
    for step in range(4):
        batch = data.global_batch(step % 2, 8)
        mask = None if batch.attention_mask is None else torch.from_numpy(batch.attention_mask)
        out = wrapped(input_ids=torch.from_numpy(batch.input_ids), attention_mask=mask)
        labels = torch.from_numpy(batch.labels)
        loss = torch.nn.functional.cross_entropy(
            out.logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum"
        )
        (loss / batch.n_targets).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item() / batch.n_targets)
    wrapped.eval()
    trained_logits = logits(wrapped)
    assert not torch.allclose(trained_logits, base_logits, atol=1e-3)
    assert losses[2] < losses[0]

    out = save_lora(wrapped, tmp_path / "lora")
    assert torch.equal(logits(wrapped), trained_logits)  # saving leaves the model as it was
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in (out / "adapter").iterdir()
    }
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged), trained_logits, atol=1e-5, rtol=1e-5)
    reloaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tmp_path / "base"), out / "adapter"
    ).eval()
    torch.testing.assert_close(logits(reloaded), trained_logits, atol=1e-5, rtol=1e-5)
