"""The science tokenizer: span-aware encoding, exact decoding, plain Hugging Face files,
determinism, persistence, and extending a base tokenizer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from kiban.document import MODALITY_TAGS, Segment, join_segments, split_tagged
from kiban.formats import get_format
from kiban.modalities._smiles import (
    BRACKET_ATOM_PATTERN,
    BRACKET_PARTS,
    split_bracket_atom,
)
from kiban.modalities.molecule import SMILES_TOKEN_PATTERN
from kiban.modalities.protein import RESIDUES
from kiban.tokenizer import (
    ELEMENTS,
    END_OF_TEXT,
    FORMAT_NAME,
    FORMAT_VERSION,
    PAD,
    TAG_TOKENS,
    UNKNOWN,
    ScienceTokenizer,
    TokenizerError,
    byte_level,
    extend_tokenizer,
    space_group_symbols,
    span_patterns,
    train_tokenizer,
)

# --- a small corpus -------------------------------------------------------------------------
SMILES = [
    "CCO",
    "OCC",
    "c1ccccc1",
    "Cc1ccccc1",
    "CC(=O)Oc1ccccc1C(=O)O",
    "Cn1c(=O)c2c(ncn2C)n(C)c1=O",
    "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)O",
    "CC(=O)Nc1ccc(O)cc1",
    "C[C@H](N)C(=O)O",
    "F[C@H](Cl)Br",
    "C/C=C/C",
    "[Na+].[Cl-]",
    "c1ccc2ccccc2c1",
    "O=C([O-])c1ccccc1",
    "C[NH3+]",
    "Brc1ccc(Br)cc1",
    "C%10CCCCC%10",
    "[nH]1cccc1",
    "C[Si](C)(C)C",
    "CC1C2CCC(C2)C1CN(CCO)C(=O)c1ccc(Cl)cc1",
    "COc1ccc(-c2cc(=O)c3c(O)c(OC)c(OC)cc3o2)cc1O",
    "CCOC(=O)c1ncn2c1CN(C)C(=O)c1cc(F)ccc1-2",
    "Clc1ccccc1-c1nc(-c2ccncc2)no1",
    "N#CC(=O)[O-]",
    "C1CC2CCC1C2",
    "S=C=S",
    "O=[N+]([O-])c1ccccc1",
]
OOV_SMILES = [
    "[Xe+3]",
    "C[13CH2]O",
    "[2H]C([2H])([2H])[2H]",
    "[Pt@SP1](Cl)(Cl)(N)N",
    "C[Ge]C",
    "[Na]",
    "[Na+].[OH-]",
    "[13C@@H2+:12]O",
    "[Co@OH1](F)(F)(F)(F)(F)F",
    "[se]1cccc1",
    "[HH]",
    "[Sc+3]",
    "[*:1]C",
    "[Fe+16]",
    "[Xx]C",
    "C[C@TH3]",
    "[]C",
    "[C C]",
    "C[N",
]
PROTEINS = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMSLFDFFKNKGSAA", "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSF"]
NACL = (
    "NaCl\nFm-3m\n5.690 5.690 5.690\n90.00 90.00 90.00\nNa 4a 0.0000 0.0000 0.0000\n"
    "Cl 4b 0.5000 0.5000 0.5000"
)
CRYSTALS = [
    NACL,
    "Si2\nFd-3m\n5.469 5.469 5.469\n90.00 90.00 90.00\nSi 8a 0.0000 0.0000 0.0000",
    "LiFePO4\nPnma\n10.33 6.010 4.692\n90.00 90.00 90.00\nLi 4a 0.0000 0.0000 0.0000\n"
    "Fe 4c 0.2822 0.2500 0.9747",
    "CuO\nC2/c\n4.684 3.423 5.129\n90.00 99.54 90.00\nCu 4c 0.2500 0.2500 0.0000",
    "ZnO\nP6_3mc\n3.250 3.250 5.207\n90.00 90.00 120.0\nZn 2b 0.3333 0.6667 0.0000",
]
NUMBERS = [
    "1.31±0.02 eV",
    "78.37",
    "-2.50e-3",
    "298.15 K",
    "2.165 g cm^-3",
    "1.310",
    "0.5 eV",
    "1e5",
    "6.02214076e23",
    "42",
]
PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "In SMILES, benzene is written c1ccccc1 and toluene Cc1ccccc1; success comes to those who "
    "accept.",
    "Its sequence MKTAYIAKQRQISFVKSHFSRQ appears in the abstract, as does MKTAYIAKQR.",
    "Measured in 2024 at 300 K, the sample of 12 crystals was stable for 7 days.",
    "Solutions with x < 5 and a<->b arrows are literal prose, as is &lt;mol>.",
]


def corpus() -> list[str]:
    texts = []
    for i in range(120):
        smiles, number = SMILES[i % len(SMILES)], NUMBERS[i % len(NUMBERS)]
        protein, crystal = PROTEINS[i % len(PROTEINS)], CRYSTALS[i % len(CRYSTALS)]
        texts.append(
            f"{PROSE[i % len(PROSE)]} The compound <mol>{smiles}</mol> has a band gap of "
            f"<num>{number}</num>."
        )
        texts.append(
            f"The protein <protein>{protein}</protein> binds; the structure is\n"
            f"<crystal>{crystal}</crystal>\n{PROSE[(i + 2) % len(PROSE)]}"
        )
    return texts


FIXED_TEXTS = [
    "",
    "plain prose only",
    "The quick brown fox jumps over the lazy dog. 日本語 🧪🔬 \n\n\t x < 5, a<->b, &lt;mol>",
    "<mol>c1ccccc1</mol>",
    "<mol>[C@@H](Cl)Br%10</mol>",
    "Aspirin is <mol>CC(=O)Oc1ccccc1C(=O)O</mol>; gap <num>1.31±0.02 eV</num>.",
    "<num>-2.50e-3</num><num>123</num><mol></mol>",
    "<protein>MKTAYIAKQR</protein> and <protein>GSHM</protein>",
    f"rock salt: <crystal>{NACL}</crystal>",
    "oov: <mol>C[Xe+3]C</mol> <num>5 furlongs/fortnight</num> <mol>C C</mol>",
    "<<mol>CCO</mol>> <num>1</num><",
    "<|endoftext|> inside prose and <|pad|>",
]


@pytest.fixture(scope="module")
def tok() -> ScienceTokenizer:
    return train_tokenizer(corpus(), vocab_size=600, min_frequency=2)


@pytest.fixture(scope="module")
def saved(tok, tmp_path_factory) -> Path:
    return tok.save(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def plain(saved) -> Tokenizer:
    return Tokenizer.from_file(str(saved / "tokenizer.json"))


def pieces(tok: ScienceTokenizer, ids) -> list[str]:
    return [tok.decode([i]) for i in ids]


#: a bracket atom restated (isotope, element by the shortest match that lets the rest parse,
#: chirality, hydrogens, charge, class); the element must then be one of BRACKET_ELEMENTS
REFERENCE_BRACKET = re.compile(
    r"\[([0-9]*)(.+?)(@(?:TH[12]|AL[12]|SP[1-3]|TB(?:1[0-9]|20|[1-9])|OH(?:[12][0-9]|30|[1-9]))"
    r"|@@|@)?(H[0-9]?)?(\+\+|--|[+-](?:1[0-5]|[0-9])?)?(?::([0-9]+))?\]"
)
BRACKET_ELEMENTS = {*ELEMENTS, "b", "c", "n", "o", "p", "s", "si", "as", "se", "te", "*"}


def reference_bracket_ids(tok: ScienceTokenizer, piece: str) -> list[int] | None:
    """The ids of a bracket atom's parts, or None (no bracket parts, or not a bracket atom)."""
    match = REFERENCE_BRACKET.fullmatch(piece)
    if tok.brackets is None or match is None or match.group(2) not in BRACKET_ELEMENTS:
        return None
    isotope, element, chirality, hydrogens, charge, atom_class = match.groups()
    parts = tok.brackets["parts"]
    ids = [parts["open"]["["], *(parts["digit"][d] for d in isotope), parts["element"][element]]
    for category, text in (("chirality", chirality), ("hydrogens", hydrogens), ("charge", charge)):
        if text:
            ids.append(parts[category][text])
    if atom_class:
        ids += [parts["map"][":"], *(parts["digit"][d] for d in atom_class)]
    return [*ids, parts["close"]["]"]]


