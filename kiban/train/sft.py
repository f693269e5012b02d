"""Supervised fine-tuning: a user's prompt → completion pairs as `TrainData`, and LoRA adapters.

Reading. A JSONL file holds one ``{"prompt": ..., "completion": ...}`` object a line (field names
configurable); a CSV (or CSV.gz) table is rendered row by row with two templates, e.g.
``prompt_template = "What is the logS of <mol>{smiles}</mol>?"`` and
``completion_template = " <num>{target}</num>"``, with the corpus's computed RDKit properties
(``{qed}``, ``{logp}``, …) available when listed in ``properties``. Files are read by the corpus
readers and text is canonicalised exactly as the corpus builder does (spans by their codecs,
prose in NFC), so a fine-tuned model sees the span forms it was pre-trained on. A record that
cannot be used (malformed JSON, a missing or empty field, an invalid span, a prompt with no room
left for a completion token) becomes a `Reject` naming file:line and the reason; it never stops
the job and is never dropped silently (`SupervisedData.rejects`, `write_rejects`, ``describe()``).

Training rows. An example is ``prompt ids + completion ids + [eos]``; the row is
``input_ids = example[:-1]``, ``labels = example[1:]`` with every label that is a prompt token set
to `IGNORE`, so loss falls on the completion and its end-of-text token only. Rows are right-padded
to the longest row of their batch; examples longer than ``seq_len + 1`` tokens lose the end of
their completion (counted as ``truncated``).

LoRA. `apply_lora` wraps a Hugging Face causal LM with `peft`; `save_lora` writes the adapter
and a merged plain-transformers model. torch and peft are imported only inside those functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kiban.corpus.readers import RawRecord, Reject, SourceSpec, read_source
from kiban.train.batches import IGNORE, Batch, held_out, stream_indices

SFT_FORMATS = ("jsonl", "csv")

#: Linear layers of a Llama-style decoder block (attention and MLP), LoRA's usual targets.
LLAMA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class SFTDataError(ValueError):
    """No usable example: ``rejects`` holds every reason, so a caller can still write them."""

    def __init__(self, message: str, rejects: Sequence[Reject] = ()):
        super().__init__(message)
        self.rejects = list(rejects)


# --- sources and examples ---------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SFTSource:
    """One file of prompt → completion pairs and how to read it.

    JSONL: ``prompt_field`` and ``completion_field`` name the two string fields of each object.
    CSV: ``prompt_template`` and ``completion_template`` are `str.format` templates over the
    columns and the computed ``properties`` (see `kiban.chem.DESCRIPTORS`), which
    are computed from ``mol_column`` (default: a column named ``smiles``/``canonical_smiles``).
    """

    path: str
    format: str = "auto"
    name: str | None = None
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    prompt_template: str | None = None
    completion_template: str | None = None
    properties: tuple[str, ...] = ()
    mol_column: str | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "properties", tuple(self.properties))
        fmt = self.spec.file_format  # validates format, properties and limit
        if fmt not in SFT_FORMATS:
            raise ValueError(
                f"SFT source {self.path!r}: format must be one of "
                f"{', '.join(SFT_FORMATS)}; got {fmt!r}"
            )
        templates = (self.prompt_template, self.completion_template)
        if fmt == "csv" and None in templates:
            raise ValueError(
                f"SFT source {self.path!r}: a CSV source needs both prompt_template "
                f"and completion_template; got prompt_template="
                f"{self.prompt_template!r}, completion_template="
                f"{self.completion_template!r}"
            )
        if fmt == "jsonl" and (templates != (None, None) or self.properties):
            raise ValueError(
                f"SFT source {self.path!r}: templates and properties apply to CSV "
                "sources; a JSONL source names its fields with prompt_field and "
                f"completion_field (got prompt_template={self.prompt_template!r}, "
                f"completion_template={self.completion_template!r}, "
                f"properties={self.properties!r})"
            )

    @property
    def spec(self) -> SourceSpec:
        """The corpus reader's view of this file."""
        return SourceSpec(
            path=self.path,
            format=self.format,
            name=self.name,
            template=self.prompt_template,
            columns={self.mol_column: "mol"} if self.mol_column else {},
            properties=self.properties,
            limit=self.limit,
        )

    @property
    def file_format(self) -> str:
        return self.spec.file_format


