"""SMILES bracket atoms split into parts that never reuse an organic atom's token.

A bracket atom (OpenSMILES ``bracket_atom``) is ``[`` isotope? symbol chirality? hydrogens?
charge? class? ``]``: ``[13C@@H2+:7]``. The standard SMILES regex keeps it whole; a tokenizer
whose vocabulary lacks a whole bracket atom must split it, and must not split it into the
characters that outside brackets are atoms (``[Na]`` into ``[`` ``N`` ``a`` ``]`` puts a nitrogen
where there is none). Here a bracket atom is split into *bracket parts* of one category each:

* ``open`` ``[`` and ``close`` ``]``;
* ``digit``: one isotope or atom-class digit (``13`` is two parts);
* ``element``: any of the 118 element symbols, the aromatic ``b c n o p s si as se te`` and ``*``;
* ``chirality``: ``@`` ``@@`` ``@TH1``-``@TH2`` ``@AL1``-``@AL2`` ``@SP1``-``@SP3``
  ``@TB1``-``@TB20`` ``@OH1``-``@OH30``;
* ``hydrogens``: ``H`` ``H0``-``H9``;
* ``charge``: ``+`` ``-`` ``++`` ``--`` ``+0``-``+15`` ``-0``-``-15``;
* ``map``: the ``:`` before an atom-class number.

A tokenizer spells each part of the categories other than ``open``/``close`` as a *marker*
character (one per category, from Unicode's private use area) followed by the part's text, and
its decoder deletes the markers: the bracket-element ``N`` is another id than the organic ``N``,
the hydrogen count ``H`` another id than the element ``H``, the charge ``-`` another id than the
bond ``-``, and all of them decode to their text. ``[`` and ``]`` need no marker: outside
brackets SMILES has neither.
"""

from __future__ import annotations

import functools
import re

#: every element symbol, by atomic number
ELEMENTS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se "
    "Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy "
    "Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf "
    "Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()
#: the aromatic symbols RDKit reads inside brackets (OpenSMILES's, and RDKit's ``si`` ``te``)
AROMATIC_SYMBOLS = ("b", "c", "n", "o", "p", "s", "si", "as", "se", "te")
CHIRALITIES = (
    "@",
    "@@",
    *(
        f"@{kind}{number}"
        for kind, top in (("TH", 2), ("AL", 2), ("SP", 3), ("TB", 20), ("OH", 30))
        for number in range(1, top + 1)
    ),
)
HYDROGEN_COUNTS = ("H", *(f"H{count}" for count in range(10)))
CHARGES = ("+", "-", "++", "--", *(f"{sign}{value}" for sign in "+-" for value in range(16)))

OPEN, CLOSE, DIGIT, ELEMENT, CHIRALITY, HYDROGENS, CHARGE, MAP = (
    "open",
    "close",
    "digit",
    "element",
    "chirality",
    "hydrogens",
    "charge",
    "map",
)
#: every part of every bracket atom the grammar reads, by category (a tokenizer's base vocabulary)
BRACKET_PARTS: dict[str, tuple[str, ...]] = {
    OPEN: ("[",),
    CLOSE: ("]",),
    DIGIT: tuple("0123456789"),
    ELEMENT: (*ELEMENTS, *AROMATIC_SYMBOLS, "*"),
    CHIRALITY: CHIRALITIES,
    HYDROGENS: HYDROGEN_COUNTS,
    CHARGE: CHARGES,
    MAP: (":",),
}
#: the marker that starts a part's vocabulary spelling, per category (private use characters:
#: no text kiban tokenizes writes them, and no byte-level BPE token contains one)
MARKERS = {
    DIGIT: "\ue001",
    ELEMENT: "\ue002",
    CHIRALITY: "\ue003",
    HYDROGENS: "\ue004",
    CHARGE: "\ue005",
    MAP: "\ue006",
}
#: what a tokenizer's decoder deletes (a character class of the markers)
MARKER_PATTERN = "[\ue001-\ue006]"


def alternation(words) -> str:
    """A regex alternation of ``words``, longest first (so a longer symbol wins)."""
    return "|".join(re.escape(w) for w in sorted(words, key=lambda w: (-len(w), w)))


#: one bracket atom, whole; named groups per part. Element symbols are tried longest first, so
#: ``[Sc]`` is scandium and ``[Cl-]`` chloride, as in SMILES.
BRACKET_ATOM_PATTERN = (
    rf"\[(?P<isotope>[0-9]+)?(?P<element>{alternation(BRACKET_PARTS[ELEMENT])})"
    rf"(?P<chirality>{alternation(CHIRALITIES)})?(?P<hydrogens>H[0-9]?)?"
    rf"(?P<charge>{alternation(CHARGES)})?(?P<map>:[0-9]+)?\]"
)


@functools.cache
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def split_bracket_atom(
    piece: str,
    pattern: str = BRACKET_ATOM_PATTERN,
) -> list[tuple[str, str]] | None:
    """The ``(category, text)`` parts of the bracket atom ``piece``, in order; None if ``piece``
    is not a bracket atom of the grammar (``[Xx]``, ``[C C]``, ``[]``)."""
    match = _compiled(pattern).fullmatch(piece)
    if match is None:
        return None
    isotope, element, chirality, hydrogens, charge, atom_class = match.group(
        "isotope", "element", "chirality", "hydrogens", "charge", "map"
    )
    parts = [(OPEN, "[")]
    if isotope:
        parts += [(DIGIT, digit) for digit in isotope]
    parts.append((ELEMENT, element))
    if chirality:
        parts.append((CHIRALITY, chirality))
    if hydrogens:
        parts.append((HYDROGENS, hydrogens))
    if charge:
        parts.append((CHARGE, charge))
    if atom_class:
        parts.append((MAP, ":"))
        parts += [(DIGIT, digit) for digit in atom_class[1:]]
    parts.append((CLOSE, "]"))
    return parts
