"""The science tokenizer: byte-level BPE for prose, atom/element/digit/residue tokens inside spans.

One id space, three kinds of token:

* **prose**: byte-level BPE (Hugging Face `tokenizers`) trained on the prose of a corpus; every
  digit is its own token, so numbers in prose read digit by digit as they do in spans;
* **tags**: ``<mol>`` ``</mol>`` ``<crystal>`` ``</crystal>`` ``<num>`` ``</num>`` ``<protein>``
  ``</protein>`` are single tokens that no merge crosses; ``<|endoftext|>`` separates documents;
* **science**: inside a span, the span's own vocabulary: atom-level SMILES tokens (the standard
  SMILES regex), crystal tokens (space-group symbols, element symbols, digits, Wyckoff letters),
  digit tokens for numbers, one token per residue for proteins.

A science token with the same string as a prose token shares its id ("C" in prose and in a SMILES
is one id; the surrounding tag tells the model which it is), so the vocabulary stays small and the
saved ``tokenizer.json`` *decodes every kiban id sequence exactly* with plain `tokenizers` or
`transformers`. What a plain Hugging Face file cannot do is switch pre-tokenization at a tag: it
encodes span *contents* with the prose BPE. So plain-HF **encoding** agrees with kiban's on prose
and tags, and differs inside ``<mol>``, ``<crystal>``, ``<protein>`` spans (and on ``±`` or units
in ``<num>``); the tests pin down exactly that. Use `ScienceTokenizer` to encode training data.

A SMILES bracket atom outside the vocabulary (``[Na]`` in a corpus that never wrote it) is split
into *bracket parts* (`kiban.modalities._smiles`): ``[`` isotope digits, element, chirality,
hydrogen count, charge, ``:`` class digits, ``]``, each an id of its own that no organic atom,
ring label or bond outside brackets uses (``[Na]`` never contains the id of ``N``). The part ids
are spelled in ``tokenizer.json`` with a private-use marker character that its decoder deletes,
so plain `tokenizers`/`transformers` still decode them exactly. Any other piece of span content
outside the science vocabulary (an unseen unit, a bracket that is no SMILES atom such as
``[Xx]``) is encoded with the prose BPE, so ``decode(encode(text)) == text`` holds for every text.

Format versions: 2 has the bracket parts (metadata ``smiles_brackets``); 1, written by kiban
before them, spelled every out-of-vocabulary bracket atom with the prose BPE (``[Na]`` ->
``[`` ``N`` ``a`` ``]``). Version-1 tokenizers load and encode exactly as they always did, so the
ids of corpora and models built with them do not change.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    trainers,
)

from kiban.document import _TAG_SHAPED, MODALITY_TAGS, split_tagged
from kiban.formats import FormatError, check, register
from kiban.modalities._smiles import (
    BRACKET_ATOM_PATTERN,
    BRACKET_PARTS,
    ELEMENTS,
    MARKER_PATTERN,
    MARKERS,
    alternation,
    split_bracket_atom,
)

FORMAT_NAME = "kiban.tokenizer"
FORMAT_VERSION = 2
METADATA_FILE = "kiban_tokenizer.json"
HF_FILE = "tokenizer.json"
PROSE_FILE = "kiban_prose_tokenizer.json"  # only for tokenizers extended from a base model

END_OF_TEXT = "<|endoftext|>"
PAD = "<|pad|>"
UNKNOWN = "<|unk|>"  # internal sentinel for science pieces outside the vocabulary; never emitted
SPECIAL_TOKENS = (END_OF_TEXT, PAD, UNKNOWN)
TAG_TOKENS = tuple(t for name in MODALITY_TAGS for t in (f"<{name}>", f"</{name}>"))


def _from_version_1(meta: dict[str, Any]) -> dict[str, Any]:
    """A version-1 tokenizer has no bracket parts: it keeps spelling unknown bracket atoms with
    the prose BPE (its ids must not change)."""
    return {**meta, "smiles_brackets": None}


TOKENIZER_FORMAT = register(
    FORMAT_NAME,
    FORMAT_VERSION,
    upgrades={1: _from_version_1},
    description="kiban_tokenizer.json: span patterns, science tokens, SMILES bracket parts",
)


@functools.cache
def space_group_symbols() -> tuple[str, ...]:
    """Hermann-Mauguin short symbols of every setting spglib knows (393 strings)."""
    import warnings

    import spglib

    with warnings.catch_warnings():  # spglib >= 2.5 warns about its own error handling mode
        warnings.simplefilter("ignore", DeprecationWarning)
        return tuple(
            sorted({spglib.get_spacegroup_type(h).international_short for h in range(1, 531)})
        )


@functools.cache
def span_patterns() -> dict[str, str]:
    """Per modality, the regex whose matches are that modality's tokens (Python `re` and
    Oniguruma agree on these)."""
    from kiban.modalities.molecule import SMILES_TOKEN_PATTERN
    from kiban.modalities.protein import RESIDUES

    return {
        "mol": SMILES_TOKEN_PATTERN,
        # the space group is the whole second line; element symbols, longest first; then single
        # digits, Wyckoff letters, and the separators of kiban crystal text
        "crystal": rf"(?<=\n)(?:{alternation(space_group_symbols())})(?=\n)"
        rf"|{alternation(ELEMENTS)}|[0-9]|[a-z]|[A-Z]|\.|-|\+|\(|\)| |\n",
        "num": r"[0-9]|\.|-|\+|e(?=[-+0-9])|±|\(|\)| |\S+",
        "protein": rf"[{RESIDUES}]",
    }


def _base_science_tokens() -> dict[str, list[str]]:
    """Science tokens that are always in the vocabulary, whatever the corpus."""
    from kiban.modalities.protein import RESIDUES

    digits = [str(d) for d in range(10)]
    smiles = [
        "B",
        "Br",
        "C",
        "Cl",
        "N",
        "O",
        "S",
        "P",
        "F",
        "I",
        "b",
        "c",
        "n",
        "o",
        "s",
        "p",
        "(",
        ")",
        ".",
        "=",
        "#",
        "-",
        "+",
        "\\",
        "/",
        ":",
        "~",
        "@",
        "?",
        ">",
        "*",
        "$",
        *digits,
        "[nH]",
        "[C@H]",
        "[C@@H]",
        "[C@]",
        "[C@@]",
        "[N+]",
        "[O-]",
        "[NH+]",
        "[NH2+]",
        "[NH3+]",
        "[n+]",
        "[S@]",
        "[S@@]",
        "[Si]",
        "[Se]",
        "[H]",
    ]
    smiles += [f"%{i:02d}" for i in range(10, 100)]
    crystal = [
        *space_group_symbols(),
        *ELEMENTS,
        *digits,
        *"abcdefghijklmnopqrstuvwxyz",
        "A",
        ".",
        "-",
        "+",
        "(",
        ")",
        " ",
        "\n",
    ]
    number = [*digits, ".", "-", "+", "e", "±", "(", ")", " "]
    return {"mol": smiles, "crystal": crystal, "num": number, "protein": list(RESIDUES)}


@functools.cache
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used by byte-level BPE."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_level(text: str) -> str:
    """The byte-level BPE spelling of ``text`` (" " -> "Ġ", "\\n" -> "Ċ", ...)."""
    table = _byte_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


class TokenizerError(ValueError):
    pass


def _prose_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[0-9]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def _check_brackets(brackets: Any, *, where: str | os.PathLike) -> None:
    """Format-2 ``smiles_brackets`` metadata: a bracket-atom pattern with the part groups, and
    ``{text: id}`` for every part category."""
    groups = {"isotope", "element", "chirality", "hydrogens", "charge", "map"}
    try:
        pattern_groups = set(re.compile(brackets["pattern"]).groupindex)
        parts = brackets["parts"]
        ok = groups <= pattern_groups and all(
            isinstance(parts[c], dict) and all(isinstance(i, int) for i in parts[c].values())
            for c in BRACKET_PARTS
        )
    except (KeyError, TypeError, re.error):
        ok = False
    if not ok:
        raise TokenizerError(
            f"{where}: 'smiles_brackets' must be an object with 'pattern' (a regex with the groups "
            f"{sorted(groups)}) and 'parts' ({{text: id}} for each of {list(BRACKET_PARTS)}); "
            f"got {str(brackets)[:120]}"
        )


class ScienceTokenizer:
    """Span-aware tokenizer over one id space (see the module docstring).

    Build one with `train_tokenizer` or `extend_tokenizer`, save with `save`, load with `load`.
    ``brackets`` is ``{"pattern": bracket-atom regex, "parts": {category: {text: id}}}`` (format
    2), or None for a format-1 tokenizer, which spells unknown bracket atoms with the prose BPE.
    """

    def __init__(
        self,
        hf: Tokenizer,
        prose: Tokenizer,
        science: dict[str, dict[str, int]],
        patterns: dict[str, str],
        *,
        base: str | None = None,
        brackets: dict[str, Any] | None = None,
    ):
        self.hf = hf
        self.prose = prose
        self.science = science
        self.patterns = patterns
        self.base = base
        self.brackets = brackets
        self.format_version = 1 if brackets is None else FORMAT_VERSION
        if brackets is not None:
            _check_brackets(brackets, where="ScienceTokenizer(brackets=...)")
            self._bracket_parts = functools.lru_cache(maxsize=1 << 16)(self._split_bracket)
        self.tag_ids = {tag: self._required_id(tag) for tag in TAG_TOKENS}
        self.eos_id = self._required_id(END_OF_TEXT)
        self.pad_id = self._required_id(PAD)
        self.unk_id = self._required_id(UNKNOWN)
        self._span_tokenizers = {m: self._span_tokenizer(m) for m in MODALITY_TAGS}
        # prose is encoded with special tokens matched as plain text: a paper that writes
        # "<|endoftext|>" must not get an end of document in its middle
        self._prose_encoder = Tokenizer.from_str(prose.to_str())
        self._prose_encoder.encode_special_tokens = True
        self._tag_pair = {
            m: (self.tag_ids[f"<{m}>"], self.tag_ids[f"</{m}>"]) for m in MODALITY_TAGS
        }
        self._open_ids = np.array([self.tag_ids[f"<{m}>"] for m in MODALITY_TAGS])
        self._span_findall = {m: re.compile(p).findall for m, p in self.patterns.items()}
        self._span_vocab = {m: dict(self.science.get(m, {})) for m in MODALITY_TAGS}
        self._skeleton_ok = all(
            self._prose_encoder.encode(f"a<{m}></{m}>b", add_special_tokens=False).ids[1:3]
            == list(self._tag_pair[m])
            for m in MODALITY_TAGS
        )
        self._fast = hasattr(Tokenizer, "encode_batch_fast")

    def _required_id(self, token: str) -> int:
        token_id = self.hf.token_to_id(token)
        if token_id is None:
            raise TokenizerError(f"tokenizer has no {token!r} token; is it a kiban tokenizer?")
        return token_id

    def _span_tokenizer(self, modality: str) -> Tokenizer:
        vocab = dict(self.science.get(modality, {}))
        vocab[UNKNOWN] = self.unk_id
        tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNKNOWN))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(
            Regex(self.patterns[modality]), behavior="isolated"
        )
        return tokenizer

    # --- sizes and identity -------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def token_dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if self.vocab_size <= 65536 else np.dtype(np.uint32)

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 over the saved tokenizer files: what a corpus and an index were built with."""
        digest = hashlib.sha256()
        metadata = {**self._metadata(), "base": None}  # where the base lay is not identity
        for part in (self.hf.to_str(), self.prose.to_str(), json.dumps(metadata, sort_keys=True)):
            digest.update(part.encode("utf-8"))
        return digest.hexdigest()

    # --- encoding -----------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0].tolist()

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids for each tagged text (no end-of-text token; the corpus adds it).

        Per text, one regex split checks the tag grammar and yields a *skeleton* (the text with
        span contents removed, tags kept) and the span contents. Skeletons go to the prose BPE in
        one batch (tags are added tokens, so prose on each side of a tag encodes exactly as on
        its own); span contents are looked up in the span vocabulary; the span ids are then
        spliced in after their opening tags with NumPy."""
        if not self._skeleton_ok:
            return self._encode_batch_by_segment(texts)
        spans: list[str] = []
        modalities: list[str] = []
        skeleton_ids: list[Any] = []
        need: list[int] = []
        skeletons: list[str] = []
        for k, text in enumerate(texts):
            first = len(modalities)
            skeleton = self._skeleton(text, spans, modalities)
            if skeleton is None:  # no prose: the skeleton is the tags alone
                skeleton_ids.append([i for m in modalities[first:] for i in self._tag_pair[m]])
            else:
                skeleton_ids.append(None)
                need.append(k)
                skeletons.append(skeleton)
        for k, ids in zip(need, self._encode_prose(skeletons)):
            skeleton_ids[k] = ids
        span_ids: list[Any] = [None] * len(spans)
        for modality in MODALITY_TAGS:
            index = [j for j, m in enumerate(modalities) if m == modality]
            if index:
                for j, ids in zip(index, self._lookup_spans(modality, [spans[j] for j in index])):
                    span_ids[j] = ids
        skeleton_len = np.fromiter(map(len, skeleton_ids), np.int64, len(skeleton_ids))
        flat = np.fromiter(
            itertools.chain.from_iterable(skeleton_ids), np.int64, int(skeleton_len.sum())
        )
        span_len = np.fromiter(map(len, span_ids), np.int64, len(span_ids))
        span_flat = np.fromiter(
            itertools.chain.from_iterable(span_ids), np.int64, int(span_len.sum())
        )
        positions = np.flatnonzero(np.isin(flat, self._open_ids))
        if len(positions) != len(span_ids):  # cannot happen: prose never yields a tag id
            raise TokenizerError("internal error: opening tags and spans disagree")
        out = np.insert(flat, np.repeat(positions + 1, span_len), span_flat)
        owner = np.repeat(np.arange(len(texts)), skeleton_len)[positions]
        lengths = skeleton_len + np.bincount(owner, weights=span_len, minlength=len(texts)).astype(
            np.int64
        )
        return np.split(out, np.cumsum(lengths)[:-1]) if len(texts) else []

    def _skeleton(self, text: str, spans: list[str], modalities: list[str]) -> str | None:
        """The text with span contents removed (None if it has no prose); appends the span
        contents and modalities. Any grammar violation raises `split_tagged`'s exact error."""
        parts = _TAG_SHAPED.split(text)  # prose, "/"?, name, ..., in groups of three
        n = len(parts)
        if n == 1:
            return text or None
        has_prose = bool(parts[0])
        skeleton = [parts[0]]
        i = 1
        while i < n:
            name = parts[i + 1]
            if (
                parts[i]
                or name not in MODALITY_TAGS
                or i + 5 > n
                or parts[i + 3] != "/"
                or parts[i + 4] != name
            ):
                split_tagged(text)  # raises the precise DocumentError
                raise TokenizerError(f"internal error: tag grammar disagreement on {text!r}")
            spans.append(parts[i + 2])
            modalities.append(name)
            after = parts[i + 5]
            skeleton.append(f"<{name}></{name}>")
            skeleton.append(after)
            has_prose = has_prose or bool(after)
            i += 6
        return "".join(skeleton) if has_prose else None

    def _lookup_spans(self, modality: str, texts: list[str]) -> list[list[int]]:
        """Span contents by regex + vocabulary lookup (C-level map, no Python loop per token);
        a span with an unknown piece, or characters the pattern skips, takes the Rust path with
        its prose fallback."""
        findall = self._span_findall[modality]
        get = self._span_vocab[modality].get
        brackets = modality == "mol" and self.brackets is not None
        out: list[list[int]] = []
        slow: list[int] = []
        for k, text in enumerate(texts):
            pieces = findall(text)
            ids = list(map(get, pieces))
            if None in ids or sum(map(len, pieces)) != len(text):
                # an unknown piece (bracket parts, format 2) or a gap the pattern skipped
                whole = sum(map(len, pieces)) == len(text)
                ids = self._with_bracket_parts(pieces, ids) if brackets and whole else None
                if ids is None:
                    slow.append(k)
            out.append(ids)
        for k, ids in zip(slow, self._encode_spans(modality, [texts[k] for k in slow])):
            out[k] = ids
        return out

    def _encode_batch_by_segment(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The plain path, for a prose tokenizer that does not keep tags whole (a base model
        whose own vocabulary spells ``<mol>``)."""
        out = []
        for text in texts:
            ids: list[int] = []
            for segment in split_tagged(text):
                if segment.modality is None:
                    ids += self._encode_prose([segment.text])[0]
                else:
                    ids += [
                        self._tag_pair[segment.modality][0],
                        *self._encode_spans(segment.modality, [segment.text])[0],
                        self._tag_pair[segment.modality][1],
                    ]
            out.append(np.asarray(ids, dtype=np.int64))
        return out

    def _encode_prose(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        if self._fast:
            return [
                e.ids
                for e in self._prose_encoder.encode_batch_fast(texts, add_special_tokens=False)
            ]
        return [e.ids for e in self._prose_encoder.encode_batch(texts, add_special_tokens=False)]

    def _encode_spans(self, modality: str, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        tokenizer = self._span_tokenizers[modality]
        batch = (tokenizer.encode_batch_fast if self._fast else tokenizer.encode_batch)(
            texts, add_special_tokens=False
        )
        out = []
        for text, encoding in zip(texts, batch):
            ids = encoding.ids
            if self.unk_id in ids:
                ids = self._with_fallback(modality, tokenizer, text)
            out.append(ids)
        return out

    def _with_fallback(self, modality: str, tokenizer: Tokenizer, text: str) -> list[int]:
        """Encode pieces outside the science vocabulary as bracket parts (a SMILES bracket atom,
        format 2) or else with the prose BPE (lossless)."""
        brackets = modality == "mol" and self.brackets is not None
        encoding = tokenizer.encode(text, add_special_tokens=False)
        ids: list[int] = []
        for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
            if token_id != self.unk_id:
                ids.append(token_id)
                continue
            parts = self._bracket_parts(text[start:end]) if brackets else None
            if parts is None:
                parts = self._prose_encoder.encode(text[start:end], add_special_tokens=False).ids
            ids.extend(parts)
        return ids

    def _split_bracket(self, piece: str) -> list[int] | None:
        """The bracket-part ids of the bracket atom ``piece`` (None if it is none)."""
        parts = split_bracket_atom(piece, self.brackets["pattern"])
        if parts is None:
            return None
        vocabulary = self.brackets["parts"]
        try:
            return [vocabulary[category][text] for category, text in parts]
        except KeyError:  # a part this tokenizer lacks (a hand-edited vocabulary): prose
            return None

    def _with_bracket_parts(self, pieces: list[str], ids: list[int | None]) -> list[int] | None:
        """``ids`` with each unknown piece replaced by its bracket parts (None if one is no
        bracket atom)."""
        out: list[int] = []
        for piece, token_id in zip(pieces, ids):
            if token_id is not None:
                out.append(token_id)
                continue
            parts = self._bracket_parts(piece)
            if parts is None:
                return None
            out += parts
        return out

    # --- decoding -----------------------------------------------------------------------------
    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        size = self.vocab_size
        bad = [i for i in ids if not 0 <= i < size]
        if bad:
            raise TokenizerError(f"token ids {bad[:5]} are outside the vocabulary (size {size})")
        return self.hf.decode(ids, skip_special_tokens=False)

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def id_to_token(self, token_id: int) -> str | None:
        return self.hf.id_to_token(token_id)

    # --- persistence --------------------------------------------------------------------------
    def _metadata(self) -> dict[str, Any]:
        # a format-1 tokenizer writes exactly what format 1 wrote: its fingerprint (which the
        # corpora and models built with it record) stays the same
        meta = {
            "format": FORMAT_NAME,
            "version": self.format_version,
            "base": self.base,
            "special_tokens": list(SPECIAL_TOKENS),
            "tag_tokens": list(TAG_TOKENS),
            "patterns": self.patterns,
            "science": self.science,
            "prose_file": PROSE_FILE if self.base else HF_FILE,
        }
        if self.brackets is not None:
            meta["smiles_brackets"] = self.brackets
        return meta

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``tokenizer.json`` (+ transformers configs) and kiban's metadata, atomically."""
        from kiban.io import atomic_write_text

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / HF_FILE, self.hf.to_str(pretty=False))
        if self.base:
            atomic_write_text(directory / PROSE_FILE, self.prose.to_str(pretty=False))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": END_OF_TEXT,
            "pad_token": PAD,
            "bos_token": None,
            "unk_token": None,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000_000,
        }
        if self.base and (Path(self.base) / "tokenizer_config.json").is_file():
            # keep the base model's own settings (its tokenizer class, bos/eos handling)
            base_config = json.loads((Path(self.base) / "tokenizer_config.json").read_text())
            base_config.pop("added_tokens_decoder", None)  # ids now come from tokenizer.json
            atomic_write_text(
                directory / "tokenizer_config.json", json.dumps(base_config, indent=1)
            )
        else:
            atomic_write_text(directory / "tokenizer_config.json", json.dumps(config, indent=1))
            atomic_write_text(
                directory / "special_tokens_map.json",
                json.dumps({"eos_token": END_OF_TEXT, "pad_token": PAD}, indent=1),
            )
        atomic_write_text(
            directory / METADATA_FILE, json.dumps(self._metadata(), indent=1, ensure_ascii=False)
        )
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ScienceTokenizer:
        directory = Path(directory)
        meta_path = directory / METADATA_FILE
        if not meta_path.is_file():
            raise TokenizerError(
                f"{meta_path} is missing: {directory} is not a kiban tokenizer "
                "directory (expected tokenizer.json and kiban_tokenizer.json)"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise TokenizerError(f"{meta_path}: corrupt JSON ({error.msg})") from None
        if not isinstance(meta, dict):
            raise TokenizerError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
        written = meta.get("version")
        try:
            meta = check(meta, TOKENIZER_FORMAT, where=meta_path)
        except FormatError as error:
            raise TokenizerError(str(error)) from None
        if written != 1:
            _check_brackets(meta.get("smiles_brackets"), where=meta_path)
        try:
            files = {name: directory / name for name in (HF_FILE, meta["prose_file"])}
            for path in files.values():
                if not path.is_file():
                    raise TokenizerError(
                        f"{path} is missing: {directory} is an incomplete kiban tokenizer directory"
                    )
            loaded = {}
            for name, path in files.items():
                try:
                    loaded[name] = Tokenizer.from_file(str(path))
                except Exception as error:  # noqa: BLE001 - tokenizers raises a bare Exception
                    raise TokenizerError(f"{path}: not a readable tokenizer ({error})") from None
            return cls(
                loaded[HF_FILE],
                loaded[meta["prose_file"]],
                meta["science"],
                meta["patterns"],
                base=meta.get("base"),
                brackets=meta["smiles_brackets"],
            )
        except (KeyError, TypeError) as error:
            raise TokenizerError(
                f"{meta_path}: incomplete metadata ({error!r} missing or wrong)"
            ) from None


# --- training ---------------------------------------------------------------------------------
def count_science_tokens(
    texts: Iterable[str],
    counts: dict[str, Counter] | None = None,
) -> dict[str, Counter]:
    """Count span tokens per modality (Python regex; used once, when training)."""
    patterns = {m: re.compile(p) for m, p in span_patterns().items()}
    counts = counts if counts is not None else {m: Counter() for m in MODALITY_TAGS}
    for text in texts:
        for segment in split_tagged(text):
            if segment.modality is not None:
                counts[segment.modality].update(patterns[segment.modality].findall(segment.text))
    return counts


def _science_vocabulary(counts: dict[str, Counter], min_frequency: int) -> dict[str, list[str]]:
    """Always-present tokens, then corpus tokens seen ``min_frequency`` times (most frequent
    first, ties by string): a deterministic order."""
    vocabulary = {}
    for modality, base in _base_science_tokens().items():
        tokens = list(dict.fromkeys(base))
        seen = set(tokens)
        extra = sorted(
            (
                (t, c)
                for t, c in counts.get(modality, Counter()).items()
                if c >= min_frequency and t not in seen
            ),
            key=lambda tc: (-tc[1], tc[0]),
        )
        vocabulary[modality] = tokens + [t for t, _ in extra]
    return vocabulary


def train_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 8000,
    min_frequency: int = 2,
) -> ScienceTokenizer:
    """Train the prose BPE on the prose of ``texts`` and collect span tokens, in one pass.

    ``vocab_size`` is the size of the prose BPE (bytes, merges, special and tag tokens); science
    tokens not already in it are added after, so the final vocabulary is somewhat larger.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS) + len(TAG_TOKENS):
        raise TokenizerError(
            f"vocab_size must be at least {256 + len(SPECIAL_TOKENS) + len(TAG_TOKENS)} "
            f"(256 bytes + special and tag tokens), got {vocab_size}"
        )
    counts: dict[str, Counter] = {m: Counter() for m in MODALITY_TAGS}
    patterns = {m: re.compile(p) for m, p in span_patterns().items()}

    def prose_pieces() -> Iterator[str]:
        for text in texts:
            for segment in split_tagged(text):
                if segment.modality is None:
                    yield segment.text
                else:
                    counts[segment.modality].update(
                        patterns[segment.modality].findall(segment.text)
                    )

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = _prose_pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=[*SPECIAL_TOKENS, *TAG_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(prose_pieces(), trainer=trainer)
    return _with_science_vocabulary(tokenizer, _science_vocabulary(counts, min_frequency))


def _with_science_vocabulary(
    tokenizer: Tokenizer,
    vocabulary: dict[str, list[str]],
) -> ScienceTokenizer:
    """Append science tokens and SMILES bracket parts missing from the BPE vocabulary (as
    unmerged vocabulary entries, so they never change how prose encodes), let the decoder delete
    the bracket parts' markers, and mark tags non-special (kept by ``decode``)."""
    spec = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    next_id = max(vocab.values()) + 1

    def token_id(spelled: str) -> int:
        nonlocal next_id
        if spelled not in vocab:
            vocab[spelled] = next_id
            next_id += 1
        return vocab[spelled]

    science = {
        modality: {token: token_id(byte_level(token)) for token in tokens}
        for modality, tokens in vocabulary.items()
    }
    # a part's spelling is its marker (outside the byte alphabet, deleted by the decoder) and
    # the byte-level spelling of its text
    parts = {
        category: {text: token_id(MARKERS.get(category, "") + byte_level(text)) for text in texts}
        for category, texts in BRACKET_PARTS.items()
    }
    spec["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"Regex": MARKER_PATTERN}, "content": ""},
            spec["decoder"],
        ],
    }
    for added in spec["added_tokens"]:
        if added["content"] in TAG_TOKENS:
            added["special"] = False
    hf = Tokenizer.from_str(json.dumps(spec))
    return ScienceTokenizer(
        hf, hf, science, span_patterns(), brackets={"pattern": BRACKET_ATOM_PATTERN, "parts": parts}
    )