def reference_span_ids(tok: ScienceTokenizer, modality: str, content: str) -> list[int]:
    """The documented rule, restated with Python's `re`: the span's regex splits the content into
    matches and the gaps between them; a piece in the science vocabulary is one id, a SMILES
    bracket atom outside it is its bracket parts (format 2), any other piece is encoded with the
    prose BPE."""
    pieces_, cursor = [], 0
    for match in re.finditer(tok.patterns[modality], content):
        if match.start() > cursor:
            pieces_.append(content[cursor : match.start()])
        if match.group():
            pieces_.append(match.group())
        cursor = match.end()
    if cursor < len(content):
        pieces_.append(content[cursor:])
    vocabulary = tok.science[modality]
    ids = []
    for piece in pieces_:
        if piece in vocabulary:
            ids.append(vocabulary[piece])
        elif modality == "mol" and (parts := reference_bracket_ids(tok, piece)) is not None:
            ids.extend(parts)
        else:
            ids.extend(tok.prose.encode(piece, add_special_tokens=False).ids)
    return ids


def reference_ids(tok: ScienceTokenizer, text: str, *, plain_hf: bool = False) -> list[int]:
    """kiban's encoding (or, with ``plain_hf``, what a plain Hugging Face tokenizer does: the
    prose BPE inside spans too), segment by segment."""
    ids: list[int] = []
    for segment in split_tagged(text):
        if segment.modality is None:
            ids += tok._prose_encoder.encode(segment.text, add_special_tokens=False).ids
            continue
        ids.append(tok.tag_ids[f"<{segment.modality}>"])
        if plain_hf:
            ids += tok._prose_encoder.encode(segment.text, add_special_tokens=False).ids
        else:
            ids += reference_span_ids(tok, segment.modality, segment.text)
        ids.append(tok.tag_ids[f"</{segment.modality}>"])
    return ids


# --- random tagged texts ----------------------------------------------------------------------
TAG_SHAPED = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9_-]*)>")
PROSE_SAMPLES = [
    "x < 5",
    "a<->b",
    "&lt;mol>",
    "日本語のテキスト",
    "🧪🔬👩‍🔬",
    "  \n\n\t ",
    "\r\n",
    "<",
    "<<",
    "</",
    "1 < 2 > 0",
    "in 2024,",
    " C ",
    "c1ccccc1",
    "Ġ Ċ",
    "\x00\x7f",
    "e\u0301 é",
    "\u200b\ufeff",
    "<mol",
    "</mol",
]
prose_strategy = st.text(st.characters(exclude_categories=("Cs",)), max_size=25) | st.sampled_from(
    PROSE_SAMPLES
)
number_strategy = st.from_regex(
    r"\A-?[0-9]{1,6}(\.[0-9]{1,6})?(e-?[1-9][0-9]?)?(±[0-9]\.[0-9]{1,3})?"
    r"( (eV|K|GPa|kJ/mol|Å|°C|g cm\^-3|furlongs))?\Z",
    fullmatch=True,
) | st.sampled_from(NUMBERS)


@st.composite
def crystal_strategy(draw) -> str:
    elements = draw(st.lists(st.sampled_from(ELEMENTS), min_size=1, max_size=3))
    formula = "".join(e + draw(st.sampled_from(["", "2", "3", "4"])) for e in elements)
    group = draw(st.sampled_from(space_group_symbols()))
    number = st.decimals(
        min_value=0, max_value=50, places=4, allow_nan=False, allow_infinity=False
    ).map(lambda d: f"{d:.4f}")
    lines = [
        formula,
        group,
        " ".join(draw(number) for _ in range(3)),
        " ".join(draw(st.sampled_from(["90.00", "120.0", "99.54"])) for _ in range(3)),
    ]
    for element in elements:
        wyckoff = draw(st.integers(1, 48)), draw(st.sampled_from("abcdefghijkl"))
        lines.append(
            f"{element} {wyckoff[0]}{wyckoff[1]} " + " ".join(draw(number) for _ in range(3))
        )
    return "\n".join(lines)


segment_strategy = (
    prose_strategy.map(lambda t: Segment(None, t))
    | st.sampled_from(SMILES + OOV_SMILES).map(lambda t: Segment("mol", t))
    | number_strategy.map(lambda t: Segment("num", t))
    | st.text(RESIDUES, min_size=1, max_size=30).map(lambda t: Segment("protein", t))
    | (st.sampled_from(CRYSTALS) | crystal_strategy()).map(lambda t: Segment("crystal", t))
)


