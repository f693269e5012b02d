"""Modality constraints: the masks they compute, and that sampled text provably obeys them."""

from __future__ import annotations

import re

import pytest
import torch

from kiban.document import MODALITY_TAGS
from kiban.generate.constraints import (
    AFTER_CHARGE,
    AFTER_CHIRALITY,
    AFTER_CLASS,
    AFTER_ELEMENT,
    AFTER_HYDROGENS,
    AFTER_ISOTOPE,
    AFTER_MAP,
    AFTER_OPEN,
    ATOM,
    MOL,
    PROSE,
    RING,
    START,
    ModalityConstraints,
    PromptState,
    prose_token_ids,
)
from kiban.modalities.molecule import SMILES_TOKEN_PATTERN


@pytest.fixture(scope="module")
def tables(science_tokenizer) -> ModalityConstraints:
    return ModalityConstraints(science_tokenizer, science_tokenizer.vocab_size + 12)


def allowed_for(tables, prompt: str) -> set[int]:
    tracker = tables.track([PromptState.of(prompt)])
    return set(tracker.allowed()[0].nonzero().flatten().tolist())


def test_prompt_state_reads_the_open_span():
    assert PromptState.of("Plain prose.") == PromptState(None)
    assert PromptState.of("<mol>CCO</mol> and more") == PromptState(None)
    text = "C1CC(C(=O)C%12"
    state = PromptState.of(f"A <mol>CCO</mol> then <mol>{text}")
    assert state == PromptState(
        "mol",
        span_length=len(re.findall(SMILES_TOKEN_PATTERN, text)),
        depth=1,
        rings=frozenset({1, 12}),
        last_kind=RING,
        fresh_ring=12,
    )
    assert state.span_length == 12
    assert PromptState.of("x <num>1.5") == PromptState("num", span_length=3)
    assert PromptState.of("<mol>C1CC1") == PromptState("mol", span_length=5, last_kind=RING)
    assert PromptState.of("<mol>") == PromptState("mol", last_kind=START)


def test_prose_ids_exclude_science_only_tokens(science_tokenizer):
    tok = science_tokenizer
    prose = prose_token_ids(tok)
    # a science token is shared with prose exactly when the prose BPE spells its text as that id
    shared, science_only = set(), set()
    bracket_parts = [texts.items() for texts in tok.brackets["parts"].values()]
    for tokens in [tok.science[modality].items() for modality in MODALITY_TAGS] + bracket_parts:
        for token, token_id in tokens:
            spelled = tok.prose.encode(token, add_special_tokens=False).ids
            (shared if spelled == [token_id] else science_only).add(token_id)
    assert science_only and shared  # "[C@@H]", "Fm-3m", the element "N" of [N@@+] ... and
    assert tok.brackets["parts"]["element"]["N"] in science_only  # "C", "1", "[" ...
    assert not prose & science_only
    assert shared <= prose
    specials = {tok.eos_id, tok.pad_id, tok.unk_id, *tok.tag_ids.values()}
    assert not prose & specials
    assert len(prose) == len(set(tok.prose.get_vocab().values()) - specials - science_only)


def test_masks_per_mode(tables, science_tokenizer):
    tok = science_tokenizer
    opening = {tok.tag_ids[f"<{m}>"] for m in MODALITY_TAGS}
    closing = {tok.tag_ids[f"</{m}>"] for m in MODALITY_TAGS}
    in_prose = allowed_for(tables, "Some prose ")
    assert in_prose == prose_token_ids(tok) | opening | {tok.eos_id}
    in_num = allowed_for(tables, "Gap <num>1.")
    assert in_num == set(tok.science["num"].values()) | {tok.tag_ids["</num>"]}
    in_protein = allowed_for(tables, "<protein>MK")
    assert in_protein == set(tok.science["protein"].values()) | {tok.tag_ids["</protein>"]}
    assert not in_num & (closing - {tok.tag_ids["</num>"]})
    # nothing beyond the tokenizer's vocabulary (the model's embedding has 12 more rows)
    assert max(in_prose | in_num) < tok.vocab_size


