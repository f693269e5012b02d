"""`Generator`: a model directory, prompts in, checked completions out.

A kiban model directory is a Hugging Face causal LM (``config.json`` + weights) with the kiban
tokenizer files (`ScienceTokenizer.save`). A plain Hugging Face directory (``tokenizer.json``, no
``kiban_tokenizer.json``) works too, without modality constraints.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiban.document import MODALITY_TAGS
from kiban.generate._errors import GenerationError

_TAG_PATTERN = r"<(/?)(" + "|".join(MODALITY_TAGS) + r")>"


@dataclass(frozen=True, slots=True)
class GeneratedSpan:
    """A modality span the completion wrote (or finished): its content and what the codec said."""

    modality: str
    text: str
    canonical: str | None = None
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        out = {"modality": self.modality, "text": self.text}
        out.update({"canonical": self.canonical} if self.error is None else {"error": self.error})
        return out


@dataclass(frozen=True, slots=True)
class Completion:
    """One generated continuation. ``text`` is prompt + completion; ``valid`` is True when every
    span the completion touched is closed and parses with its modality's codec."""

    prompt: str
    text: str
    completion: str
    valid: bool
    spans: tuple[GeneratedSpan, ...]
    prompt_tokens: int
    completion_tokens: int
    stop_reason: str  # "eos" | "span_closed" | "length"
    completion_ids: tuple[int, ...] = ()  # generated token ids, the stop token included
    tries: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "text": self.text,
            "completion": self.completion,
            "valid": self.valid,
            "spans": [s.as_dict() for s in self.spans],
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "stop_reason": self.stop_reason,
            "tries": self.tries,
        }


def check_spans(text: str, generated_from: int) -> tuple[GeneratedSpan, ...]:
    """The spans of ``text`` that end after character ``generated_from``, each parsed with its
    codec. Lenient about structure (generated text may be malformed): a stray closer, a tag
    opened inside a span and a span left open are error spans."""
    from kiban.modalities import CodecError, get_codec

    spans: list[GeneratedSpan] = []
    open_name, open_end = None, 0
    for match in re.finditer(_TAG_PATTERN, text):
        closing, name = bool(match.group(1)), match.group(2)
        if match.end() <= generated_from:
            open_name, open_end = (None, 0) if closing else (name, match.end())
            continue
        if not closing and open_name is not None:
            spans.append(
                GeneratedSpan(
                    open_name,
                    text[open_end : match.start()],
                    error=f"<{name}> opened inside <{open_name}>",
                )
            )
            open_name, open_end = name, match.end()
        elif not closing:
            open_name, open_end = name, match.end()
        elif open_name != name:
            spans.append(GeneratedSpan(name, "", error=f"stray closing tag </{name}>"))
        else:
            content = text[open_end : match.start()]
            try:
                spans.append(
                    GeneratedSpan(name, content, canonical=get_codec(name).canonical(content))
                )
            except CodecError as error:
                spans.append(GeneratedSpan(name, content, error=error.reason))
            open_name = None
    if open_name is not None and len(text) > generated_from:
        spans.append(
            GeneratedSpan(
                open_name,
                text[open_end:],
                error=f"<{open_name}> span not closed when generation stopped",
            )
        )
    return tuple(spans)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise GenerationError(
            f"The '{name}' parameter must be an integer >= {minimum}. Got {value!r} instead."
        )


def default_temperature(n: int) -> float:
    """The temperature when none is given: 1 (sampling) for several completions per prompt,
    0 (greedy) for one; n greedy completions of a prompt would be n identical copies."""
    return 1.0 if n > 1 else 0.0


def check_parameters(
    *,
    n: int,
    max_new_tokens: int,
    temperature: float | None,
    top_p: float,
    seed: int | None,
    max_tries: int,
) -> Any:
    """Validate the generation parameters (before any model is loaded); the `SamplingConfig`
    (``temperature=None``: `default_temperature` of ``n``)."""
    from kiban.generate.engine import SamplingConfig

    _check_int("n", n, 1)
    _check_int("max_new_tokens", max_new_tokens, 1)
    _check_int("max_tries", max_tries, 1)
    if seed is not None:
        _check_int("seed", seed, 0)
    if temperature is None:
        temperature = default_temperature(n)
    return SamplingConfig(temperature=temperature, top_p=top_p)