def _has_byte_level_decoder(tokenizer: Tokenizer) -> bool:
    decoder = json.loads(tokenizer.to_str()).get("decoder") or {}
    parts = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    return any(part.get("type") == "ByteLevel" for part in parts)


def extend_tokenizer(
    base_dir: str | os.PathLike, *, corpus_texts: Iterable[str] = (), min_frequency: int = 2
) -> ScienceTokenizer:
    """Extend a local Hugging Face tokenizer (a base-model directory) with kiban's tags and
    science tokens. Existing ids never change: tokens the base already spells as one id keep
    that id, the rest are appended as added tokens after the base vocabulary."""
    base_dir = Path(base_dir)
    path = base_dir / HF_FILE
    if not path.is_file():
        raise TokenizerError(
            f"{path} is missing: a base model directory needs a tokenizer.json "
            "(a fast Hugging Face tokenizer)"
        )
    prose = Tokenizer.from_file(str(path))
    hf = Tokenizer.from_file(str(path))
    base_size = hf.get_vocab_size(with_added_tokens=True)
    for token in SPECIAL_TOKENS:
        if hf.token_to_id(token) is None:
            hf.add_special_tokens([AddedToken(token, special=True, normalized=False)])
            prose.add_special_tokens([AddedToken(token, special=True, normalized=False)])
    tags = [
        AddedToken(t, special=False, normalized=False)
        for t in TAG_TOKENS
        if hf.token_to_id(t) is None
    ]
    hf.add_tokens(tags)
    prose.add_tokens(tags)
    counts = count_science_tokens(corpus_texts)
    # An added token's content goes through the base decoder: with a byte-level decoder, "±"
    # (one character of the byte alphabet, i.e. the lone byte 0xB1) would decode to U+FFFD and
    # would be attached to the base's existing id for that byte. Spell it the byte-level way.
    spell = byte_level if _has_byte_level_decoder(hf) else (lambda token: token)
    if hf.decoder is None:
        raise TokenizerError(
            f"{path} has no decoder: kiban needs one to decode science tokens "
            "exactly (a byte-level, Metaspace or WordPiece decoder)"
        )
    marked = [t for t in hf.get_vocab(with_added_tokens=True) if re.search(MARKER_PATTERN, t)]
    if marked:
        raise TokenizerError(
            f"{path} has tokens with kiban's bracket-part markers "
            f"{MARKER_PATTERN!r} (e.g. {marked[0]!r}); cannot extend it"
        )
    # the decoder deletes the markers of SMILES bracket parts first (no base token has one)
    hf.decoder = decoders.Sequence([decoders.Replace(Regex(MARKER_PATTERN), ""), hf.decoder])

    def science_id(token: str, spelled: str, *, reuse: bool) -> int:
        ids = hf.encode(token, add_special_tokens=False).ids
        if reuse and len(ids) == 1 and hf.decode(ids) == token:
            return ids[0]
        # a prose encoder that spells the token in pieces: add it whole (affects plain-HF
        # encoding of prose containing it; kiban encodes prose with the unextended base)
        hf.add_tokens([AddedToken(spelled, special=False, normalized=False)])
        added = hf.token_to_id(spelled)
        if hf.decode([added]) != token:
            raise TokenizerError(
                f"cannot add science token {token!r}: the base decoder "
                f"turns it into {hf.decode([added])!r}"
            )
        return added

    science = {
        modality: {token: science_id(token, spell(token), reuse=True) for token in tokens}
        for modality, tokens in _science_vocabulary(counts, min_frequency).items()
    }
    # a marked part is never the base's token of its text ("[" and "]", unmarked, may be)
    parts = {
        category: {
            text: science_id(
                text, MARKERS.get(category, "") + spell(text), reuse=category not in MARKERS
            )
            for text in texts
        }
        for category, texts in BRACKET_PARTS.items()
    }
    for token_id in range(base_size):  # the promise: no existing id changed
        if hf.id_to_token(token_id) != prose.id_to_token(token_id):
            raise TokenizerError(f"extending changed id {token_id}; refusing")
    return ScienceTokenizer(
        hf,
        prose,
        science,
        span_patterns(),
        base=str(base_dir),
        brackets={"pattern": BRACKET_ATOM_PATTERN, "parts": parts},
    )