@st.composite
def tagged_texts(draw) -> str:
    merged: list[Segment] = []
    for segment in draw(st.lists(segment_strategy, max_size=8)):
        if segment.modality is None and merged and merged[-1].modality is None:
            merged[-1] = Segment(None, merged[-1].text + segment.text)
        else:
            merged.append(segment)
    # prose with a tag-shaped sequence is an error, not prose (test_document covers it)
    return join_segments([s for s in merged if not TAG_SHAPED.search(s.text)])


# --- round trip -------------------------------------------------------------------------------
@given(tagged_texts())
@example("<|endoftext|>")  # found by Hypothesis in CI, 2026-11-29
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_and_the_documented_rule_on_random_texts(tok, plain, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    # the plain tokenizer.json decodes kiban ids exactly (tags are not special tokens)
    assert plain.decode(ids) == plain.decode(ids, skip_special_tokens=False) == text
    assert tok.unk_id not in ids
    assert ids == reference_ids(tok, text)
    # plain HF encodes span contents with the prose BPE: identical on prose and tags -- except
    # for a literal special token in the text ("<|endoftext|>", which Hypothesis also draws from
    # kiban's own string constants): kiban keeps it as text, plain HF as that token (the
    # documented difference, test_fixed_texts_round_trip)
    specials = [t.content for t in plain.get_added_tokens_decoder().values() if t.special]
    if not any(s in text for s in specials):
        assert plain.encode(text, add_special_tokens=False).ids == reference_ids(
            tok, text, plain_hf=True
        )
    # encoding is local to segments: the whole is the concatenation of its parts
    assert ids == [i for s in split_tagged(text) for i in tok.encode(join_segments([s]))]


def test_fixed_texts_round_trip(tok, plain):
    batch = tok.encode_batch(FIXED_TEXTS)
    assert len(batch) == len(FIXED_TEXTS)
    for text, ids in zip(FIXED_TEXTS, batch):
        assert ids.dtype == np.int64
        assert ids.tolist() == tok.encode(text) == reference_ids(tok, text)
        assert tok.decode(ids) == text == plain.decode(ids.tolist(), skip_special_tokens=False)
    assert tok.decode_batch(batch) == FIXED_TEXTS
    # a literal special token in prose is encoded as text, never as that token
    ids = tok.encode(FIXED_TEXTS[-1])
    assert tok.eos_id not in ids and tok.pad_id not in ids
    assert plain.decode(ids) == FIXED_TEXTS[-1]
    # ... where plain HF, matching added special tokens in any text, makes them the tokens
    hf = plain.encode(FIXED_TEXTS[-1], add_special_tokens=False).ids
    assert tok.eos_id in hf and tok.pad_id in hf
    assert tok.encode("") == [] and tok.decode([]) == ""


# --- span-aware tokenization ------------------------------------------------------------------
def test_special_and_tag_ids(tok):
    assert (tok.eos_id, tok.pad_id, tok.unk_id) == (0, 1, 2)
    assert tok.tag_ids == {
        "<mol>": 3,
        "</mol>": 4,
        "<crystal>": 5,
        "</crystal>": 6,
        "<num>": 7,
        "</num>": 8,
        "<protein>": 9,
        "</protein>": 10,
    }
    assert TAG_TOKENS == tuple(tok.tag_ids)
    assert [tok.id_to_token(i) for i in range(3)] == [END_OF_TEXT, PAD, UNKNOWN]


def test_smiles_tokens_are_single_ids(tok):
    ids = tok.encode("<mol>[C@@H](Cl)Br%10</mol>")
    assert pieces(tok, ids) == ["<mol>", "[C@@H]", "(", "Cl", ")", "Br", "%10", "</mol>"]
    ids = tok.encode("<mol>c1ccccc1</mol>")
    assert len(ids) == 10
    assert ids == [3, *[tok.science["mol"][t] for t in "c1ccccc1"], 4]
    assert pieces(tok, tok.encode("<mol>O=[N+]([O-])c1ccccc1</mol>"))[1:7] == [
        "O",
        "=",
        "[N+]",
        "(",
        "[O-]",
        ")",
    ]


def test_number_tokens_are_digits(tok):
    assert pieces(tok, tok.encode("<num>-2.50e-3</num>")) == [
        "<num>",
        "-",
        "2",
        ".",
        "5",
        "0",
        "e",
        "-",
        "3",
        "</num>",
    ]
    assert pieces(tok, tok.encode("<num>1.31±0.02 eV</num>")) == [
        "<num>",
        "1",
        ".",
        "3",
        "1",
        "±",
        "0",
        ".",
        "0",
        "2",
        " ",
        "eV",
        "</num>",
    ]
    assert "eV" in tok.science["num"]  # a unit seen often enough in the corpus is one token
    assert pieces(tok, tok.encode("<num>6.02214076e23</num>"))[1:] == [
        *"6.02214076",
        "e",
        "2",
        "3",
        "</num>",
    ]


def test_digits_in_prose_are_single_tokens(tok):
    assert pieces(tok, tok.encode("in 2024"))[-4:] == ["2", "0", "2", "4"]
    assert tok.encode("2024") == [tok.science["num"][d] for d in "2024"]


def test_protein_tokens_are_residues(tok):
    ids = tok.encode("<protein>MKTAYIAKQR</protein>")
    assert pieces(tok, ids) == ["<protein>", *"MKTAYIAKQR", "</protein>"]
    assert sorted(tok.science["protein"]) == sorted(RESIDUES)


def test_crystal_tokens(tok):
    ids = tok.encode(f"<crystal>{NACL}</crystal>")
    assert pieces(tok, ids) == [
        "<crystal>",
        "Na",
        "Cl",
        "\n",
        "Fm-3m",
        "\n",
        *"5.690 5.690 5.690",
        "\n",
        *"90.00 90.00 90.00",
        "\n",
        "Na",
        *" 4a 0.0000 0.0000 0.0000",
        "\n",
        "Cl",
        *" 4b 0.5000 0.5000 0.5000",
        "</crystal>",
    ]


def test_every_space_group_symbol_is_one_token(tok):
    symbols = space_group_symbols()
    assert len(symbols) == len(set(symbols)) > 200
    assert {"Fm-3m", "P2_1/c", "Pnma", "P-1", "P1", "R-3m", "Ia-3d"} <= set(symbols)
    texts = [f"<crystal>X\n{symbol}\n1.0</crystal>" for symbol in symbols]
    for symbol, ids in zip(symbols, tok.encode_batch(texts)):
        assert ids.tolist()[3] == tok.science["crystal"][symbol]
        assert tok.decode(ids[3:4]) == symbol


def test_science_tokens_share_ids_with_prose_tokens(tok):
    for token in ["C", "c", "1", "(", "N", "O"]:
        assert tok.science["mol"][token] == tok.prose.token_to_id(token)
    assert tok.science["crystal"]["\n"] == tok.prose.token_to_id("Ċ")
    assert tok.science["num"][" "] == tok.prose.token_to_id("Ġ")
    # all modalities map a shared string to one id
    for a in MODALITY_TAGS:
        for b in MODALITY_TAGS:
            for token in set(tok.science[a]) & set(tok.science[b]):
                assert tok.science[a][token] == tok.science[b][token]


def test_tags_are_single_ids_that_never_merge(tok, plain):
    vocabulary = tok.hf.get_vocab(with_added_tokens=True)
    for tag in TAG_TOKENS:
        assert plain.encode(tag, add_special_tokens=False).ids == [tok.tag_ids[tag]]
        assert [t for t in vocabulary if tag in t or tag[:-1] in t] == [tag]
    text = "x<mol>C</mol>y mol><num>1</num>"
    ids = tok.encode(text)
    assert (
        ids[1] == 3 and ids[3] == 4 and pieces(tok, ids)[:5] == ["x", "<mol>", "C", "</mol>", "y"]
    )
    for tag in TAG_TOKENS:
        assert ids.count(tok.tag_ids[tag]) == text.count(tag)


def test_out_of_vocabulary_span_pieces_fall_back_to_prose(tok, plain):
    # a bracket that is no SMILES atom (no element "Xx") is spelled with the prose BPE
    assert "[Xx]" not in tok.science["mol"]
    text = "<mol>C[Xx]C</mol>"
    ids = tok.encode(text)
    carbon = tok.science["mol"]["C"]
    assert ids == [3, carbon, *tok.prose.encode("[Xx]").ids, carbon, 4]
    assert tok.decode(ids) == text == plain.decode(ids)
    text = "<num>5 furlongs</num>"
    ids = tok.encode(text)
    assert ids == [
        7,
        tok.science["num"]["5"],
        tok.science["num"][" "],
        *tok.prose.encode("furlongs").ids,
        8,
    ]
    assert tok.decode(ids) == text
    # a character no span regex matches
    text = "<protein>MK😀T</protein>"
    assert tok.decode(tok.encode(text)) == text and tok.unk_id not in tok.encode(text)


# --- SMILES bracket atoms ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("piece", "parts"),
    [
        ("[Na]", [("open", "["), ("element", "Na"), ("close", "]")]),
        (
            "[13C@@H2+:12]",
            [
                ("open", "["),
                ("digit", "1"),
                ("digit", "3"),
                ("element", "C"),
                ("chirality", "@@"),
                ("hydrogens", "H2"),
                ("charge", "+"),
                ("map", ":"),
                ("digit", "1"),
                ("digit", "2"),
                ("close", "]"),
            ],
        ),
        ("[Cl-]", [("open", "["), ("element", "Cl"), ("charge", "-"), ("close", "]")]),
        (
            "[Sc+3]",
            [("open", "["), ("element", "Sc"), ("charge", "+3"), ("close", "]")],
        ),  # not S, c
        ("[se]", [("open", "["), ("element", "se"), ("close", "]")]),
        (
            "[nH+]",
            [("open", "["), ("element", "n"), ("hydrogens", "H"), ("charge", "+"), ("close", "]")],
        ),
        ("[HH]", [("open", "["), ("element", "H"), ("hydrogens", "H"), ("close", "]")]),
        ("[2H]", [("open", "["), ("digit", "2"), ("element", "H"), ("close", "]")]),
        ("[Hg++]", [("open", "["), ("element", "Hg"), ("charge", "++"), ("close", "]")]),
        ("[Co@OH30]", [("open", "["), ("element", "Co"), ("chirality", "@OH30"), ("close", "]")]),
        ("[*:1]", [("open", "["), ("element", "*"), ("map", ":"), ("digit", "1"), ("close", "]")]),
        ("[Og-15]", [("open", "["), ("element", "Og"), ("charge", "-15"), ("close", "]")]),
        # not bracket atoms: no such element, charge or chirality; empty; a space; a prefix
        ("[Xx]", None),
        ("[Fe+16]", None),
        ("[C@TH3]", None),
        ("[C@@@H]", None),
        ("[]", None),
        ("[C C]", None),
        ("[CH12]", None),
        ("[C", None),
        ("[n-]C", None),
    ],
)
def test_bracket_atom_parts(piece, parts):
    assert split_bracket_atom(piece) == parts