@dataclass(frozen=True)
class Example:
    """One canonical prompt → completion pair and the record it came from (file:line)."""

    prompt: str
    completion: str
    where: str
    source: str

    @property
    def key(self) -> str:
        """Stable identity for the validation split: equal pairs land in the same split."""
        text = f"{self.prompt}\x00{self.completion}".encode()
        return hashlib.blake2b(text, digest_size=16).hexdigest()


def _as_source(source: SFTSource | str | os.PathLike) -> SFTSource:
    return source if isinstance(source, SFTSource) else SFTSource(path=str(source))


def _template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _canonical(part: str, text: str) -> str:
    from kiban.corpus.clean import canonical_text
    from kiban.document import DocumentError

    try:
        return canonical_text(text)
    except DocumentError as error:
        raise DocumentError(f"{part}: {error.reason}") from None


def _example_from_json(record: RawRecord, source: SFTSource) -> Example:
    from kiban.document import DocumentError

    try:
        obj = json.loads(record.line)
    except json.JSONDecodeError as error:
        raise DocumentError(f"malformed JSON: {error.msg}: column {error.colno}") from None
    if not isinstance(obj, dict):
        raise DocumentError(f"expected a JSON object, got {type(obj).__name__}")
    texts = {}
    for part, name in (("prompt", source.prompt_field), ("completion", source.completion_field)):
        if name not in obj:
            raise DocumentError(
                f"missing field {name!r} ({part}); fields: {', '.join(map(repr, obj)) or 'none'}"
            )
        if not isinstance(obj[name], str):
            raise DocumentError(
                f"field {name!r} ({part}) must be a string, got "
                f"{type(obj[name]).__name__} {obj[name]!r}"
            )
        texts[part] = obj[name]
    return Example(
        _canonical("prompt", texts["prompt"]),
        _canonical("completion", texts["completion"]),
        record.where,
        record.source,
    )


def _example_from_row(record: RawRecord, source: SFTSource) -> Example:
    from kiban.corpus.clean import _render  # the corpus builder's template + property filling

    texts = {}
    for part, template in (
        ("prompt", source.prompt_template),
        ("completion", source.completion_template),
    ):
        # compute only the properties this template names (RDKit calls are the slow part)
        fields = _template_fields(template)
        wanted = tuple(p for p in source.properties if p in fields)
        rendered = _render(replace(record, template=template, properties=wanted))
        texts[part] = _canonical(part, rendered)
    return Example(texts["prompt"], texts["completion"], record.where, record.source)


def _check_template_fields(source: SFTSource, record: RawRecord) -> None:
    """A template naming a field that no row can have is a configuration error, not a row's."""
    from kiban.chem import DESCRIPTORS

    available = set(record.fields or {}) | set(source.properties)
    for part, template in (
        ("prompt_template", source.prompt_template),
        ("completion_template", source.completion_template),
    ):
        unknown = sorted(_template_fields(template) - available)
        if unknown:
            hint = [p for p in unknown if p in DESCRIPTORS]
            raise ValueError(
                f"{source.path}: {part} {template!r} names {unknown}, which are neither columns "
                f"({', '.join(record.fields or {})}) nor computed properties"
                + (f"; add properties={tuple(hint)!r} to compute {hint} with RDKit" if hint else "")
            )


def read_examples(source: SFTSource | str | os.PathLike) -> tuple[list[Example], list[Reject]]:
    """The usable examples of one file and a reject (file:line, reason) for every other record.

    Raises `SFTDataError` naming the file when no record is usable, `FileNotFoundError` when the
    file does not exist, and `ValueError` for a template that names unknown fields.
    """
    from kiban.document import DocumentError
    from kiban.modalities import CodecError

    source = _as_source(source)
    make = _example_from_row if source.file_format == "csv" else _example_from_json
    examples: list[Example] = []
    rejects: list[Reject] = []
    checked = False
    for record in read_source(source.spec):
        if isinstance(record, Reject):
            rejects.append(record)
            continue
        if record.fields is not None and not checked:
            _check_template_fields(source, record)
            checked = True
        try:
            example = make(record, source)
        except (DocumentError, CodecError) as error:
            reason = error.reason if isinstance(error, DocumentError) else str(error)
            rejects.append(Reject(record.where, record.source, reason))
            continue
        except ValueError as error:  # e.g. a property of a molecule RDKit cannot compute
            rejects.append(Reject(record.where, record.source, str(error)))
            continue
        if not example.completion.strip():
            rejects.append(Reject(record.where, record.source, "empty completion"))
            continue
        examples.append(example)
    if not examples:
        raise SFTDataError(
            f"{source.path}: no usable prompt/completion record (all "
            f"{len(rejects)} rejected); {_first_reasons(rejects)}",
            rejects,
        )
    return examples, rejects


