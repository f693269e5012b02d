"""Modality constraints: which tokens each row may emit next, as one vectorised logit mask.

Per row the state is a few integers held in (B,)-shaped tensors and updated by table lookups
(one torch op per field, whatever the batch):

* ``mode``: 0 in prose, ``1 + MODALITY_TAGS.index(m)`` inside a ``<m>`` span;
* ``span_length``: tokens emitted inside the current span (a span never closes empty);
* ``depth``: SMILES branch depth (``(`` +1, ``)`` -1), inside ``<mol>``;
* ``rings``: open SMILES ring-bond labels (0-99) as a (B, 100) bit mask, toggled by the label's
  row of a (V, 100) table (a label opens a ring the first time and closes it the second);
* ``last_kind``: the kind of the last SMILES piece (start, atom, bond, ``(``, ``)``, ``.``,
  ring label, other), which a (kinds, kinds) table turns into the kinds allowed next;
* ``fresh_ring``: the ring label the last piece opened, which may not close on the same atom;
* ``bracket``: where in a SMILES bracket atom the row is (0 outside one), for tokenizers that
  split bracket atoms into parts (format 2, `kiban.modalities._smiles`).

Allowed tokens: in prose, the prose vocabulary, the four opening tags and end-of-text; inside
``<m>``, the tokenizer's science tokens for ``m`` and ``</m>``. Inside ``<mol>`` additionally:
the SMILES bigram rules of `FOLLOWS` (a span starts with an atom; a bond is followed by an atom
or a ring label; ``(`` by an atom or a bond; ...); ``)`` only at depth > 0; ``</mol>`` only at
depth 0 with no open ring bond, after an atom, ``)`` or a ring label. A bracket atom written
in parts is an atom: ``[`` may come where an atom may, and inside it only bracket parts, in the
order of `BRACKET_NEXT` (isotope digits? element chirality? hydrogens? charge? ``:`` class
digits? then ``]``); nothing closes the span inside it. These are necessary
conditions for a valid SMILES, not sufficient (valence, aromaticity): `kiban.generate.Generator`
can resample rows RDKit rejects.

The state of a prompt comes from its text (the open span's content read with the SMILES regex),
so content the tokenizer spelled with prose fallback pieces is counted as what it is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import torch
from torch import Tensor

from kiban.document import MODALITY_TAGS
from kiban.generate.engine import TokenConstraint
from kiban.modalities._smiles import (
    BRACKET_PARTS,
    CHARGE,
    CHIRALITY,
    CLOSE,
    DIGIT,
    ELEMENT,
    HYDROGENS,
    MAP,
    OPEN,
    alternation,
)
from kiban.tokenizer import SPECIAL_TOKENS, TAG_TOKENS, ScienceTokenizer

PROSE = 0
MOL = 1 + MODALITY_TAGS.index("mol")
RING_LABELS = 100
_NO_RING = -2  # fresh_ring when the last piece opened no ring (never a label, never -1)
_ATOM = re.compile(r"\[[^\]]+\]|Br?|Cl?|[BCNOSPFI]|[bcnosp]|\*")
_RING = re.compile(r"[0-9]|%[0-9]{2}")
_BONDS = frozenset("= # - / \\ : ~ $".split())
_TAG = re.compile(r"<(/?)(" + "|".join(MODALITY_TAGS) + r")>")

# kinds of SMILES piece; START is the empty span
START, ATOM, BOND, BRANCH_OPEN, BRANCH_CLOSE, DOT, RING, OTHER = range(8)
_ALL = frozenset(range(1, 8))
#: which kinds may follow which (OTHER: charges, chirality marks ... are left to RDKit)
FOLLOWS = {
    START: {ATOM},
    ATOM: _ALL,
    BOND: {ATOM, RING, OTHER},
    BRANCH_OPEN: {ATOM, BOND, OTHER},
    BRANCH_CLOSE: {ATOM, BOND, BRANCH_OPEN, BRANCH_CLOSE, DOT, OTHER},
    DOT: {ATOM, OTHER},
    RING: _ALL,
    OTHER: _ALL,
}
#: kinds a SMILES may end with
CAN_END = {ATOM, BRANCH_CLOSE, RING, OTHER}

# where a row is in a bracket atom written in parts: outside one, or after its "[", isotope
# digits, element, chirality, hydrogen count, charge, class ":", class digits
(
    OUTSIDE,
    AFTER_OPEN,
    AFTER_ISOTOPE,
    AFTER_ELEMENT,
    AFTER_CHIRALITY,
    AFTER_HYDROGENS,
    AFTER_CHARGE,
    AFTER_MAP,
    AFTER_CLASS,
) = range(9)
#: per stage, the part categories that may come next and the stage each leads to
BRACKET_NEXT = {
    OUTSIDE: {OPEN: AFTER_OPEN},
    AFTER_OPEN: {DIGIT: AFTER_ISOTOPE, ELEMENT: AFTER_ELEMENT},
    AFTER_ISOTOPE: {DIGIT: AFTER_ISOTOPE, ELEMENT: AFTER_ELEMENT},
    AFTER_ELEMENT: {
        CHIRALITY: AFTER_CHIRALITY,
        HYDROGENS: AFTER_HYDROGENS,
        CHARGE: AFTER_CHARGE,
        MAP: AFTER_MAP,
        CLOSE: OUTSIDE,
    },
    AFTER_CHIRALITY: {
        HYDROGENS: AFTER_HYDROGENS,
        CHARGE: AFTER_CHARGE,
        MAP: AFTER_MAP,
        CLOSE: OUTSIDE,
    },
    AFTER_HYDROGENS: {CHARGE: AFTER_CHARGE, MAP: AFTER_MAP, CLOSE: OUTSIDE},
    AFTER_CHARGE: {MAP: AFTER_MAP, CLOSE: OUTSIDE},
    AFTER_MAP: {DIGIT: AFTER_CLASS},
    AFTER_CLASS: {DIGIT: AFTER_CLASS, CLOSE: OUTSIDE},
}
#: the text of an unclosed bracket atom after its "[" (a prompt that ends inside one)
_OPEN_BRACKET = re.compile(
    rf"(?P<isotope>[0-9]+)?(?:(?P<element>{alternation(BRACKET_PARTS[ELEMENT])})"
    rf"(?P<chirality>{alternation(BRACKET_PARTS[CHIRALITY])})?(?P<hydrogens>H[0-9]?)?"
    rf"(?P<charge>{alternation(BRACKET_PARTS[CHARGE])})?(?P<map>:(?P<atom_class>[0-9]+)?)?)?"
)
_STAGE_OF_GROUP = {
    "atom_class": AFTER_CLASS,
    "map": AFTER_MAP,
    "charge": AFTER_CHARGE,
    "hydrogens": AFTER_HYDROGENS,
    "chirality": AFTER_CHIRALITY,
    "element": AFTER_ELEMENT,
    "isotope": AFTER_ISOTOPE,
}


def open_bracket_stage(text: str) -> int:
    """The stage after the unclosed bracket atom whose text after ``[`` is ``text`` (OUTSIDE if
    no bracket atom starts so)."""
    match = _OPEN_BRACKET.fullmatch(text)
    if match is None:
        return OUTSIDE
    return next(
        (stage for group, stage in _STAGE_OF_GROUP.items() if match.group(group)), AFTER_OPEN
    )


def open_bracket_parts(text: str) -> list[tuple[str, str]] | None:
    """The ``(category, text)`` bracket parts of an unclosed bracket atom, ``[`` first, whose text
    after ``[`` is ``text`` (None if no bracket atom starts so): how a prompt that ends inside a
    bracket is encoded, so the model sees the same ids it writes there."""
    match = _OPEN_BRACKET.fullmatch(text)
    if match is None:
        return None
    parts = [(OPEN, "[")]
    parts += [(DIGIT, digit) for digit in match.group("isotope") or ""]
    for group, category in (
        ("element", ELEMENT),
        ("chirality", CHIRALITY),
        ("hydrogens", HYDROGENS),
        ("charge", CHARGE),
    ):
        if match.group(group):
            parts.append((category, match.group(group)))
    if match.group("map"):
        parts.append((MAP, ":"))
        parts += [(DIGIT, digit) for digit in match.group("atom_class") or ""]
    return parts


def piece_kind(piece: str) -> int:
    """The kind of one SMILES piece (a match of the tokenizer's SMILES regex)."""
    if _ATOM.fullmatch(piece):
        return ATOM
    if _RING.fullmatch(piece):
        return RING
    if piece in _BONDS:
        return BOND
    return {"(": BRANCH_OPEN, ")": BRANCH_CLOSE, ".": DOT}.get(piece, OTHER)


def prose_token_ids(tokenizer: ScienceTokenizer) -> set[int]:
    """Ids the prose encoder can produce (special and tag tokens excluded).

    A kiban-trained tokenizer is one BPE whose vocabulary also holds appended science tokens;
    prose tokens are its byte alphabet and merge results. An extended base keeps the base
    tokenizer as ``prose``: its whole vocabulary."""
    spec = json.loads(tokenizer.prose.to_str())
    model = spec["model"]
    excluded = {*SPECIAL_TOKENS, *TAG_TOKENS}
    excluded |= {t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
    if model.get("type") == "BPE" and tokenizer.base is None:
        merged = {
            "".join(m.split(" ", 1)) if isinstance(m, str) else "".join(m)
            for m in model.get("merges", [])
        }
        ids = {i for t, i in model["vocab"].items() if len(t) == 1 or t in merged}
    else:
        ids = set(tokenizer.prose.get_vocab(with_added_tokens=True).values())
    return ids - {tokenizer.prose.token_to_id(t) for t in excluded} - {None}


@dataclass(frozen=True, slots=True)
class PromptState:
    """Where a prompt's text ends: in prose, or inside an open span (and its SMILES state)."""

    modality: str | None
    span_length: int = 0
    depth: int = 0
    rings: frozenset[int] = frozenset()
    last_kind: int = START
    fresh_ring: int | None = None
    bracket: int = OUTSIDE

    @classmethod
    def of(cls, text: str) -> PromptState:
        tags = list(_TAG.finditer(text))
        if not tags or tags[-1].group(1):
            return cls(None)
        modality = tags[-1].group(2)
        content = text[tags[-1].end() :]
        if modality != "mol":
            return cls(modality, span_length=len(content))
        opening = content.rfind("[")
        bracket = OUTSIDE
        if opening > content.rfind("]"):  # the prompt ends inside a bracket atom
            bracket = open_bracket_stage(content[opening + 1 :])
            if bracket != OUTSIDE:
                content = content[:opening]
        pieces = re.findall(_smiles_token_pattern(), content)
        depth, rings, fresh = 0, set(), None
        for piece in pieces:
            depth += (piece == "(") - (piece == ")")
            fresh = None
            if _RING.fullmatch(piece):
                label = int(piece.lstrip("%"))
                fresh = None if label in rings else label
                rings ^= {label}
        if bracket != OUTSIDE:  # an atom under way
            return cls(
                modality,
                span_length=len(pieces) + 1,
                depth=depth,
                rings=frozenset(rings),
                last_kind=ATOM,
                bracket=bracket,
            )
        return cls(
            modality,
            span_length=len(pieces),
            depth=depth,
            rings=frozenset(rings),
            last_kind=piece_kind(pieces[-1]) if pieces else START,
            fresh_ring=fresh,
        )


def _smiles_token_pattern() -> str:
    from kiban.modalities.molecule import SMILES_TOKEN_PATTERN

    return SMILES_TOKEN_PATTERN


class ModalityConstraints:
    """Lookup tables for one tokenizer and one logits width; `track` starts a generation."""

    def __init__(self, tokenizer: ScienceTokenizer, vocab_size: int):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        modes = 1 + len(MODALITY_TAGS)
        allowed = torch.zeros(modes, vocab_size, dtype=torch.bool)
        allowed[PROSE, sorted(prose_token_ids(tokenizer))] = True
        allowed[PROSE, tokenizer.eos_id] = True
        self.open_mode = torch.zeros(vocab_size, dtype=torch.long)  # opening tag -> its mode
        self.is_close = torch.zeros(vocab_size, dtype=torch.bool)
        self.close_ids = torch.tensor([tokenizer.tag_ids[f"</{m}>"] for m in MODALITY_TAGS])
        # SMILES bracket parts (format 2; none for a format-1 tokenizer): {id: category}
        parts = {
            token_id: category
            for category, texts in (tokenizer.brackets or {"parts": {}})["parts"].items()
            for token_id in texts.values()
        }
        for mode, modality in enumerate(MODALITY_TAGS, start=1):
            opening, closing = (
                tokenizer.tag_ids[f"<{modality}>"],
                tokenizer.tag_ids[f"</{modality}>"],
            )
            allowed[PROSE, opening] = True
            allowed[mode, list(tokenizer.science.get(modality, {}).values())] = True
            allowed[mode, closing] = True
            self.open_mode[opening] = mode
            self.is_close[closing] = True
        allowed[MOL, list(parts)] = True
        self.allowed = allowed  # (modes, V)
        self.has_brackets = bool(parts)
        # per stage, the next stage after each token; -1: not allowed there. Outside a bracket
        # every other token keeps the row outside; inside one, only its parts may come.
        self.bracket_next = torch.full((len(BRACKET_NEXT), vocab_size), -1, dtype=torch.long)
        self.bracket_next[OUTSIDE] = OUTSIDE
        self.bracket_next[OUTSIDE, list(parts)] = -1
        for stage, after in BRACKET_NEXT.items():
            for token_id, category in parts.items():
                if category in after:
                    self.bracket_next[stage, token_id] = after[category]
        mol = tokenizer.science.get("mol", {})
        self.depth_delta = torch.zeros(vocab_size, dtype=torch.long)
        self.ring_bits = torch.zeros(vocab_size, RING_LABELS, dtype=torch.bool)
        self.kind = torch.full((vocab_size,), OTHER, dtype=torch.long)  # SMILES piece kind
        self.ring_label = torch.full((vocab_size,), -1, dtype=torch.long)
        for token, token_id in mol.items():
            self.depth_delta[token_id] = (token == "(") - (token == ")")
            self.kind[token_id] = piece_kind(token)
            if _RING.fullmatch(token):
                self.ring_label[token_id] = int(token.lstrip("%"))
                self.ring_bits[token_id, int(token.lstrip("%"))] = True
        self.kind[list(parts)] = ATOM  # "[" starts an atom; after "]" an atom has been written
        follows = torch.zeros(len(FOLLOWS), len(FOLLOWS), dtype=torch.bool)
        for kind, after in FOLLOWS.items():
            follows[kind, sorted(after)] = True
        self.follows = follows[:, self.kind]  # (kinds, V): may token v follow a piece of kind k
        if self.has_brackets:  # then one row per stage inside a bracket atom: (kinds + 8, V)
            bracket_ok = self.bracket_next >= 0
            self.follows = torch.cat(
                [self.follows & bracket_ok[OUTSIDE], bracket_ok[OUTSIDE + 1 :]]
            )
        self.can_end = torch.tensor([k in CAN_END for k in range(len(FOLLOWS))])
        self.rparen_id = mol.get(")")
        self.device = torch.device("cpu")
        self._copies: dict[torch.device, ModalityConstraints] = {self.device: self}

    _TABLES = (
        "allowed",
        "open_mode",
        "is_close",
        "close_ids",
        "depth_delta",
        "ring_bits",
        "kind",
        "ring_label",
        "follows",
        "can_end",
        "bracket_next",
    )

    def on(self, device: torch.device) -> ModalityConstraints:
        """These tables on ``device`` (a copy made once per device; itself on the CPU)."""
        device = torch.device(device)
        if device not in self._copies:
            copy = object.__new__(ModalityConstraints)
            copy.__dict__.update(self.__dict__)
            for name in self._TABLES:
                setattr(copy, name, getattr(self, name).to(device))
            copy.device = device
            self._copies[device] = copy
        return self._copies[device]

    def stop_ids(self, states: list[PromptState]) -> Tensor:
        """(B, 2): end-of-text, and the closing tag of a span the prompt left open (else -1)."""
        closing = [self.tokenizer.tag_ids[f"</{s.modality}>"] if s.modality else -1 for s in states]
        return torch.tensor([[self.tokenizer.eos_id, c] for c in closing], dtype=torch.long)

    def track(self, states: list[PromptState]) -> ConstraintTracker:
        batch = len(states)
        mode = torch.tensor(
            [0 if s.modality is None else 1 + MODALITY_TAGS.index(s.modality) for s in states],
            dtype=torch.long,
        )
        rings = torch.zeros(batch, RING_LABELS, dtype=torch.bool)
        for row, state in enumerate(states):
            rings[row, sorted(state.rings)] = True
        return ConstraintTracker(
            self,
            mode=mode,
            span_length=torch.tensor([s.span_length for s in states]),
            depth=torch.tensor([s.depth for s in states]),
            rings=rings,
            last_kind=torch.tensor([s.last_kind for s in states]),
            fresh_ring=torch.tensor(
                [_NO_RING if s.fresh_ring is None else s.fresh_ring for s in states]
            ),
            # a format-1 tokenizer has no parts: a prompt's open bracket is read as today
            bracket=torch.tensor([s.bracket if self.has_brackets else OUTSIDE for s in states]),
        )


class ConstraintTracker(TokenConstraint):
    """The per-row state of one generation (see the module docstring)."""

    def __init__(
        self,
        tables: ModalityConstraints,
        *,
        mode: Tensor,
        span_length: Tensor,
        depth: Tensor,
        rings: Tensor,
        last_kind: Tensor,
        fresh_ring: Tensor,
        bracket: Tensor,
    ):
        self.tables = tables
        self.mode = mode  # (B,)
        self.span_length = span_length  # (B,)
        self.depth = depth  # (B,)
        self.rings = rings  # (B, 100)
        self.last_kind = last_kind  # (B,)
        self.fresh_ring = fresh_ring  # (B,): a label, or _NO_RING
        self.bracket = bracket  # (B,): a bracket stage, OUTSIDE outside one

    def allowed(self) -> Tensor:
        """(B, V) bool: the tokens each row may emit next."""
        t = self.tables
        allowed = t.allowed[self.mode]  # (B, V), a fresh tensor
        in_mol = self.mode == MOL
        mol_open = in_mol & ((self.depth > 0) | self.rings.any(-1) | ~t.can_end[self.last_kind])
        if t.has_brackets:
            mol_open |= self.bracket != OUTSIDE
        allowed[:, t.close_ids] &= ((self.span_length > 0) & ~mol_open)[:, None]
        if t.rparen_id is not None:
            allowed[:, t.rparen_id] &= ~in_mol | (self.depth > 0)
        # SMILES bigrams, and no ring closed on the atom that opened it ("C11"); inside a
        # bracket atom, its grammar instead (the rows of `follows` after the kinds)
        follows_row = self.last_kind
        if t.has_brackets:
            follows_row = torch.where(
                self.bracket == OUTSIDE, self.last_kind, len(FOLLOWS) - 1 + self.bracket
            )
        smiles_ok = t.follows[follows_row] & (t.ring_label != self.fresh_ring[:, None])
        allowed &= ~in_mol[:, None] | smiles_ok
        return allowed

    def mask_(self, logits: Tensor) -> Tensor:
        return logits.masked_fill_(~self.allowed(), float("-inf"))

    _STATE = ("mode", "span_length", "depth", "rings", "last_kind", "fresh_ring", "bracket")

    def to(self, device: torch.device) -> ConstraintTracker:
        device = torch.device(device)
        if device == self.tables.device:
            return self
        return ConstraintTracker(
            self.tables.on(device), **{name: getattr(self, name).to(device) for name in self._STATE}
        )

    def advance(self, tokens: Tensor) -> None:
        t = self.tables
        in_span = self.mode != PROSE
        in_mol = self.mode == MOL
        opens = (t.open_mode[tokens] != 0) & ~in_span
        closes = t.is_close[tokens] & in_span
        content = in_span & ~closes
        label = t.ring_label[tokens]  # (B,), -1 unless a ring label
        opened = in_mol & (label >= 0) & ~self.rings.gather(1, label.clamp(min=0)[:, None])[:, 0]
        self.fresh_ring = torch.where(opened, label, _NO_RING)
        if t.has_brackets:
            self.bracket = torch.where(
                in_mol & ~closes, t.bracket_next[self.bracket, tokens].clamp(min=OUTSIDE), OUTSIDE
            )
        self.depth = torch.where(opens, 0, self.depth + t.depth_delta[tokens] * in_mol)
        self.rings = (self.rings ^ (t.ring_bits[tokens] & in_mol[:, None])) & ~opens[:, None]
        self.span_length = torch.where(opens, 0, self.span_length + content)
        self.last_kind = torch.where(
            opens, START, torch.where(in_mol, t.kind[tokens], self.last_kind)
        )
        self.mode = torch.where(opens, t.open_mode[tokens], torch.where(closes, PROSE, self.mode))


class VocabularyLimit(TokenConstraint):
    """Only ids the tokenizer has (a model's embedding may have more rows than its tokenizer has
    tokens: padding to a multiple of 64 is common). Used when no modality constraint runs."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def mask_(self, logits: Tensor) -> Tensor:
        logits[:, self.vocab_size :] = float("-inf")
        return logits

    def advance(self, tokens: Tensor) -> None:
        pass