def test_bracket_part_vocabulary():
    assert len(BRACKET_PARTS["element"]) == 118 + 10 + 1  # the periodic table, aromatic, "*"
    assert {"se", "te", "as", "si", "Uue"} & set(BRACKET_PARTS["element"]) == {
        "se",
        "te",
        "as",
        "si",
    }
    assert len(BRACKET_PARTS["chirality"]) == 2 + 2 + 2 + 3 + 20 + 30
    assert len(BRACKET_PARTS["charge"]) == 4 + 32 and len(BRACKET_PARTS["hydrogens"]) == 11
    assert sum(map(len, BRACKET_PARTS.values())) == 1 + 1 + 10 + 129 + 59 + 11 + 36 + 1


def test_bracket_parts_are_ids_of_their_own(tok, plain):
    parts = tok.brackets["parts"]
    assert {c: sorted(texts) for c, texts in parts.items()} == {
        c: sorted(texts) for c, texts in BRACKET_PARTS.items()
    }
    part_ids = [i for texts in parts.values() for i in texts.values()]
    assert len(set(part_ids)) == len(part_ids) == 248
    # no organic atom, bond, ring label or whole bracket atom shares an id with a part ...
    assert not set(part_ids) & set(tok.science["mol"].values())
    # ... nor does any prose token, except "[" and "]" (SMILES writes them only as brackets)
    prose = set(tok.prose.get_vocab().values()) - set(part_ids)
    assert {i for i in part_ids if tok.prose.id_to_token(i) in ("[", "]")} == {
        parts["open"]["["],
        parts["close"]["]"],
    }
    assert len(prose) == tok.vocab_size - len(part_ids)
    for category, texts in parts.items():
        for text, token_id in texts.items():
            assert tok.decode([token_id]) == plain.decode([token_id]) == text, (category, text)
    # the same text in two categories is two ids: element H and a hydrogen count, ...
    assert parts["element"]["H"] != parts["hydrogens"]["H"]
    assert parts["charge"]["-"] != tok.science["mol"]["-"]  # ... a charge and a bond
    assert parts["digit"]["1"] != tok.science["mol"]["1"]  # ... an isotope and a ring label
    assert parts["map"][":"] != tok.science["mol"][":"]  # ... an atom class and a bond
    assert parts["element"]["c"] != tok.science["mol"]["c"]  # ... [c] and c