class Generator:
    """Generates from one loaded model. Build with `load_generator`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        science: Any | None,
        eos_ids: list[int],
        pad_id: int,
        model_dir: Path,
        engine: str = "auto",
    ):
        self.model = model
        self.hf_tokenizer = tokenizer  # tokenizers.Tokenizer: decoding (and plain encoding)
        self.science = science  # ScienceTokenizer or None (plain Hugging Face directory)
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.model_dir = model_dir
        self.engine_kind = engine
        self.vocab_size = model.get_input_embeddings().num_embeddings
        self._engines: dict[str, Any] = {}
        self._constraints = None
        self.last_engine: str | None = None  # which path the last `generate` ran
        self.device = model.get_input_embeddings().weight.device

    # --- prompts ------------------------------------------------------------------------------
    def _encode(self, prompt: str) -> list[int]:
        if self.science is None:
            ids = self.hf_tokenizer.encode(prompt).ids
        else:
            from kiban.document import DocumentError
            from kiban.generate.constraints import OUTSIDE, PromptState

            state = PromptState.of(prompt)
            try:
                if state.modality is None:
                    ids = self.science.encode(prompt)
                elif state.bracket != OUTSIDE and self.science.brackets is not None:
                    ids = self._encode_open_bracket(prompt)
                else:  # a prompt that ends inside a span: encode it closed, drop the closer
                    ids = self.science.encode(f"{prompt}</{state.modality}>")[:-1]
            except DocumentError as error:
                raise GenerationError(
                    f"The 'prompt' parameter is not valid tagged text: {error}. Got {prompt!r}."
                ) from None
        # an empty prompt starts a new document
        return ids or [self.eos_ids[0] if self.eos_ids[0] >= 0 else self.pad_id]

    def _encode_open_bracket(self, prompt: str) -> list[int]:
        """A prompt ending inside a SMILES bracket atom (``<mol>C[N``): the text before the
        ``[`` encoded as a closed span (closer dropped), then the open atom in bracket parts,
        the ids the model itself writes inside a bracket (whole-atom tokens need the ``]``)."""
        from kiban.generate.constraints import open_bracket_parts

        opening = prompt.rfind("[")
        ids = self.science.encode(f"{prompt[:opening]}</mol>")[:-1]
        vocabulary = self.science.brackets["parts"]
        return ids + [vocabulary[c][t] for c, t in open_bracket_parts(prompt[opening + 1 :])]

    def _engine(self, total_length: int) -> Any:
        """The engine for this length (built once per kind: building copies fused weights)."""
        from kiban.generate.engine import choose_engine

        engine_class = choose_engine(self.model, self.engine_kind, total_length=total_length)
        if engine_class.name not in self._engines:
            self._engines[engine_class.name] = engine_class(self.model)
        return self._engines[engine_class.name]

    def constraints(self) -> Any:
        from kiban.generate.constraints import ModalityConstraints

        if self._constraints is None:
            self._constraints = ModalityConstraints(self.science, self.vocab_size)
        return self._constraints

    # --- generation ---------------------------------------------------------------------------
    def generate(
        self,
        prompts: str | list[str],
        *,
        n: int = 1,
        max_new_tokens: int = 64,
        temperature: float | None = None,
        top_p: float = 1.0,
        seed: int | None = None,
        constrain: bool = True,
        valid_only: bool = False,
        max_tries: int = 8,
    ) -> list[Completion]:
        """``n`` completions per prompt (prompt-major order).

        ``temperature``: 0 is greedy; without one, ``n > 1`` samples at temperature 1 and
        ``n == 1`` is greedy (`default_temperature`). An explicit 0 with ``n > 1`` gives ``n``
        identical completions.

        ``constrain`` masks tokens outside the current modality's vocabulary and SMILES grammar
        (kiban tokenizers only). ``valid_only`` resamples rows whose spans do not parse, up to
        ``max_tries`` generations per row (greedy decoding is deterministic: one try); rows
        still invalid come back with ``valid=False``. ``seed`` makes sampling reproducible."""
        import torch

        if isinstance(prompts, str):
            prompts = [prompts]
        if (
            not isinstance(prompts, list)
            or not prompts
            or not all(isinstance(p, str) for p in prompts)
        ):
            raise GenerationError(
                f"The 'prompts' parameter must be a string or a non-empty list "
                f"of strings. Got {prompts!r} instead."
            )
        sampling = check_parameters(
            n=n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            max_tries=max_tries,
        )
        generator = torch.Generator(device=self.device).manual_seed(
            seed if seed is not None else secrets.randbits(63)
        )
        rows = [p for p in prompts for _ in range(n)]
        encoded = {p: self._encode(p) for p in prompts}
        results = self._run(rows, encoded, max_new_tokens, sampling, generator, constrain)
        tries = [1] * len(rows)
        if valid_only and not sampling.greedy:
            for _ in range(max_tries - 1):
                pending = [i for i, r in enumerate(results) if not r.valid]
                if not pending:
                    break
                again = self._run(
                    [rows[i] for i in pending],
                    encoded,
                    max_new_tokens,
                    sampling,
                    generator,
                    constrain,
                )
                for i, result in zip(pending, again):
                    results[i] = result
                    tries[i] += 1
        return [Completion(**{**_fields(r), "tries": t}) for r, t in zip(results, tries)]

    def _run(
        self,
        rows: list[str],
        encoded: dict[str, list[int]],
        max_new_tokens: int,
        sampling: Any,
        generator: Any,
        constrain: bool,
    ) -> list[Completion]:
        import torch

        from kiban.generate.engine import decode

        ids = [encoded[p] for p in rows]
        width = max(map(len, ids))
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for row, row_ids in enumerate(ids):
            input_ids[row, width - len(row_ids) :] = torch.tensor(row_ids)
            attention_mask[row, width - len(row_ids) :] = True
        constraint = None
        if self.science is not None:
            from kiban.generate.constraints import PromptState

            states = [PromptState.of(p) for p in rows]
            tables = self.constraints()
            stop_ids = tables.stop_ids(states)
            if constrain:
                constraint = tables.track(states)
        else:
            stop_ids = torch.tensor([self.eos_ids] * len(rows), dtype=torch.long)
        known = self.hf_tokenizer.get_vocab_size(with_added_tokens=True)
        if constraint is None and self.vocab_size > known:
            from kiban.generate.constraints import VocabularyLimit

            constraint = VocabularyLimit(known)
        engine = self._engine(width + max_new_tokens)
        self.last_engine = engine.name
        output = decode(
            engine,
            input_ids,
            attention_mask,
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            generator=generator,
            stop_ids=stop_ids,
            constraint=constraint,
            pad_id=self.pad_id,
        )
        results = []
        for row, prompt in enumerate(rows):
            generated = output.tokens[row, : int(output.lengths[row])].tolist()
            results.append(self._completion(prompt, ids[row], generated, bool(output.stopped[row])))
        return results

    def _completion(
        self, prompt: str, prompt_ids: list[int], generated: list[int], stopped: bool
    ) -> Completion:
        stop_reason = "length"
        if stopped:
            stop_reason = "eos" if generated[-1] in self.eos_ids else "span_closed"
        shown = generated[:-1] if stop_reason == "eos" else generated
        decode = lambda i: self.hf_tokenizer.decode(i, skip_special_tokens=False)
        prompt_text = decode(prompt_ids)
        full = decode(prompt_ids + shown)
        completion = full[len(prompt_text) :] if full.startswith(prompt_text) else decode(shown)
        text = prompt + completion
        spans = check_spans(text, len(prompt)) if self.science is not None else ()
        return Completion(
            prompt=prompt,
            text=text,
            completion=completion,
            valid=all(s.valid for s in spans),
            spans=spans,
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(generated),
            stop_reason=stop_reason,
            completion_ids=tuple(generated),
        )


def _fields(completion: Completion) -> dict[str, Any]:
    return {name: getattr(completion, name) for name in Completion.__slots__}


def _eos_ids(model: Any, tokenizer: Any, model_dir: Path) -> list[int]:
    ids: list[int] = []
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        ids += [value] if isinstance(value, int) else list(value or [])
    config_path = model_dir / "tokenizer_config.json"
    if config_path.is_file():
        token = json.loads(config_path.read_text()).get("eos_token")
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
            ids.append(tokenizer.token_to_id(token))
    return list(dict.fromkeys(ids)) or [-1]


def check_device(device: str) -> Any:
    """``device`` as a torch.device, or a GenerationError saying why it cannot be used here."""
    import torch

    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise GenerationError(
            f"The 'device' parameter must name a torch device such as 'cpu' or "
            f"'cuda:0'. Got {device!r} instead."
        ) from None
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise GenerationError(
                f"device {device!r}: no CUDA device is usable here (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}); use device='cpu'"
            )
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise GenerationError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif target.type != "cpu":
        raise GenerationError(f"device {device!r}: generation runs on 'cpu' or 'cuda' devices")
    return target


def _adapter_and_base(model_dir: Path) -> tuple[Path | None, Path]:
    """A LoRA adapter directory (``adapter_config.json``, no ``config.json``) → (adapter, the
    base model directory it names); anything else → (None, model_dir)."""
    if not (model_dir / "adapter_config.json").is_file() or (model_dir / "config.json").is_file():
        return None, model_dir
    import json

    try:
        base = json.loads((model_dir / "adapter_config.json").read_text())[
            "base_model_name_or_path"
        ]
    except (ValueError, KeyError) as error:
        raise GenerationError(
            f"{model_dir / 'adapter_config.json'}: no readable base_model_name_or_path ({error})"
        ) from None
    candidates = [Path(base)] if base else []
    candidates += [model_dir.parent] if (model_dir.parent / "config.json").is_file() else []
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return model_dir, candidate
    raise GenerationError(
        f"{model_dir} is a LoRA adapter whose base model {base!r} "
        "(adapter_config.json: base_model_name_or_path) is not a local model "
        "directory; copy the base there or generate from the merged model"
    )


def _is_run_dir(directory: Path) -> bool:
    """What ``kiban train`` / ``kiban finetune`` leave in their --out from the first step on."""
    return (directory / "checkpoints").is_dir() or (directory / "run.json").is_file()


def resolve_model_dir(path: str | Path) -> Path:
    """The model directory ``path`` names: ``path`` itself (a model or LoRA adapter
    directory), or a training run's final model ``path/model``. A run that has not written its
    final model yet is a `GenerationError` naming its newest checkpoint."""
    path = Path(path)
    # a run directory holds its own config.json (the run's config), so it is told apart by what
    # only runs write (checkpoints/, run.json), never by config.json
    if not _is_run_dir(path):
        return path
    model = path / "model"
    if (model / "config.json").is_file() or (model / "adapter_config.json").is_file():
        return model
    from kiban.train.checkpoint import latest

    newest = latest(path) if (path / "checkpoints").is_dir() else None
    progress = f"its newest checkpoint is {newest}" if newest else "it has no checkpoint yet"
    raise GenerationError(
        f"{path} is a training run without a final model yet ({path / 'model'} "
        f"is missing; {progress}): wait for the run to finish, or stop it with "
        "Ctrl-C (it saves the model of the step it stopped at), or resume it "
        "with `kiban train CONFIG --resume`"
    )


def load_generator(
    model_dir: str | Path, *, engine: str = "auto", dtype: str = "float32", device: str = "cpu"
) -> Generator:
    """Load a model directory (config.json, weights, tokenizer.json [+ kiban_tokenizer.json]),
    or the final model of a training run directory (`resolve_model_dir`; the generator's
    ``model_dir`` says which was loaded).

    ``engine``: "auto" (the fast Llama decoder when the model allows it), "fast" (require it)
    or "hf" (the model's own forward, any causal LM). ``device``: where the model, its caches
    and the sampling run ("cpu", "cuda", "cuda:1", ...; measured so far on CPUs only)."""
    model_dir = resolve_model_dir(model_dir)
    from kiban.train.models import model_dir_problem

    adapter, model_dir = _adapter_and_base(model_dir)
    problem = model_dir_problem(model_dir)
    if problem:
        raise GenerationError(problem)
    if not (model_dir / "tokenizer.json").is_file():
        raise GenerationError(
            f"{model_dir / 'tokenizer.json'} is missing: generation needs the model's tokenizer"
        )
    if engine not in ("auto", "fast", "hf"):
        raise GenerationError(
            f"The 'engine' parameter must be 'auto', 'fast' or 'hf'. Got {engine!r} instead."
        )
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from kiban.tokenizer import METADATA_FILE, ScienceTokenizer, TokenizerError

    science = None
    if (model_dir / METADATA_FILE).is_file():
        try:
            science = ScienceTokenizer.load(model_dir)
        except TokenizerError as error:
            raise GenerationError(str(error)) from None
        tokenizer = science.hf
    else:
        try:
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as error:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise GenerationError(
                f"{model_dir / 'tokenizer.json'}: not a readable tokenizer ({error})"
            ) from None
    target = check_device(device)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise GenerationError(f"The 'dtype' parameter must name a torch dtype. Got {dtype!r}.")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch_dtype, attn_implementation="sdpa"
        )
    except (OSError, ValueError) as error:
        raise GenerationError(f"{model_dir}: cannot load the model ({error})") from None
    if adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise GenerationError(
                f"{adapter}: cannot apply the LoRA adapter to {model_dir} ({error})"
            ) from None
    model.eval()
    if target.type != "cpu":
        model.to(target)
    embeddings = model.get_input_embeddings().num_embeddings
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab > embeddings:
        raise GenerationError(
            f"tokenizer vocabulary ({vocab} tokens, {model_dir / 'tokenizer.json'}) is larger "
            f"than the model's embedding ({embeddings} rows, vocab_size in "
            f"{model_dir / 'config.json'})"
        )
    eos_ids = [science.eos_id] if science is not None else _eos_ids(model, tokenizer, model_dir)
    pad_id = (
        science.pad_id
        if science is not None
        else next(
            (i for i in (model.config.pad_token_id, eos_ids[0]) if isinstance(i, int) and i >= 0), 0
        )
    )
    return Generator(
        model,
        tokenizer,
        science=science,
        eos_ids=eos_ids,
        pad_id=pad_id,
        model_dir=model_dir,
        engine=engine,
    )