def _first_reasons(rejects: Sequence[Reject], count: int = 3) -> str:
    if not rejects:
        return "no records"
    shown = "; ".join(f"{r.where}: {r.reason}" for r in rejects[:count])
    more = f" (and {len(rejects) - count} more)" if len(rejects) > count else ""
    return f"first: {shown}{more}"


def _file_of(where: str) -> str:
    """The file of a reject or example location (``path:line`` or ``path``)."""
    path, _, line = where.rpartition(":")
    return path if path and line.isdigit() else where


def write_rejects(rejects: Iterable[Reject], path: str | os.PathLike) -> Path:
    """Rejects as JSONL (``{"where", "source", "reason"}`` a line, as the corpus writes them)."""
    from kiban.io import atomic_write_text

    path = Path(path)
    atomic_write_text(
        path, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rejects)
    )
    return path


# --- training data ----------------------------------------------------------------------------
class PromptTokenizer(Protocol):
    """What `SupervisedData` needs of a tokenizer (`kiban.tokenizer.ScienceTokenizer` has it)."""

    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]: ...


def _encode_all(tokenizer: PromptTokenizer, texts: list[str]) -> list[Sequence[int]]:
    from kiban.tokenizer import ScienceTokenizer

    if isinstance(tokenizer, ScienceTokenizer):  # one batched call is much faster than per text
        chunk = 4096
        return [
            ids
            for start in range(0, len(texts), chunk)
            for ids in tokenizer.encode_batch(texts[start : start + chunk])
        ]
    return [tokenizer.encode(text) for text in texts]


@dataclass
class _Tokenised:
    tokens: np.ndarray  # all examples' ids, concatenated (each at most seq_len + 1 long)
    offsets: np.ndarray  # (n + 1,)
    prompt_lengths: np.ndarray  # (n,)
    kept: list[int] = field(default_factory=list)  # indices into the examples given
    truncated: int = 0