def test_out_of_vocabulary_bracket_atoms_are_split_into_bracket_parts(tok, plain):
    assert "[Xe+3]" not in tok.science["mol"] and "[C@@H]" in tok.science["mol"]
    parts = tok.brackets["parts"]
    text = "<mol>C[Xe+3]C[C@@H]([13CH3:7])O</mol>"
    ids = tok.encode(text)
    mol = tok.science["mol"]
    assert ids == [
        3,
        mol["C"],
        parts["open"]["["],
        parts["element"]["Xe"],
        parts["charge"]["+3"],
        parts["close"]["]"],
        mol["C"],
        mol["[C@@H]"],
        mol["("],
        parts["open"]["["],
        parts["digit"]["1"],
        parts["digit"]["3"],
        parts["element"]["C"],
        parts["hydrogens"]["H3"],
        parts["map"][":"],
        parts["digit"]["7"],
        parts["close"]["]"],
        mol[")"],
        mol["O"],
        4,
    ]
    assert pieces(tok, ids) == [
        "<mol>",
        "C",
        "[",
        "Xe",
        "+3",
        "]",
        "C",
        "[C@@H]",
        "(",
        "[",
        "1",
        "3",
        "C",
        "H3",
        ":",
        "7",
        "]",
        ")",
        "O",
        "</mol>",
    ]
    assert tok.decode(ids) == text == plain.decode(ids)
    # the Rust path (a span with a gap the regex skips) splits them the same way
    assert tok.encode("<mol>[Xe+3] C</mol>") == [3, *ids[2:6], tok.science["num"][" "], mol["C"], 4]


NO_SODIUM = [
    "Ethylamine <mol>CCN</mol> and acetate <mol>CC(=O)[O-]</mol> in water.",
    "Pyridine <mol>c1ccncc1</mol> boils at <num>388</num> K.",
] * 3


def test_sodium_is_not_nitrogen():
    """The fault: a bracket atom outside the vocabulary was spelled with the prose BPE, so
    ``[Na+]`` held the id of the organic ``N`` and a search for nitrogen counted sodium."""
    tok = train_tokenizer(NO_SODIUM, vocab_size=300, min_frequency=2)
    assert not [t for t in tok.science["mol"] if "Na" in t]  # [Na+] is out of the vocabulary
    nitrogen = tok.encode("<mol>N</mol>")[1:-1]
    assert nitrogen == [tok.science["mol"]["N"]]
    salt = tok.encode("<mol>[Na+].[Cl-]</mol>")
    assert nitrogen[0] not in salt
    assert pieces(tok, salt) == ["<mol>", "[", "Na", "+", "]", ".", "[", "Cl", "-", "]", "</mol>"]
    # and what nitrogen there is, is found: the organic N, and none inside [NH4+] or [Na+]
    text = "<mol>[NH4+].[Na+].CCN</mol>"
    assert tok.encode(text).count(nitrogen[0]) == 1 and tok.decode(tok.encode(text)) == text


#: the atom alternatives of the standard SMILES regex (SMILES_TOKEN_PATTERN)
REGEX_ATOM = re.compile(r"\[[^\]]+\]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\*")


def test_atoms_match_the_smiles_regex_on_rdkit_nci_molecules(tok):
    """Every molecule of RDKit's NCI set: decoding restores it; the atoms of the encoding (a
    whole-atom token, or the parts from "[" to "]" put together) are the regex's atom tokens and
    as many as RDKit's atoms; inside brackets only bracket parts occur."""
    from rdkit import Chem, RDConfig, rdBase

    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    smiles = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    assert len(smiles) == 4999
    parts = tok.brackets["parts"]
    part_ids = {i for texts in parts.values() for i in texts.values()}
    opening, closing = parts["open"]["["], parts["close"]["]"]
    split = 0
    for text, ids in zip(smiles, tok.encode_batch([f"<mol>{s}</mol>" for s in smiles])):
        ids = ids.tolist()[1:-1]
        assert tok.decode(ids) == text
        atoms, inside = [], None
        for token_id in ids:
            if inside is not None:
                assert token_id in part_ids, (text, tok.decode([token_id]))
                inside.append(tok.decode([token_id]))
                if token_id == closing:
                    atoms.append("".join(inside))
                    inside, split = None, split + 1
            elif token_id == opening:
                inside = ["["]
            else:
                assert token_id not in part_ids, text
                if REGEX_ATOM.fullmatch(tok.decode([token_id])):
                    atoms.append(tok.decode([token_id]))
        regex_atoms = [p for p in re.findall(SMILES_TOKEN_PATTERN, text) if REGEX_ATOM.fullmatch(p)]
        assert atoms == regex_atoms, text
        with rdBase.BlockLogs():
            molecule = Chem.MolFromSmiles(text, sanitize=False)
        assert molecule.GetNumAtoms() == len(atoms), text
    # [CH] (2252 times), [C] (258), [Cu] (37) ... are split; [N+], [O-] ... are whole tokens
    brackets = [p for s in smiles for p in re.findall(r"\[[^\]]+\]", s)]
    assert split == len([p for p in brackets if p not in tok.science["mol"]]) == 2858


FIXTURES = Path(__file__).parent / "fixtures"


def test_a_format_1_tokenizer_loads_and_encodes_as_it_always_did(tmp_path):
    """tests/fixtures/tokenizer_v1 was written by kiban 531e3f1 (tokenizer format 1, before
    bracket parts): its ids, fingerprint and saved files must not change."""
    directory = FIXTURES / "tokenizer_v1"
    expected = json.loads((directory / "expected.json").read_text(encoding="utf-8"))
    old = ScienceTokenizer.load(directory)
    assert (old.format_version, old.brackets, old.vocab_size) == (1, None, expected["vocab_size"])
    assert old.fingerprint == expected["fingerprint"]
    for case in expected["encodings"]:
        assert old.encode(case["text"]) == case["ids"]
        assert old.decode(case["ids"]) == case["text"]
    # (format 1 puts the id of N in sodium: "[", "N", "a", "+", "]")
    assert pieces(old, old.encode("<mol>[Na+]</mol>")) == [
        "<mol>",
        "[",
        "N",
        "a",
        "+",
        "]",
        "</mol>",
    ]
    old.save(tmp_path)
    for name in ("kiban_tokenizer.json", "tokenizer.json"):
        assert (tmp_path / name).read_bytes() == (directory / name).read_bytes()
    assert json.loads((tmp_path / "kiban_tokenizer.json").read_text())["version"] == 1