def test_an_empty_span_cannot_close(tables, science_tokenizer):
    assert science_tokenizer.tag_ids["</num>"] not in allowed_for(tables, "x <num>")
    assert science_tokenizer.tag_ids["</protein>"] not in allowed_for(tables, "<protein>")


@pytest.mark.parametrize(
    "span, close_ok, rparen_ok",
    [
        ("C", True, False),  # balanced
        ("CC(", False, False),  # open branch, and ")" cannot follow "("
        ("CC(C", False, True),  # open branch
        ("CC(C)", True, False),  # closed again
        ("C1CC", False, False),  # open ring bond 1
        ("C1CC1", True, False),  # closed ring
        ("C%12CC%12", True, False),  # two-digit ring label
        ("C%12CC", False, False),
        ("CC=", False, False),  # dangling bond
        ("CC(=", False, False),
        ("CC(C=", False, False),
        ("CC(C)(C", False, True),
        ("C.", False, False),  # dot: an atom must follow
    ],
)
def test_smiles_grammar_masks(tables, science_tokenizer, span, close_ok, rparen_ok):
    mol = science_tokenizer.science["mol"]
    allowed = allowed_for(tables, f"The compound <mol>{span}")
    assert (science_tokenizer.tag_ids["</mol>"] in allowed) is close_ok
    assert (mol[")"] in allowed) is rparen_ok
    # outside a bracket atom, of its parts only "[" (where an atom may come)
    opening = science_tokenizer.brackets["parts"]["open"]["["]
    assert allowed <= set(mol.values()) | {science_tokenizer.tag_ids["</mol>"], opening}
    assert (opening in allowed) is (mol["C"] in allowed)


@pytest.mark.parametrize(
    "span, allowed_next, forbidden_next",
    [
        ("CC=", ["C", "1", "[nH]"], ["=", "(", ".", ")"]),  # bond: atom or ring label
        ("CC(", ["C", "=", "[C@@H]"], ["(", "1", ".", ")"]),
        ("CC(C)", ["C", "(", "=", "."], ["1", "%12"]),  # no ring label after ")"
        ("C.", ["C", "c"], ["=", "1", "(", "."]),
        ("C1", ["C", "2", "("], ["1"]),  # a ring never closes on its atom
        ("C1C", ["1", "2"], []),
        ("C%12", ["%10"], ["%12"]),
    ],
)
def test_smiles_bigram_masks(tables, science_tokenizer, span, allowed_next, forbidden_next):
    mol = science_tokenizer.science["mol"]
    allowed = allowed_for(tables, f"<mol>{span}")
    assert [t for t in allowed_next if mol[t] not in allowed] == []
    assert [t for t in forbidden_next if mol[t] in allowed] == []


def test_a_smiles_starts_with_an_atom(tables, science_tokenizer):
    mol = science_tokenizer.science["mol"]
    first = allowed_for(tables, "<mol>")
    for token in ("C", "c", "[nH]", "Br", "[C@@H]"):
        assert mol[token] in first
    for token in ("(", ")", "1", "=", "%12", "."):
        assert mol[token] not in first


# --- bracket atoms written in parts (tokenizer format 2) -------------------------------------
def part_ids(tokenizer, *categories: str) -> set[int]:
    return {i for c in categories for i in tokenizer.brackets["parts"][c].values()}