class SupervisedData:
    """Prompt → completion examples as deterministic training batches (`TrainData`).

    ``global_batch(step, batch_size)`` draws training examples in a fixed per-epoch order given by
    ``seed`` (`stream_indices`); validation rows are the examples whose key `held_out` selects
    with ``validation_fraction`` (salted by ``split_seed``, so runs with different ``seed``
    validate on the same examples). ``rejects`` (from reading) are kept, and examples whose
    prompt leaves no room for a completion token in ``seq_len`` are added to them.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        tokenizer: PromptTokenizer,
        *,
        seq_len: int,
        seed: int = 0,
        validation_fraction: float = 0.05,
        split_seed: int = 0,
        rejects: Sequence[Reject] = (),
    ):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.seq_len = seq_len
        self.seed = seed
        self.validation_fraction = validation_fraction
        self.split_seed = split_seed
        self.eos_id = int(tokenizer.eos_id)
        self.pad_id = int(tokenizer.pad_id)
        self.rejects = list(rejects)
        self.sources = sorted(
            {_file_of(e.where) for e in examples} | {_file_of(r.where) for r in rejects}
        )
        tokenised = self._tokenise(list(examples), tokenizer)
        if not tokenised.kept:
            raise SFTDataError(
                f"no usable example in {', '.join(self.sources) or 'no files'}: "
                f"{len(self.rejects)} records rejected; "
                f"{_first_reasons(self.rejects)}",
                self.rejects,
            )
        self.examples = [examples[i] for i in tokenised.kept]
        self.truncated = tokenised.truncated
        self._tokens = tokenised.tokens
        self._offsets = tokenised.offsets
        self._prompt_lengths = tokenised.prompt_lengths
        validation = held_out(
            np.array([e.key for e in self.examples], dtype=object), validation_fraction, split_seed
        )
        self._train_ids = np.flatnonzero(~validation)
        self._validation_ids = np.flatnonzero(validation)
        if len(self._train_ids) == 0:
            raise SFTDataError(
                f"all {len(self.examples)} examples fell in the validation split "
                f"(validation_fraction={validation_fraction}); at least one "
                "training example is needed: lower validation_fraction or add "
                "data",
                self.rejects,
            )

    @classmethod
    def from_sources(
        cls,
        sources: Iterable[SFTSource | str | os.PathLike],
        tokenizer: PromptTokenizer,
        *,
        seq_len: int,
        seed: int = 0,
        validation_fraction: float = 0.05,
        split_seed: int = 0,
    ) -> SupervisedData:
        """Read every source (`read_examples`) and build the data; files are read in order."""
        examples: list[Example] = []
        rejects: list[Reject] = []
        for source in sources:
            found, rejected = read_examples(source)
            examples += found
            rejects += rejected
        if not examples:
            raise SFTDataError("no SFT sources given")
        return cls(
            examples,
            tokenizer,
            seq_len=seq_len,
            seed=seed,
            validation_fraction=validation_fraction,
            split_seed=split_seed,
            rejects=rejects,
        )

    def _tokenise(self, examples: list[Example], tokenizer: PromptTokenizer) -> _Tokenised:
        ids = _encode_all(tokenizer, [text for e in examples for text in (e.prompt, e.completion)])
        pieces: list[np.ndarray] = []
        prompt_lengths: list[int] = []
        kept: list[int] = []
        truncated = 0
        for i, example in enumerate(examples):
            prompt, completion = ids[2 * i], ids[2 * i + 1]
            if len(completion) == 0:
                self.rejects.append(
                    Reject(example.where, example.source, "completion encodes to no tokens")
                )
                continue
            if len(prompt) > self.seq_len:
                self.rejects.append(
                    Reject(
                        example.where,
                        example.source,
                        f"prompt is {len(prompt)} tokens; seq_len={self.seq_len} leaves no room "
                        "for a completion token",
                    )
                )
                continue
            tokens = np.concatenate(
                [
                    np.asarray(prompt, np.int64),
                    np.asarray(completion, np.int64),
                    np.array([self.eos_id], np.int64),
                ]
            )
            if len(tokens) > self.seq_len + 1:  # rows are tokens[:-1], at most seq_len long
                tokens = tokens[: self.seq_len + 1]
                truncated += 1
            pieces.append(tokens)
            prompt_lengths.append(len(prompt))
            kept.append(i)
        lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        return _Tokenised(
            tokens, offsets, np.array(prompt_lengths, dtype=np.int64), kept, truncated
        )

    # --- TrainData ----------------------------------------------------------------------------
    @property
    def train_indices(self) -> np.ndarray:
        """Positions in ``self.examples`` that training draws from."""
        return self._train_ids.copy()

    @property
    def validation_indices(self) -> np.ndarray:
        """Positions in ``self.examples`` held out for validation, in reading order."""
        return self._validation_ids.copy()

    @property
    def train_examples(self) -> int:
        return len(self._train_ids)

    @property
    def validation_examples(self) -> int:
        return len(self._validation_ids)

    def example_batch(self, indices: Sequence[int]) -> Batch:
        """Rows for examples ``indices`` (positions in ``self.examples``), in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        starts, stops = self._offsets[indices], self._offsets[indices + 1]
        row_lengths = stops - starts - 1  # (B,)
        width = int(row_lengths.max())
        input_ids = np.full((len(indices), width), self.pad_id, dtype=np.int64)  # (B, T)
        labels = np.full((len(indices), width), IGNORE, dtype=np.int64)  # (B, T)
        attention_mask = np.zeros((len(indices), width), dtype=np.int64)  # (B, T)
        for row, (example, start, stop) in enumerate(zip(indices, starts, stops)):
            tokens = self._tokens[start:stop]
            n = len(tokens) - 1
            input_ids[row, :n] = tokens[:-1]
            labels[row, :n] = tokens[1:]
            # labels[t] is token t + 1: the prompt's own tokens 1 .. p-1 take no loss
            labels[row, : max(int(self._prompt_lengths[example]) - 1, 0)] = IGNORE
            attention_mask[row, :n] = 1
        full = bool((row_lengths == width).all())
        return Batch(input_ids, labels, None if full else attention_mask)

    def global_batch(self, step: int, batch_size: int) -> Batch:
        if step < 0 or batch_size < 1:
            raise ValueError(
                f"need step >= 0 and batch_size >= 1, got step={step}, batch_size={batch_size}"
            )
        order = stream_indices(len(self._train_ids), self.seed, step * batch_size, batch_size)
        return self.example_batch(self._train_ids[order])

    def validation_batches(
        self, batch_size: int, max_batches: int | None = None
    ) -> Iterator[Batch]:
        """The held-out examples in reading order; the last batch may have fewer rows."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        starts = range(0, len(self._validation_ids), batch_size)
        if max_batches is not None:
            starts = starts[:max_batches]
        for start in starts:
            yield self.example_batch(self._validation_ids[start : start + batch_size])

    def describe(self) -> dict[str, Any]:
        lengths = np.diff(self._offsets) - 1  # row lengths
        targets = lengths - np.maximum(self._prompt_lengths - 1, 0)
        return {
            "kind": "supervised",
            "sources": self.sources,
            "examples": len(self.examples),
            "train_examples": self.train_examples,
            "validation_examples": self.validation_examples,
            "validation_fraction": self.validation_fraction,
            "seq_len": self.seq_len,
            "train_tokens": int(lengths[self._train_ids].sum()),
            "train_target_tokens": int(targets[self._train_ids].sum()),
            "truncated": self.truncated,
            "rejected": len(self.rejects),
            "rejected_by_file": dict(Counter(_file_of(r.where) for r in self.rejects)),
        }


# --- LoRA -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParameterCount:
    trainable: int
    total: int

    @property
    def trainable_share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def linear_module_names(model) -> list[str]:
    """Names (last path component) of the model's linear layers: what LoRA can target."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if name and isinstance(module, (torch.nn.Linear, Conv1D))
        }
    )