def test_saved_metadata_is_format_2(tok, saved):
    meta = json.loads((saved / "kiban_tokenizer.json").read_text(encoding="utf-8"))
    assert (
        (meta["format"], meta["version"]) == ("kiban.tokenizer", 2) == (FORMAT_NAME, FORMAT_VERSION)
    )
    assert meta["smiles_brackets"] == {
        "pattern": BRACKET_ATOM_PATTERN,
        "parts": tok.brackets["parts"],
    }
    fmt = get_format("kiban.tokenizer")
    assert (fmt.version, fmt.readable_versions) == (2, (1, 2))
    assert tok.format_version == 2


# --- plain Hugging Face files -----------------------------------------------------------------
def test_saved_files(saved):
    assert sorted(p.name for p in saved.iterdir()) == [
        "kiban_tokenizer.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((saved / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["eos_token"], config["pad_token"]) == (END_OF_TEXT, PAD)
    assert config["clean_up_tokenization_spaces"] is False


def test_plain_tokenizers_decodes_kiban_ids(tok, plain):
    assert plain.get_vocab_size(with_added_tokens=True) == tok.vocab_size
    for text in FIXED_TEXTS:
        ids = tok.encode(text)
        assert plain.decode(ids, skip_special_tokens=False) == text
        if "<|" not in text:
            assert plain.decode(ids) == text


def test_transformers_loads_and_decodes(tok, saved):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(saved))
    assert (hf.eos_token, hf.pad_token) == (END_OF_TEXT, PAD)
    assert (hf.eos_token_id, hf.pad_token_id) == (0, 1)
    assert hf.convert_tokens_to_ids(list(TAG_TOKENS)) == list(range(3, 11))
    assert len(hf) == tok.vocab_size
    for text in FIXED_TEXTS:
        ids = tok.encode(text)
        assert hf.decode(ids) == text
    # where plain HF encoding agrees with kiban: prose, tags, digit-only numbers
    agree = [
        "plain prose only",
        FIXED_TEXTS[2],
        "Measured in 2024 at 300 K.",
        "<mol></mol><num></num>",
        "<num>123</num>",
        "<num>-2.50e-3</num>",
        "a <num>1.31</num> b <num>6.02214076e23</num>",
        "x < 5 <num>0.0</num>",
    ]
    for text in agree:
        assert hf.encode(text, add_special_tokens=False) == tok.encode(text)


def test_plain_encoding_agrees_on_prose_tags_and_digits(tok, plain):
    for text in [
        "plain prose only",
        FIXED_TEXTS[2],
        "in 2024 at 300 K",
        "<mol></mol>",
        "<crystal></crystal><protein></protein>",
        "<num>123</num>",
        "<num>-2.50e-3</num>",
        "The gap is <num>1.31</num> here. <num>1e5</num>",
    ]:
        assert plain.encode(text, add_special_tokens=False).ids == tok.encode(text)


def test_plain_encoding_differs_inside_spans(tok, plain):
    # the prose BPE merged "cc" (the corpus writes SMILES in prose), so plain HF encodes
    # c1ccccc1 with merges while kiban writes one token per atom
    assert byte_level("cc") in tok.prose.get_vocab()
    for text in [
        "<mol>c1ccccc1</mol>",
        "<protein>MKTAYIAKQR</protein>",
        "<num>1.31±0.02 eV</num>",
        f"<crystal>{NACL}</crystal>",
    ]:
        kiban_ids = tok.encode(text)
        plain_ids = plain.encode(text, add_special_tokens=False).ids
        assert plain_ids != kiban_ids
        assert plain_ids == reference_ids(tok, text, plain_hf=True)
        assert plain.decode(plain_ids) == text == plain.decode(kiban_ids)
    for text in ["<mol>c1ccccc1</mol>", "<protein>MKTAYIAKQR</protein>"]:  # merged by the BPE
        assert len(plain.encode(text).ids) < len(tok.encode(text))
    benzene = "<mol>c1ccccc1</mol>"
    assert len(plain.encode(benzene).ids) < 10 == len(tok.encode(benzene))


# --- determinism ------------------------------------------------------------------------------
def test_training_is_deterministic(tok, saved, tmp_path):
    again = train_tokenizer(corpus(), vocab_size=600, min_frequency=2)
    assert again.hf.to_str() == tok.hf.to_str()
    assert again.science == tok.science
    assert again.fingerprint == tok.fingerprint
    again.save(tmp_path)
    for name in ("tokenizer.json", "kiban_tokenizer.json"):
        assert (tmp_path / name).read_bytes() == (saved / name).read_bytes()