@pytest.mark.parametrize(
    "span, stage, categories",
    [
        ("C[", AFTER_OPEN, ["digit", "element"]),
        ("C[13", AFTER_ISOTOPE, ["digit", "element"]),
        ("C[C", AFTER_ELEMENT, ["chirality", "hydrogens", "charge", "map", "close"]),
        ("C[13Cl", AFTER_ELEMENT, ["chirality", "hydrogens", "charge", "map", "close"]),
        ("C[C@@", AFTER_CHIRALITY, ["hydrogens", "charge", "map", "close"]),
        ("C[CH2", AFTER_HYDROGENS, ["charge", "map", "close"]),
        ("C[N+", AFTER_CHARGE, ["map", "close"]),
        ("C[CH3:", AFTER_MAP, ["digit"]),
        ("C[CH3:12", AFTER_CLASS, ["digit", "close"]),
        ("C(=O)[Co@OH12+3", AFTER_CHARGE, ["map", "close"]),
    ],
)
def test_inside_a_bracket_atom_only_its_next_parts(
    tables, science_tokenizer, span, stage, categories
):
    state = PromptState.of(f"<mol>{span}")
    assert (state.bracket, state.last_kind) == (stage, ATOM)
    # no organic atom, ring label, bond, branch, whole bracket atom or closing tag
    assert allowed_for(tables, f"<mol>{span}") == part_ids(science_tokenizer, *categories)


def test_bracket_parts_in_order_then_an_atom_is_written(tables, science_tokenizer):
    """Advancing token by token through [13C@@H2+:12]: each part leads to the next stage."""
    tok = science_tokenizer
    parts = tok.brackets["parts"]
    ids = tok.encode("<mol>C1[13C@@H2+:12]1</mol>")
    assert ids[3:-2] == [
        parts["open"]["["],
        parts["digit"]["1"],
        parts["digit"]["3"],
        parts["element"]["C"],
        parts["chirality"]["@@"],
        parts["hydrogens"]["H2"],
        parts["charge"]["+"],
        parts["map"][":"],
        parts["digit"]["1"],
        parts["digit"]["2"],
        parts["close"]["]"],
    ]
    tracker = tables.track([PromptState.of("<mol>C1")])
    expected = [
        ["digit", "element"],
        ["digit", "element"],
        ["digit", "element"],
        ["chirality", "hydrogens", "charge", "map", "close"],
        ["hydrogens", "charge", "map", "close"],
        ["charge", "map", "close"],
        ["map", "close"],
        ["digit"],
        ["digit", "close"],
        ["digit", "close"],
    ]
    for token, categories in zip(ids[3:-2], [["open"]] + expected):
        allowed = set(tracker.allowed()[0].nonzero().flatten().tolist())
        if categories == ["open"]:  # outside: "[" like any atom, no other part
            assert token in allowed and not allowed & (part_ids(tok, *BRACKET_INSIDE))
        else:
            assert allowed == part_ids(tok, *categories)
        tracker.advance(torch.tensor([token]))
    allowed = set(tracker.allowed()[0].nonzero().flatten().tolist())
    # after "]": an atom; ring 1 may close on it (it opened on the C before), the span may not
    # close (ring 1 is open)
    assert tok.science["mol"]["1"] in allowed and tok.tag_ids["</mol>"] not in allowed
    assert not allowed & part_ids(tok, *BRACKET_INSIDE)
    tracker.advance(torch.tensor([tok.science["mol"]["1"]]))
    assert bool(tracker.allowed()[0, tok.tag_ids["</mol>"]])
    assert int(tracker.bracket[0]) == 0


BRACKET_INSIDE = ("digit", "element", "chirality", "hydrogens", "charge", "map", "close")


def test_prompt_state_inside_a_bracket_atom():
    assert PromptState.of("<mol>CC(O)[13") == PromptState(
        "mol", span_length=6, depth=0, last_kind=ATOM, bracket=AFTER_ISOTOPE
    )
    assert PromptState.of("<mol>C1C[") == PromptState(
        "mol", span_length=4, rings=frozenset({1}), last_kind=ATOM, bracket=AFTER_OPEN
    )
    # a closed bracket atom, or one that is no SMILES atom, is read as before
    assert PromptState.of("<mol>C[Na]").bracket == 0
    assert PromptState.of("<mol>C[Xx") == PromptState("mol", span_length=1, last_kind=ATOM)