def apply_lora(
    model,
    *,
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
):
    """Wrap a Hugging Face causal LM with LoRA adapters (``peft``); only they train.

    ``target_modules`` are linear-layer names (default: a Llama-style block's seven). peft
    injects the adapters into ``model`` itself; use the returned wrapper. Returns
    ``(peft_model, ParameterCount)``.
    """
    if not (isinstance(r, int) and r >= 1):
        raise ValueError(f"The 'r' parameter of apply_lora must be an int >= 1. Got {r!r}.")
    if not alpha > 0:
        raise ValueError(f"The 'alpha' parameter of apply_lora must be > 0. Got {alpha!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"The 'dropout' parameter of apply_lora must be in [0, 1). Got {dropout!r}."
        )
    targets = list(LLAMA_TARGET_MODULES if target_modules is None else target_modules)
    if isinstance(target_modules, str) or not targets:
        raise ValueError(
            "The 'target_modules' parameter of apply_lora must be a non-empty "
            f"sequence of module names. Got {target_modules!r}."
        )
    available = linear_module_names(model)
    unknown = [t for t in targets if t not in available]
    if unknown:
        raise ValueError(
            f"LoRA target modules {unknown} are not linear layers of "
            f"{type(model).__name__}; its linear layers are named: "
            f"{', '.join(available)}"
        )
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    return peft_model, ParameterCount(trainable, total)


def merged_state_dict(model) -> dict:
    """The base model's state dict with every LoRA delta added to its weight, computed without
    modifying ``model`` (merging in place and unmerging would round bf16 weights each save)."""
    import torch
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapter = model.active_adapter
    state = {}
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer):
                layer = module.get_base_layer()
                state[f"{name}.weight"] = layer.weight + module.get_delta_weight(adapter)
                if layer.bias is not None:
                    state[f"{name}.bias"] = layer.bias
        for key, value in base.state_dict().items():
            if "lora_" in key or ".base_layer." in key:
                continue
            state.setdefault(key, value)
    return state


def save_lora(model, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir`` as a full Hugging Face model with the adapter merged in (what plain
    ``transformers.AutoModelForCausalLM.from_pretrained(out_dir)`` loads) and ``out_dir/adapter``
    (adapter_config.json, adapter_model.safetensors, for ``peft.PeftModel.from_pretrained``).

    ``model`` (from `apply_lora`) is left as it was, so training can go on after a save.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise TypeError(
            f"save_lora needs the model apply_lora returned (a peft.PeftModel), "
            f"got {type(model).__name__}"
        )
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir / "adapter", safe_serialization=True)
    model.get_base_model().save_pretrained(
        out_dir, state_dict=merged_state_dict(model), safe_serialization=True
    )
    return out_dir