def test_training_is_deterministic_across_processes(tok, saved, tmp_path):
    (tmp_path / "corpus.json").write_text(json.dumps(corpus()), encoding="utf-8")
    script = (
        "import json, sys\n"
        "from kiban.tokenizer import train_tokenizer\n"
        "texts = json.load(open(sys.argv[1], encoding='utf-8'))\n"
        "tok = train_tokenizer(texts, vocab_size=600, min_frequency=2)\n"
        "tok.save(sys.argv[2])\n"
        "print(tok.fingerprint)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "RAYON_NUM_THREADS": "3"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "corpus.json"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == tok.fingerprint
    for name in ("tokenizer.json", "kiban_tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "out" / name).read_bytes() == (saved / name).read_bytes()


def test_fingerprint_changes_with_the_corpus(tok):
    other = train_tokenizer(
        corpus() + ["quokka quokka quokka"] * 5, vocab_size=600, min_frequency=2
    )
    assert other.fingerprint != tok.fingerprint
    smaller = train_tokenizer(corpus(), vocab_size=400, min_frequency=2)
    assert smaller.fingerprint not in (tok.fingerprint, other.fingerprint)
    assert len(tok.fingerprint) == 64 and int(tok.fingerprint, 16) >= 0


# --- persistence and errors -------------------------------------------------------------------
def test_save_load_round_trip(tok, saved):
    loaded = ScienceTokenizer.load(saved)
    assert loaded.fingerprint == tok.fingerprint
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.science == tok.science and loaded.patterns == tok.patterns
    assert loaded.base is None
    for text in FIXED_TEXTS:
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.decode(tok.encode(text)) == text
    assert not [p for p in saved.iterdir() if p.name.endswith(".tmp")]


def test_save_overwrites_atomically(tok, tmp_path):
    (tmp_path / "tokenizer.json").write_text("old")
    tok.save(tmp_path)
    assert ScienceTokenizer.load(tmp_path).fingerprint == tok.fingerprint


def _copy(saved: Path, target: Path) -> Path:
    target.mkdir()
    for path in saved.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def _edit_metadata(directory: Path, **changes) -> None:
    path = directory / "kiban_tokenizer.json"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


def test_load_missing_directory(tmp_path):
    with pytest.raises(TokenizerError) as info:
        ScienceTokenizer.load(tmp_path / "nowhere")
    assert str(info.value) == (
        f"{tmp_path / 'nowhere' / 'kiban_tokenizer.json'} is missing: {tmp_path / 'nowhere'} is "
        "not a kiban tokenizer directory (expected tokenizer.json and kiban_tokenizer.json)"
    )


def test_load_plain_hf_directory_without_metadata(saved, tmp_path):
    directory = _copy(saved, tmp_path / "t")
    (directory / "kiban_tokenizer.json").unlink()
    with pytest.raises(
        TokenizerError,
        match="kiban_tokenizer.json is missing: .* is not a kiban tokenizer directory",
    ):
        ScienceTokenizer.load(directory)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"version": 3},
            (
                "kiban_tokenizer.json: 'kiban.tokenizer' version 3 was written by a newer "
                "kiban; this one reads versions 1-2: upgrade kiban"
            ),
        ),
        ({"version": 0}, "'kiban.tokenizer' version 0 is too old; this kiban reads versions 1-2"),
        ({"version": None}, "'kiban.tokenizer' with version None; expected an integer"),
        ({"format": "other"}, "not a 'kiban.tokenizer' file (it says format='other', version=2)"),
        ({"smiles_brackets": None}, "kiban_tokenizer.json: 'smiles_brackets' must be an object"),
        ({"smiles_brackets": {"pattern": "[", "parts": {}}}, "'smiles_brackets' must be an object"),
        ({"science": None}, "incomplete metadata"),
        ({"patterns": {"mol": "C"}}, "incomplete metadata"),
        ({"prose_file": "gone.json"}, "gone.json is missing"),
    ],
)
def test_load_bad_metadata(saved, tmp_path, changes, message):
    directory = _copy(saved, tmp_path / "t")
    _edit_metadata(directory, **changes)
    with pytest.raises(TokenizerError, match=re.escape(message)):
        ScienceTokenizer.load(directory)


def test_load_corrupt_files(saved, tmp_path):
    directory = _copy(saved, tmp_path / "a")
    (directory / "kiban_tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="kiban_tokenizer.json: corrupt JSON"):
        ScienceTokenizer.load(directory)
    (directory / "kiban_tokenizer.json").write_text("[1, 2]")
    with pytest.raises(TokenizerError, match="expected a JSON object, got list"):
        ScienceTokenizer.load(directory)
    directory = _copy(saved, tmp_path / "b")
    (directory / "tokenizer.json").unlink()
    with pytest.raises(TokenizerError, match=r"tokenizer.json is missing: .* incomplete kiban"):
        ScienceTokenizer.load(directory)
    (directory / "tokenizer.json").write_text("{}")
    with pytest.raises(TokenizerError, match=r"tokenizer.json: not a readable tokenizer"):
        ScienceTokenizer.load(directory)


def test_load_a_tokenizer_without_kiban_tokens(tmp_path):
    directory = tmp_path / "t"
    directory.mkdir()
    Tokenizer(models.WordLevel({"a": 0, "<|unk|>": 1}, unk_token="<|unk|>")).save(
        str(directory / "tokenizer.json")
    )
    meta = {
        "format": "kiban.tokenizer",
        "version": 1,
        "base": None,
        "science": {},
        "patterns": span_patterns(),
        "prose_file": "tokenizer.json",
    }
    (directory / "kiban_tokenizer.json").write_text(json.dumps(meta))
    with pytest.raises(
        TokenizerError, match="tokenizer has no '<mol>' token; is it a kiban tokenizer?"
    ):
        ScienceTokenizer.load(directory)


def test_decode_rejects_ids_outside_the_vocabulary(tok):
    size = tok.vocab_size
    assert tok.decode([size - 1]) == tok.decode(np.array([size - 1]))
    for bad in ([size], [0, -1], [10**9, size + 1, 5]):
        with pytest.raises(TokenizerError) as info:
            tok.decode(bad)
        assert str(info.value) == (
            f"token ids {[i for i in bad if not 0 <= i < size]} are "
            f"outside the vocabulary (size {size})"
        )


def test_vocab_size_too_small():
    with pytest.raises(TokenizerError, match="vocab_size must be at least 267 .* got 266"):
        train_tokenizer(["a"], vocab_size=266)


def test_vocabulary_is_dense(tok):
    ids = sorted(tok.hf.get_vocab(with_added_tokens=True).values())
    assert ids == list(range(tok.vocab_size))


def test_token_dtype_small_vocabulary(tok):
    assert tok.vocab_size < 65536
    assert tok.token_dtype == np.dtype(np.uint16)


def _word_level_tokenizer(size: int) -> ScienceTokenizer:
    tokens = [END_OF_TEXT, PAD, UNKNOWN, *TAG_TOKENS]
    vocab = {token: i for i, token in enumerate(tokens)}
    vocab.update({f"w{i}": i for i in range(len(tokens), size)})
    hf = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN))
    return ScienceTokenizer(hf, hf, {m: {} for m in MODALITY_TAGS}, span_patterns())


@pytest.mark.parametrize(
    ("size", "dtype"),
    [(65535, np.uint16), (65536, np.uint16), (65537, np.uint32), (70000, np.uint32)],
)
def test_token_dtype_rule(size, dtype):
    tokenizer = _word_level_tokenizer(size)
    assert tokenizer.vocab_size == size
    assert tokenizer.token_dtype == np.dtype(dtype)
    assert np.iinfo(tokenizer.token_dtype).max >= size - 1  # the largest id fits


# --- extending a base tokenizer ---------------------------------------------------------------
ENGLISH = [
    "The cat sat on the mat.",
    "A dog ran in the park.",
    "Scientists measure things.",
    "The weather was fine and the sun was warm.",
    "Reading papers takes time.",
]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    base = Tokenizer(models.BPE())
    base.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    base.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    base.train_from_iterator(ENGLISH * 20, trainer=trainer)
    directory = tmp_path_factory.mktemp("base")
    base.save(str(directory / "tokenizer.json"))
    return directory