def test_format_1_tokenizer_has_no_bracket_parts():
    """A tokenizer saved before bracket parts keeps its whole bracket tokens as atoms and the
    constraints of today: no "[" alone, a prompt's open bracket read as its pieces."""
    from pathlib import Path

    from kiban.tokenizer import ScienceTokenizer

    old = ScienceTokenizer.load(Path(__file__).parents[1] / "fixtures" / "tokenizer_v1")
    tables = ModalityConstraints(old, old.vocab_size)
    assert not tables.has_brackets
    first = allowed_for(tables, "<mol>")
    assert old.science["mol"]["[C@H]"] in first and old.prose.token_to_id("[") not in first
    tracker = tables.track([PromptState.of("<mol>C[C")])
    assert int(tracker.bracket[0]) == 0 and int(tracker.last_kind[0]) == ATOM


BONDS = {"=", "#", "-", "/", "\\", ":", "~", "$"}
#: a bracket atom as the letters of its parts' categories ("[" digit* element chirality?
#: hydrogens? charge? (":" digit+)? "]"); a prefix is valid when one of a few endings completes it
BRACKET_GRAMMAR = re.compile(r"\[d*ec?h?q?(?:md+)?\]")
CATEGORY_LETTER = {
    "open": "[",
    "close": "]",
    "digit": "d",
    "element": "e",
    "chirality": "c",
    "hydrogens": "h",
    "charge": "q",
    "map": "m",
}


def valid_bracket_prefix(letters: str) -> bool:
    return any(BRACKET_GRAMMAR.fullmatch(letters + end) for end in ("", "]", "e]", "d]"))


def replay(tables, science_tokenizer, ids: list[int], mode: int) -> int:
    """Walk generated ids with an independent Python state machine; assert every rule. Returns
    how many bracket-part tokens it saw."""
    tok = science_tokenizer
    mol_tokens = {i: t for t, i in tok.science["mol"].items()}
    part_letter = {
        i: CATEGORY_LETTER[c] for c, texts in tok.brackets["parts"].items() for i in texts.values()
    }
    bracket = ""  # the part letters of the bracket atom being written
    prose = prose_token_ids(tok)
    open_of = {tok.tag_ids[f"<{m}>"]: k for k, m in enumerate(MODALITY_TAGS, start=1)}
    close_of = {tok.tag_ids[f"</{m}>"]: k for k, m in enumerate(MODALITY_TAGS, start=1)}
    depth, rings, pieces, fresh, parts_seen = 0, set(), [], None, 0
    for token in ids:
        if mode == PROSE:
            assert token in prose or token in open_of or token == tok.eos_id
            if token in open_of:
                mode, depth, rings, pieces, fresh = open_of[token], 0, set(), [], None
            continue
        modality = MODALITY_TAGS[mode - 1]
        if token in close_of:
            assert close_of[token] == mode and pieces
            if mode == MOL:
                assert depth == 0 and not rings and pieces[-1] not in BONDS | {"(", "."}
                assert not bracket
            mode = PROSE
            continue
        if mode == MOL and (bracket or token in part_letter):
            assert bracket or part_letter[token] == "["  # outside a bracket, only "[" of its parts
            bracket += part_letter[token]
            parts_seen += 1
            assert valid_bracket_prefix(bracket), bracket
            if bracket.endswith("]"):
                bracket = ""
            if len(bracket) > 1 or not bracket:  # "[" was checked as an atom; the rest is not
                continue
            token_piece = "[*]"  # an atom starts here: the bigram rules below apply to it
        else:
            assert token in tok.science[modality].values()
            token_piece = mol_tokens.get(token)
        if mode == MOL:
            piece = token_piece
            last = pieces[-1] if pieces else None
            is_ring = re.fullmatch(r"[0-9]|%[0-9]{2}", piece) is not None
            if last is None:
                assert re.fullmatch(r"\[[^\]]+\]|Br?|Cl?|[BCNOSPFI]|[bcnosp]|\*", piece)
            elif last in BONDS:
                assert piece not in BONDS | {"(", ")", "."}
            elif last == "(":
                assert piece not in {"(", ")", "."} and not is_ring
            elif last == ".":
                assert piece not in BONDS | {"(", ")", "."} and not is_ring
            elif last == ")":
                assert not is_ring
            depth += (piece == "(") - (piece == ")")
            assert depth >= 0
            if is_ring:
                assert piece != fresh  # "C11" would close the ring on the atom that opened it
                fresh = None if piece in rings else piece
                rings ^= {piece}
            else:
                fresh = None
        pieces.append(token_piece or "?")
    return parts_seen