@pytest.fixture(scope="module")
def extended(base_dir) -> ScienceTokenizer:
    texts = corpus() + ["<num>5 Å</num> at <num>25 °C</num>"] * 3
    return extend_tokenizer(base_dir, corpus_texts=texts)


def test_extend_keeps_every_existing_id(base_dir, extended):
    base = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
    base_size = base.get_vocab_size(with_added_tokens=True)
    for token_id in range(base_size):
        assert extended.hf.id_to_token(token_id) == base.id_to_token(token_id)
        assert extended.hf.decode([token_id]) == base.decode([token_id])
    # prose is encoded by the unextended base tokenizer
    for text in ENGLISH + ["x ± 5 Å, 25 °C", "Cl and Br; c1ccccc1 [C@@H]"]:
        assert extended.encode(text) == base.encode(text).ids
    assert extended.base == str(base_dir)


def test_extend_appends_new_tokens_after_the_base(base_dir, extended):
    base = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
    base_size = base.get_vocab_size(with_added_tokens=True)
    assert extended.eos_id == base.token_to_id(END_OF_TEXT) == 0  # the base's own token
    assert extended.pad_id >= base_size and extended.unk_id >= base_size
    tag_ids = [extended.tag_ids[t] for t in TAG_TOKENS]
    assert tag_ids == list(range(tag_ids[0], tag_ids[0] + 8)) and tag_ids[0] >= base_size
    for tag in TAG_TOKENS:
        assert extended.hf.encode(tag, add_special_tokens=False).ids == [extended.tag_ids[tag]]
    assert sorted(extended.hf.get_vocab(with_added_tokens=True).values()) == list(
        range(extended.vocab_size)
    )
    for modality, tokens in extended.science.items():
        for token, token_id in tokens.items():
            assert extended.decode([token_id]) == token, (modality, token)
            if token_id < base_size:  # reused: the base already spells it as this one id
                assert base.encode(token).ids == [token_id]
    assert extended.science["mol"]["C"] < base_size
    assert extended.science["mol"]["[C@@H]"] >= base_size
    assert extended.science["num"]["±"] >= base_size and extended.science["num"]["Å"] >= base_size


def test_extend_non_ascii_tokens_decode_and_leave_plain_prose_alone(base_dir, extended):
    # "±" is one character of the byte-level alphabet (the lone byte 0xB1); it must not become
    # an added token on the base's id for that byte
    base = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
    for text in ["x ± 5 Å", "25 °C"]:
        assert extended.hf.encode(text).ids == base.encode(text).ids
        assert extended.hf.decode(extended.hf.encode(text).ids) == text
    text = "<num>1.31±0.02 Å</num> and <num>25 °C</num>"
    ids = extended.encode(text)
    assert extended.decode(ids) == text
    assert ids[:7] == [extended.tag_ids["<num>"], *[extended.science["num"][t] for t in "1.31±0"]]


def test_extend_round_trip_and_science_tokens(extended):
    for text in FIXED_TEXTS:
        ids = extended.encode(text)
        assert extended.decode(ids) == text
        assert ids == reference_ids(extended, text)
    assert pieces(extended, extended.encode("<mol>[C@@H](Cl)Br%10</mol>")) == [
        "<mol>",
        "[C@@H]",
        "(",
        "Cl",
        ")",
        "Br",
        "%10",
        "</mol>",
    ]
    assert pieces(extended, extended.encode(f"<crystal>{NACL}</crystal>"))[1:6] == [
        "Na",
        "Cl",
        "\n",
        "Fm-3m",
        "\n",
    ]


def test_extend_adds_bracket_parts_after_the_base(base_dir, extended, tmp_path):
    base = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
    base_size = base.get_vocab_size(with_added_tokens=True)
    parts = extended.brackets["parts"]
    for category, texts in parts.items():
        for text, token_id in texts.items():
            assert extended.decode([token_id]) == text
            # "[" and "]" are the base's own tokens; every other part is an id of its own
            assert (token_id < base_size) is (category in ("open", "close")), (category, text)
    ids = extended.encode("<mol>[Na].[K+]</mol>")
    assert pieces(extended, ids) == ["<mol>", "[", "Na", "]", ".", "[", "K", "+", "]", "</mol>"]
    assert extended.science["mol"]["N"] not in ids and ids[2] == parts["element"]["Na"]
    # a base whose vocabulary holds a marker character cannot be extended (its decoder would
    # delete it), and a base without a decoder cannot decode science tokens exactly
    spec = json.loads(base.to_str())
    spec["model"]["vocab"]["\ue002N"] = len(spec["model"]["vocab"])
    (tmp_path / "marked").mkdir()
    (tmp_path / "marked" / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match="has tokens with kiban's bracket-part markers"):
        extend_tokenizer(tmp_path / "marked")
    spec = json.loads(base.to_str())
    spec["decoder"] = None
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match="has no decoder: kiban needs one"):
        extend_tokenizer(tmp_path / "bare")


@given(tagged_texts())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_extend_round_trip_on_random_texts(extended, text):
    ids = extended.encode(text)
    assert extended.decode(ids) == text
    assert ids == reference_ids(extended, text)


def test_extended_save_load(extended, tmp_path):
    extended.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kiban_prose_tokenizer.json",
        "kiban_tokenizer.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    loaded = ScienceTokenizer.load(tmp_path)
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(tmp_path)
    for text in FIXED_TEXTS:
        assert auto.decode(extended.encode(text)) == text
    assert loaded.fingerprint == extended.fingerprint
    plain = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in FIXED_TEXTS:
        ids = extended.encode(text)
        assert loaded.encode(text) == ids
        assert plain.decode(ids, skip_special_tokens=False) == text


def test_extend_is_deterministic(base_dir, extended):
    texts = corpus() + ["<num>5 Å</num> at <num>25 °C</num>"] * 3
    again = extend_tokenizer(base_dir, corpus_texts=texts)
    assert again.fingerprint == extended.fingerprint and again.science == extended.science


def test_extend_missing_base(tmp_path):
    with pytest.raises(
        TokenizerError,
        match=re.escape(
            f"{tmp_path / 'tokenizer.json'} is missing: a base model directory needs a "
            "tokenizer.json"
        ),
    ):
        extend_tokenizer(tmp_path)