@pytest.mark.parametrize("which", ["kiban_generator", "trained_generator"])
def test_sampled_text_obeys_the_constraints(request, which, science_tokenizer):
    """Sampled at temperature 1.5, a random model writes anything without constraints (next
    test); with them, every generated id passes an independent replay of the rules. The trained
    model also closes its spans, which exercises the closing rules."""
    kiban_generator = request.getfixturevalue(which)
    tables = kiban_generator.constraints()
    opening = {science_tokenizer.tag_ids[f"<{m}>"] for m in MODALITY_TAGS}
    prompts = ["The compound <mol>", "Benzene", "The compound <mol>CC(", "Gap <num>"]
    results = kiban_generator.generate(prompts, n=12, max_new_tokens=40, temperature=1.5, seed=7)
    spans_opened = parts_seen = 0
    for completion in results:
        state = PromptState.of(completion.prompt)
        mode = 0 if state.modality is None else 1 + MODALITY_TAGS.index(state.modality)
        ids = list(completion.completion_ids)
        if mode:  # start the replay inside the prompt's span, with its SMILES state
            parts_seen += replay(
                tables,
                science_tokenizer,
                _reencode_open(science_tokenizer, completion.prompt) + ids,
                0,
            )
        else:
            parts_seen += replay(tables, science_tokenizer, ids, 0)
        spans_opened += sum(t in opening for t in ids)
    assert spans_opened > 0  # prose rows opened spans, so their insides were checked too
    if which == "kiban_generator":  # the random model writes bracket atoms in parts, checked too
        assert parts_seen > 0
    if which == "trained_generator":
        stops = {c.stop_reason for c in results if c.prompt.endswith(("<mol>", "CC("))}
        assert "span_closed" in stops
    for completion in results:
        if completion.stop_reason == "span_closed":
            assert completion.completion.endswith(_closer(completion.prompt))
            assert completion.completion.count(_closer(completion.prompt)) == 1
            assert (
                completion.completion_ids[-1]
                == science_tokenizer.tag_ids[_closer(completion.prompt)]
            )


def _closer(text: str) -> str:
    state = PromptState.of(text)
    return f"</{state.modality}>" if state.modality else ""


def _reencode_open(tok, prompt: str) -> list[int]:
    """The ids of the prompt's open span from its opening tag on (prose part dropped)."""
    state = PromptState.of(prompt)
    start = prompt.rindex(f"<{state.modality}>")
    return tok.encode(prompt[start:] + f"</{state.modality}>")[:-1]


def test_without_constraints_the_random_model_breaks_the_rules(kiban_generator, science_tokenizer):
    results = kiban_generator.generate(
        "The compound <mol>", n=8, max_new_tokens=20, temperature=1.5, seed=7, constrain=False
    )
    mol = set(science_tokenizer.science["mol"].values()) | {science_tokenizer.tag_ids["</mol>"]}
    outside = [t for c in results for t in c.completion_ids if t not in mol]
    assert outside  # so the constrained test above is not passing by luck
