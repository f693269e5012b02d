"""Crystal structures (`pymatgen.core.Structure`) as compact, canonical, CrystaLLM-style text.

Canonical text (lines joined by ``"\\n"``, single spaces, no trailing newline)::

    NaCl
    Fm-3m
    5.690 5.690 5.690
    90.00 90.00 90.00
    Na 4a 0.0000 0.0000 0.0000
    Cl 4b 0.5000 0.5000 0.5000

1. reduced formula (``Composition.reduced_formula`` of the elements);
2. Hermann-Mauguin symbol as spglib / ``SpacegroupAnalyzer.get_space_group_symbol()`` prints it;
3. conventional standard cell lengths a b c in angstrom, 3 decimals;
4. cell angles alpha beta gamma in degrees, 2 decimals;
5. one line per symmetry-unique site (orbit) of the conventional cell: the site's species string
   (``Na``; ``Na+`` if the structure carries oxidation states), Wyckoff label (multiplicity per
   conventional cell + letter; the 27th position of Pmmm is ``A``, as spglib writes it), and
   fractional x y z with 4 decimals in [0, 1) (``1.0000`` is written ``0.0000``, never
   ``-0.0000``). The coordinates are those of the orbit member on the Wyckoff position's first
   coordinate triplet as tabulated in ITA (``x,0,0`` rather than ``0,x,0``; the smallest such
   member if several are); in the 24 groups with two origin choices, whose tables here are
   origin choice 2, simply the smallest member (diamond: ``Si 8a 0.0000 0.0000 0.0000``).

**Symmetry and setting.** The space group is found by spglib with ``symprec`` = 0.1 angstrom
(Materials Project's value) and ``angle_tolerance`` = 5 degrees (pymatgen's default), both
constructor parameters: the same call that ``SpacegroupAnalyzer(structure, symprec,
angle_tolerance)`` makes, except that magnetic moments are ignored (the text cannot hold them) and
the atoms are sorted first (spglib's verdict near its tolerance depends on atom order). The cell
is spglib's conventional standard cell, which is always in the *default* Hall setting of its
space-group type: the first of spglib's 530 settings (unique axis b, cell choice 1 for monoclinic
groups; hexagonal axes, obverse, for rhombohedral ones; origin choice 1 where ITA offers two,
e.g. Fd-3m with 8a at 0,0,0). The decoder expands the sites with the operations of exactly that
Hall setting from spglib's database, so encoder and decoder agree on origin and axes. Wyckoff
letters come from the Wyckoff tables that ship with pymatgen (ISO-MAG data of the 230 type-I
magnetic space groups, i.e. the ordinary ones, tabulated in origin choice 2) shifted into spglib's
origin choice where the two differ; the tests check them against spglib's own letters.

The positions are symmetrized here, not taken from spglib's idealized cell (which depends slightly
on the input's origin, atom order and cell when the input is not exactly symmetric): each orbit is
put at the mean of the symmetry images of the input atoms around it, and the cell metric is the
input metric averaged over the point group.

**Canonical description.** One structure has several equally valid descriptions in one setting:
the elements of the Euclidean normalizer of its space group map it to others (Na or Cl at the
origin of rock salt, axis permutations in P222, any origin along a polar axis, other reduced cells
of triclinic and monoclinic lattices). The encoder enumerates them: integer axis changes P of
determinant +1 (entries in {-1, 0, 1}; {-2..2} in the a-c plane of monoclinic cells) that map the
setting's operations onto themselves, with the origin shifts (multiples of 1/24) that go with
them, and along polar axes every choice of putting an atom of the first species at the origin. It
keeps the description that is smallest by: the lattice as written (shortest a, then b, then c,
then the most obtuse alpha, beta, gamma, so monoclinic beta >= 90 as in ITA), then the sorted list
of (species rank, x, y, z) of each orbit's smallest member as written. Species rank is Pauling
electronegativity (elements without one last), then the species string, so lines read
cation-first as in ``NaCl``. Site lines are sorted by species rank, then Wyckoff letter, then
coordinates.

Finally the text is made a fixed point: it is decoded and encoded again until it no longer changes
(usually at once; a second round when the symmetrized copy shows a higher symmetry at the same
tolerance, or rounding tips a near tie), so ``canonical(canonical(x)) == canonical(x)``. Rotating
the lattice, permuting sites, taking a supercell or a primitive cell, or moving the origin give the
same text, except where spglib itself decides differently for the two inputs at the edge of its
tolerance (5 of the 4,764 Materials Project structures of matbench_dielectric). Values are rounded
half up with a tiny bias, so that data stored with 5 decimals round the same way whatever the
input cell.

Disordered (partially occupied) structures cannot be written and are rejected; so are dummy
species and sites closer than 0.5 angstrom.

``parse`` accepts kiban crystal text, CIF text (with a ``data_`` block or ``_cell_length_a``), and
the JSON of ``Structure.as_dict()``; it returns a `Structure` (for crystal text: the full
conventional cell).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import re
import sqlite3
import warnings
from array import array
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

# spglib's C code prints search failures it recovers from ("ssm_get_exact_positions failed") to
# stderr; they are not errors of ours. A user who wants them sets SPGLIB_WARNING=ON.
os.environ.setdefault("SPGLIB_WARNING", "OFF")
import spglib  # noqa: E402
from pymatgen.core import Composition, IStructure, Lattice, Structure
from pymatgen.core.periodic_table import DummySpecies, get_el_sp

from kiban.modalities._base import Codec

__all__ = ["CrystalCodec", "structure_to_text", "text_to_structure"]

DEFAULT_SYMPREC = 0.1
DEFAULT_ANGLE_TOLERANCE = 5.0

_COORD_SCALE = 10_000  # 4 decimals
_MERGE_TOL = 1e-3  # fractional distance under which generated positions are one site
_WYCKOFF_TOL = 1e-3  # fractional tolerance when matching coordinates to a Wyckoff position
_MIN_DISTANCE = 0.5  # angstrom; closer sites are taken for a broken structure
_MAX_SITES = 10_000  # sites of an input structure, or of a decoded conventional cell
_GRID = 24  # origin shifts of normalizers in standard settings are multiples of 1/24

# Origin of ITA origin choice 2 (ISO-MAG / pymatgen Wyckoff tables) in spglib's default setting
# (origin choice 1): x_spglib = x_table - shift. Checked against spglib's own Wyckoff letters in the
# tests.
_ORIGIN_CHOICE_SHIFT: dict[int, tuple[float, float, float]] = {
    48: (1 / 4, 1 / 4, 1 / 4),
    50: (1 / 4, 1 / 4, 0),
    59: (1 / 4, 1 / 4, 0),
    68: (0, 1 / 4, 1 / 4),
    70: (3 / 8, 3 / 8, 7 / 8),
    85: (1 / 4, 3 / 4, 0),
    86: (3 / 4, 3 / 4, 3 / 4),
    88: (0, 3 / 4, 7 / 8),
    125: (1 / 4, 1 / 4, 0),
    126: (1 / 4, 1 / 4, 1 / 4),
    129: (1 / 4, 3 / 4, 0),
    130: (1 / 4, 3 / 4, 0),
    133: (1 / 4, 3 / 4, 3 / 4),
    134: (3 / 4, 1 / 4, 3 / 4),
    137: (1 / 4, 3 / 4, 1 / 4),
    138: (1 / 4, 3 / 4, 3 / 4),
    141: (0, 1 / 4, 7 / 8),
    142: (0, 1 / 4, 3 / 8),
    201: (3 / 4, 3 / 4, 3 / 4),
    203: (3 / 8, 3 / 8, 7 / 8),
    222: (1 / 4, 1 / 4, 1 / 4),
    224: (3 / 4, 3 / 4, 3 / 4),
    227: (3 / 8, 3 / 8, 7 / 8),
    228: (1 / 8, 1 / 8, 1 / 8),
}


# --------------------------------------------------------------------------------------------
# Space-group settings, Wyckoff tables, normalizers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Wyckoff:
    letter: str
    index: int  # 0 for "a"
    multiplicity: int  # per conventional cell
    offsets: np.ndarray  # (t, 3): b + centering of every coordinate triplet A u + b
    constraints: np.ndarray  # (t, k, 3) integer rows c with c.A = 0: c.(x - b) must be integral


@dataclass(frozen=True)
class _Setting:
    number: int
    hall: int
    symbol: str
    rotations: np.ndarray  # (n, 3, 3) int, all operations of the conventional cell
    translations: np.ndarray  # (n, 3)
    centering: np.ndarray  # (k, 3) centering translations, including 0
    proper: np.ndarray  # (m, 3, 3) distinct rotation parts with det +1
    unique_rot: np.ndarray  # (r, 3, 3) distinct rotation parts
    unique_trans: np.ndarray  # (r, 3) one translation for each distinct rotation part
    free_axes: tuple[int, ...]  # axes along which the origin may move freely (polar axes)
    wyckoff: tuple[_Wyckoff, ...]


@functools.cache
def _spacegroup_type(hall: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spglib's DeprecationWarning about its error handling
        return spglib.get_spacegroup_type(hall)


@functools.lru_cache(maxsize=1)
def _default_halls() -> dict[int, int]:
    """Space-group number -> the Hall number spglib standardizes to (its first setting)."""
    halls: dict[int, int] = {}
    for hall in range(1, 531):
        halls.setdefault(_spacegroup_type(hall).number, hall)
    return halls


@functools.lru_cache(maxsize=1)
def _symbols() -> tuple[dict[str, int], dict[str, int]]:
    """(symbol -> number, loose symbol -> number) for spglib's short symbols of default settings."""
    exact: dict[str, int] = {}
    loose: dict[str, int] = {}
    for number, hall in _default_halls().items():
        symbol = _spacegroup_type(hall).international_short
        exact[symbol] = number
        loose[_loose_symbol(symbol)] = number
    return exact, loose


def _loose_symbol(symbol: str) -> str:
    return re.sub(r"[\s_]", "", symbol)


@functools.lru_cache(maxsize=1)
def _wyckoff_db() -> dict[int, list[tuple[str, int, list[tuple[np.ndarray, np.ndarray]]]]]:
    """Wyckoff positions of the 230 space groups from pymatgen's ISO-MAG data (type-I groups).

    Returns number -> [(letter, multiplicity, [(A, b), ...]), ...] from "a" on, each position's
    coordinate triplets x = A u + b in ITA standard setting (origin choice 2), without centering.
    """
    from pymatgen.symmetry.maggroups import MAGSYMM_DATA

    db = sqlite3.connect(MAGSYMM_DATA)
    try:
        rows = db.execute("SELECT BNS1, BNS_Wyckoff FROM space_groups WHERE magtype=1").fetchall()
    finally:
        db.close()
    table = {}
    for number, blob in rows:
        b = array("b", blob)
        n_positions = b[0]
        offset = 0
        positions = []
        for n in range(1, n_positions + 1):
            n_triplets, n_centering = b[1 + offset], b[2 + offset]
            triplets = []
            for j in range(n_triplets):
                s = b[3 + offset + 22 * j : 3 + offset + 22 * j + 22]
                shift = np.array([s[0], s[1], s[2]], dtype=float) / s[3]
                matrix = np.array(
                    [[s[4], s[7], s[10]], [s[5], s[8], s[11]], [s[6], s[9], s[12]]], dtype=float
                )
                triplets.append((matrix, shift))
            index = n_positions - n
            letter = chr(ord("a") + index) if index < 26 else "A"
            positions.append((letter, n_triplets * n_centering, triplets))
            offset += 22 * n_triplets + 2
        table[number] = positions[::-1]
    if len(table) != 230:
        raise RuntimeError(f"pymatgen's Wyckoff tables hold {len(table)} space groups, not 230")
    return table


_SMALL_VECTORS = np.array(
    sorted(
        (v for v in itertools.product(range(-2, 3), repeat=3) if any(v)),
        key=lambda v: (sum(x * x for x in v), v),
    )
)


def _left_null_space(matrix: np.ndarray) -> np.ndarray:
    """Small integer rows c with c @ matrix == 0 spanning the left null space."""
    need = 3 - np.linalg.matrix_rank(matrix)
    rows: list[np.ndarray] = []
    for v in _SMALL_VECTORS:
        if need == len(rows):
            break
        if np.any(np.abs(v @ matrix) > 1e-9):
            continue
        if np.linalg.matrix_rank(np.array(rows + [v])) == len(rows) + 1:
            rows.append(v)
    if len(rows) != need:
        raise RuntimeError("no small integer basis for a Wyckoff position's constraints")
    return np.array(rows, dtype=float).reshape(need, 3)


def _wrap(x: np.ndarray) -> np.ndarray:
    """Into [-0.5, 0.5)."""
    return x - np.floor(x + 0.5)


def _unit(x: np.ndarray) -> np.ndarray:
    """Into [0, 1) (``x % 1.0`` can give 1.0 for tiny negative x)."""
    x = x % 1.0
    x[x >= 1.0] = 0.0
    return x


@functools.cache
def _setting(number: int) -> _Setting:
    hall = _default_halls()[number]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spglib's DeprecationWarning about its error handling
        data = spglib.get_symmetry_from_database(hall)
    rotations = np.asarray(data["rotations"], dtype=int)
    translations = np.asarray(data["translations"], dtype=float) % 1.0
    identity = np.all(rotations == np.eye(3, dtype=int), axis=(1, 2))
    centering = translations[identity]
    _, first = np.unique(rotations.reshape(len(rotations), 9), axis=0, return_index=True)
    first = np.sort(first)
    unique_rot, unique_trans = rotations[first], translations[first]
    proper = unique_rot[np.rint(np.linalg.det(unique_rot)) == 1]
    # polar axes: directions fixed by every rotation; axis-aligned in all standard settings
    stacked = (unique_rot - np.eye(3, dtype=int)).reshape(-1, 3)
    free_axes = tuple(k for k in range(3) if not np.any(stacked[:, k]))
    if 3 - np.linalg.matrix_rank(stacked) != len(free_axes):
        raise RuntimeError(f"polar directions of space group {number} are not along cell axes")

    shift = np.array(_ORIGIN_CHOICE_SHIFT.get(number, (0.0, 0.0, 0.0)))
    positions = []
    for index, (letter, multiplicity, triplets) in enumerate(_wyckoff_db()[number]):
        offsets, constraints = [], []
        for matrix, b in triplets:
            null = _left_null_space(matrix)
            for c in centering:
                offsets.append(b - shift + c)
                constraints.append(null)
        positions.append(
            _Wyckoff(
                letter,
                index,
                multiplicity,
                np.array(offsets),
                np.array(constraints).reshape(len(offsets), -1, 3),
            )
        )
    symbol = _spacegroup_type(hall).international_short
    return _Setting(
        number,
        hall,
        symbol,
        rotations,
        translations,
        centering,
        proper,
        unique_rot,
        unique_trans,
        free_axes,
        tuple(positions),
    )


def _wyckoff_of(
    setting: _Setting, point: np.ndarray, multiplicity: int, tol: float = _WYCKOFF_TOL
) -> _Wyckoff | None:
    """The Wyckoff position of multiplicity ``multiplicity`` that ``point`` lies on, if any."""
    for position in setting.wyckoff:
        if position.multiplicity != multiplicity:
            continue
        if position.constraints.shape[1] == 0:
            return position
        values = np.einsum("tkj,tj->tk", position.constraints, point - position.offsets)
        if np.any(np.all(np.abs(_wrap(values)) < tol, axis=1)):
            return position
    return None


def _in_lattice(vectors: np.ndarray, centering: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Whether each vector (..., 3) is a lattice translation, centering included."""
    ok = np.zeros(vectors.shape[:-1], dtype=bool)
    for c in centering:
        ok |= np.all(np.abs(_wrap(vectors - c)) < tol, axis=-1)
    return ok


@functools.lru_cache(maxsize=1)
def _unimodular(block_ac: bool) -> np.ndarray:
    """Integer matrices with det +1: entries in {-1, 0, 1}, or monoclinic (unique axis b) ones
    with entries in {-2..2} in the a-c plane and +-1 on b."""
    if block_ac:
        mats = []
        for p11, p13, p31, p33 in itertools.product(range(-2, 3), repeat=4):
            for p22 in (-1, 1):
                mats.append([[p11, 0, p13], [0, p22, 0], [p31, 0, p33]])
        mats = np.array(mats)
    else:
        mats = np.array(list(itertools.product((-1, 0, 1), repeat=9))).reshape(-1, 3, 3)
    return mats[np.rint(np.linalg.det(mats)) == 1]


def _matrix_codes(mats: np.ndarray) -> np.ndarray:
    """One integer per integer 3x3 matrix (entries within -8..7)."""
    digits = np.asarray(mats, dtype=np.int64).reshape(-1, 9) + 8
    codes = np.zeros(len(digits), dtype=np.int64)
    for k in range(9):
        codes = codes * 16 + digits[:, k]
    bad = np.any((digits < 0) | (digits > 15), axis=1)
    codes[bad] = -1 - np.arange(bad.sum())  # never equal to a real code
    return codes


@functools.cache
def _normalizer_linear_parts(number: int) -> np.ndarray:
    """Linear parts P (det +1, small entries) that map the rotations and centering of the setting
    onto themselves, one per coset (proper rotations of the group) * P."""
    setting = _setting(number)
    mats = _unimodular(3 <= number <= 15)
    inverses = np.rint(np.linalg.inv(mats)).astype(np.int64)
    rot_codes = _matrix_codes(setting.unique_rot)
    ok = np.ones(len(mats), dtype=bool)
    for W in setting.unique_rot[::-1].astype(np.int64):  # identity (first) last: it always passes
        idx = np.flatnonzero(ok)
        conj = np.einsum("pij,jk,pkl->pil", inverses[idx], W, mats[idx])
        ok[idx] = np.isin(_matrix_codes(conj), rot_codes)
    cent = np.einsum("pij,kj->pki", inverses[ok], setting.centering)
    ok[ok] = (
        _in_lattice(cent[:, :, None, :] - setting.centering[None, None, :, :], np.zeros((1, 3)))
        .any(axis=2)
        .all(axis=1)
    )
    mats = mats[ok]
    # one representative per coset: the left coset {W P} has the same image of the structure
    coset = np.einsum("nij,pjk->pnik", setting.proper.astype(np.int64), mats)
    rep = _matrix_codes(coset).reshape(len(mats), -1).min(axis=1)
    _, first = np.unique(rep, return_index=True)
    mats = mats[np.sort(first)]
    if number > 2:  # triclinic: every P has shifts (p in {0, 1/2}^3 for P-1); skip the search
        mats = mats[
            [len(_normalizer_shifts(number, P.astype(np.int64).tobytes())) > 0 for P in mats]
        ]
    return mats


@functools.cache
def _grid(free_axes: tuple[int, ...]) -> np.ndarray:
    ranges = [[0] if k in free_axes else range(_GRID) for k in range(3)]
    return np.array(list(itertools.product(*ranges)), dtype=float) / _GRID


@functools.lru_cache(maxsize=4096)
def _normalizer_shifts(number: int, P_bytes: bytes) -> np.ndarray:
    """Origin shifts p (mod the lattice, 0 along polar axes) such that (P, p) normalizes the
    space group (maps its operations onto themselves)."""
    setting = _setting(number)
    P = np.frombuffer(P_bytes, dtype=np.int64).reshape(3, 3).astype(float)
    Pinv = np.linalg.inv(P)
    grid = _grid(setting.free_axes)
    ok = np.ones(len(grid), dtype=bool)
    rot_index = {r.astype(np.int64).tobytes(): i for i, r in enumerate(setting.unique_rot)}
    for W, w in zip(setting.unique_rot, setting.unique_trans):
        conj = np.rint(Pinv @ W @ P).astype(np.int64)
        w_new = setting.unique_trans[rot_index[conj.tobytes()]]
        # P^-1 (W p + w - p) must equal w_new modulo the lattice (centering included)
        lhs = (grid @ (W - np.eye(3)).T + w) @ Pinv.T - w_new
        ok &= _in_lattice(lhs, setting.centering)
        if not ok.any():
            break
    shifts = grid[ok]
    # one representative modulo centering translations
    reps = {}
    for p in shifts:
        key = min(
            tuple(np.rint(((p + c) % 1.0) * _GRID).astype(int) % _GRID) for c in setting.centering
        )
        reps.setdefault(key, np.array(key, dtype=float) / _GRID)
    return np.array(list(reps.values())).reshape(-1, 3)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _species_rank_key(species: Any) -> tuple[float, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            x = float(species.X)
        except Exception:  # noqa: BLE001 - dummy species and the like have no electronegativity
            x = math.nan
    return (math.inf if math.isnan(x) else x, str(species))


def _lattice_params(metric: np.ndarray) -> np.ndarray:
    """(..., 3, 3) metric tensors -> (..., 6) a b c alpha beta gamma."""
    lengths = np.sqrt(np.einsum("...ii->...i", metric))
    cos = np.stack(
        [
            metric[..., 1, 2] / (lengths[..., 1] * lengths[..., 2]),
            metric[..., 0, 2] / (lengths[..., 0] * lengths[..., 2]),
            metric[..., 0, 1] / (lengths[..., 0] * lengths[..., 1]),
        ],
        axis=-1,
    )
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return np.concatenate([lengths, angles], axis=-1)


def _lattice_key(params: np.ndarray) -> np.ndarray:
    """Lattice parameters as written (integers: 1/1000 angstrom, 1/100 degree)."""
    scale = np.array([1000, 1000, 1000, 100, 100, 100])
    return _round_half_up(params * scale)


def _round_half_up(values: np.ndarray) -> np.ndarray:
    """Nearest integers, halves (and values within 1e-6 below them) rounded up.

    Input data are often stored with one decimal more than the text (Materials Project: 5),
    so exact halves are common, and float noise of ~1e-12 would round them either way depending
    on the input's cell or origin; the small bias makes them round the same way every time.
    """
    return np.floor(values + (0.5 + 1e-6)).astype(np.int64)


def _format_fixed(value: int, decimals: int) -> str:
    scale = 10**decimals
    return f"{value // scale}.{value % scale:0{decimals}d}"


class _EncodeFailure(Exception):
    pass


def _orbits(setting: _Setting, positions: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Orbit index of each atom of a symmetrized conventional cell (spglib's ``equivalent_atoms``
    is not reliable for supercell input, so they are found here)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(positions)
    tree = cKDTree(_unit(positions), boxsize=1.0)
    rows, cols = [np.arange(n)], [np.arange(n)]
    ops = list(zip(setting.unique_rot, setting.unique_trans))
    ops += [(np.eye(3, dtype=int), c) for c in setting.centering]
    for W, w in ops:
        dist, j = tree.query(_unit(positions @ W.T + w), distance_upper_bound=_MERGE_TOL)
        i = np.flatnonzero(np.isfinite(dist))
        j = j[i]
        keep = types[i] == types[j]
        rows.append(i[keep])
        cols.append(j[keep])
    i, j = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def _symmetrize(
    setting: _Setting,
    dataset: Any,
    frac_coords: np.ndarray,
    input_types: np.ndarray,
    lattice: np.ndarray,
    positions: np.ndarray,
    types: np.ndarray,
    order: np.ndarray,
    starts: np.ndarray,
    orbit_size: np.ndarray,
) -> np.ndarray:
    """Symmetrized conventional-cell positions: each orbit's representative moved to the mean of
    all symmetry images of the input atoms that land next to it, the other members generated from
    it. spglib's own idealized positions depend slightly on the input's origin, atom order and
    cell when the input is not exactly symmetric; this mean does not."""
    rotations, translations = setting.rotations, setting.translations
    inputs = frac_coords @ np.asarray(dataset.transformation_matrix, dtype=float).T + np.asarray(
        dataset.origin_shift, dtype=float
    )
    expected = len(frac_coords) * len(rotations)
    if expected % len(positions):
        return positions
    expected //= len(positions)  # images of the input atoms that belong next to one site
    out = positions.copy()
    for k, start in enumerate(starts):
        members = order[start : start + orbit_size[k]]
        seed = positions[members[0]]
        same = types == types[members[0]]
        atoms = inputs[input_types == types[members[0]]]
        images = (np.einsum("nij,aj->ani", rotations, atoms) + translations).reshape(-1, 3)
        diff = _wrap(images - seed)
        dist = np.linalg.norm(diff @ lattice, axis=1)
        others = _wrap(positions[same] - seed) @ lattice
        others = np.linalg.norm(others, axis=1)
        others = others[others > 1e-6]
        radius = 0.5 * float(others.min()) if len(others) else math.inf
        near = dist < radius
        if near.sum() != expected:
            continue  # the input does not split evenly between the sites: keep spglib's positions
        seed = seed + diff[near].mean(axis=0)
        # each member is the image of the seed under the first operation that maps it there
        exact = positions[members]
        seed_images = np.einsum("nij,j->ni", rotations, exact[0]) + translations
        hits = np.all(
            np.abs(_wrap(seed_images[None, :, :] - exact[:, None, :])) < _MERGE_TOL, axis=2
        )
        if not hits.any(axis=1).all():
            continue
        ops = hits.argmax(axis=1)
        out[members] = (np.einsum("mij,j->mi", rotations[ops], seed) + translations[ops]) % 1.0
    return out


def _encode(structure: Structure, symprec: float, angle_tolerance: float) -> str:
    if not structure.is_ordered:
        raise _EncodeFailure(
            "the structure is disordered (partial occupancies or mixed sites); "
            "only ordered structures can be written as crystal text"
        )
    if len(structure) == 0:
        raise _EncodeFailure("the structure has no sites")
    if len(structure) > _MAX_SITES:
        raise _EncodeFailure(
            f"the structure has {len(structure)} sites; at most {_MAX_SITES} are supported"
        )
    centers, neighbors, _, distances = structure.get_neighbor_list(_MIN_DISTANCE)
    if len(distances):
        k = int(np.argmin(distances))
        i, j = sorted((int(centers[k]), int(neighbors[k])))
        where = f"sites {i} and {j} are" if i != j else f"site {i} is"
        raise _EncodeFailure(
            f"{where} only {distances[k]:.3f} angstrom apart (on top of each other)"
        )
    species = [site.specie for site in structure]
    dummies = sorted({str(sp) for sp in species if isinstance(sp, DummySpecies)})
    if dummies:
        raise _EncodeFailure(f"species {', '.join(dummies)} are not chemical elements")
    names = [str(sp) for sp in species]
    unique_names = sorted(set(names), key=lambda n: _species_rank_key(species[names.index(n)]))
    rank = {name: i for i, name in enumerate(unique_names)}

    # spglib's answer near its tolerances depends on the order of the atoms: sort them
    type_of_site = np.array([rank[n] + 1 for n in names], dtype=np.intc)
    input_lattice = np.asarray(structure.lattice.matrix, dtype=float)
    frac_coords = np.asarray(structure.frac_coords, dtype=float)
    if np.linalg.det(input_lattice) < 0:  # the same atoms in a right-handed cell: -a, -b, -c
        input_lattice, frac_coords = -input_lattice, -frac_coords
    frac_coords = frac_coords % 1.0
    grid = np.rint(frac_coords * _COORD_SCALE).astype(np.int64) % _COORD_SCALE
    atom_order = np.lexsort((grid[:, 2], grid[:, 1], grid[:, 0], type_of_site))
    type_of_site, frac_coords = type_of_site[atom_order], frac_coords[atom_order]
    cell = (input_lattice, frac_coords, type_of_site)
    try:
        # the same call as SpacegroupAnalyzer(structure, symprec, angle_tolerance), minus magnetic
        # moments (the text does not hold them, so they must not lower the symmetry)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = spglib.get_symmetry_dataset(
                cell, symprec=symprec, angle_tolerance=angle_tolerance
            )
    except Exception as exc:  # noqa: BLE001 - spglib failures become codec errors
        raise _EncodeFailure(f"symmetry detection failed: {exc}") from exc
    if dataset is None:
        raise _EncodeFailure(
            "symmetry detection failed (spglib found no space group; "
            "are two atoms on top of each other?)"
        )
    number = int(dataset.number)
    setting = _setting(number)
    if int(dataset.hall_number) != setting.hall:
        raise _EncodeFailure(
            f"spglib standardized to Hall setting {dataset.hall_number}, "
            f"not the default setting {setting.hall} of space group {number}"
        )

    std_types = np.asarray(dataset.std_types)
    std_names = [unique_names[int(t) - 1] for t in std_types]
    std_rank = np.array([rank[n] for n in std_names], dtype=np.int64)
    positions = np.asarray(dataset.std_positions, dtype=float) % 1.0
    # the conventional cell's metric averaged over the point group (spglib's idealized lattice
    # depends slightly on the input cell when the input is not exactly symmetric)
    if np.linalg.det(np.asarray(dataset.transformation_matrix, dtype=float)) <= 0:
        raise _EncodeFailure("spglib's standardization changes the handedness of the cell")
    to_std = np.linalg.inv(np.asarray(dataset.transformation_matrix, dtype=float))
    metric = to_std.T @ (input_lattice @ input_lattice.T) @ to_std
    metric = np.einsum("nji,jk,nkl->il", setting.unique_rot, metric, setting.unique_rot)
    metric /= len(setting.unique_rot)
    try:
        lattice = np.linalg.cholesky(metric)  # rows: a cell with this metric
    except np.linalg.LinAlgError:
        raise _EncodeFailure("the standardized cell is degenerate") from None

    # orbits of the conventional cell's atoms
    orbit = _orbits(setting, positions, std_types)
    n_orbits = int(orbit.max()) + 1
    order = np.argsort(orbit, kind="stable")
    starts = np.searchsorted(orbit[order], np.arange(n_orbits))
    orbit_size = np.diff(np.append(starts, len(orbit)))
    orbit_rank = std_rank[order][starts]

    positions = _symmetrize(
        setting,
        dataset,
        frac_coords,
        type_of_site,
        lattice,
        positions,
        std_types,
        order,
        starts,
        orbit_size,
    )

    # candidate linear parts, first by the lattice they give
    linear = _normalizer_linear_parts(number)
    params = _lattice_params(np.einsum("nji,jk,nkl->nil", linear, metric, linear))
    keys = _lattice_key(params)
    keys[:, 3:] *= -1  # shortest edges first, then the most obtuse angles (beta > 90 as in ITA)
    best = np.lexsort(keys.T[::-1])[0]
    same = np.all(keys == keys[best], axis=1)
    linear, lattice_key = linear[same], keys[best]

    # candidate transformations (P, p) and, along polar axes, anchor atoms of the first species
    transforms_P, transforms_p = [], []
    for P in linear:
        for p in _normalizer_shifts(number, P.astype(np.int64).tobytes()):
            transforms_P.append(P)
            transforms_p.append(p)
    Ps = np.array(transforms_P, dtype=float)
    ps = np.array(transforms_p, dtype=float)
    Pinv = np.linalg.inv(Ps)
    # x' = P^-1 (x - p) for every candidate and atom: (c, n, 3)
    frac = np.einsum("cij,cnj->cni", Pinv, positions[None, :, :] - ps[:, None, :])
    if setting.free_axes:
        free = np.zeros(3)
        free[list(setting.free_axes)] = 1.0
        anchors = np.flatnonzero(std_rank == 0)
        frac = (frac[:, None, :, :] - (frac[:, anchors, :] * free)[:, :, None, :]).reshape(
            -1, len(positions), 3
        )
    q = _round_half_up(frac * _COORD_SCALE) % _COORD_SCALE
    codes = (q[..., 0] * _COORD_SCALE + q[..., 1]) * _COORD_SCALE + q[..., 2]  # (c, n)
    rep_codes = np.minimum.reduceat(codes[:, order], starts, axis=1)  # (c, n_orbits)
    rep_keys = np.sort(orbit_rank[None, :] * _COORD_SCALE**3 + rep_codes, axis=1)
    chosen = np.lexsort(rep_keys.T[::-1])[0]

    # the chosen description
    chosen_codes = codes[chosen]
    lines = []
    chosen_frac = frac[chosen]
    for k in range(n_orbits):
        members = order[starts[k] : starts[k] + orbit_size[k]]
        points = chosen_frac[members] % 1.0
        position = _wyckoff_of(setting, points[0], int(orbit_size[k]))
        if position is None:
            raise _EncodeFailure(
                f"no Wyckoff position of multiplicity {orbit_size[k]} in "
                f"{setting.symbol} holds the site at "
                f"{np.round(points[0], 4).tolist()}"
            )
        # written: the member on the position's first coordinate triplet (as tabulated in ITA),
        # the smallest such (x, y, z) if several are; in the 24 groups whose tables are in the
        # other origin choice, no triplet is "first": the smallest member
        pool = members
        if number not in _ORIGIN_CHOICE_SHIFT:
            on_first = np.all(
                np.abs(_wrap((points - position.offsets[0]) @ position.constraints[0].T))
                < _WYCKOFF_TOL,
                axis=1,
            )
            pool = members[on_first] if on_first.any() else members
        member = pool[np.argmin(chosen_codes[pool])]
        coords = " ".join(_format_fixed(int(v), 4) for v in q[chosen, member])
        lines.append(
            (
                int(orbit_rank[k]),
                position.index,
                int(chosen_codes[member]),
                f"{std_names[member]} {position.multiplicity}{position.letter} {coords}",
            )
        )
    lines.sort()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no Pauling electronegativity for He", and the like
        formula = structure.composition.element_composition.reduced_formula
    lengths = " ".join(_format_fixed(int(v), 3) for v in lattice_key[:3])
    angles = " ".join(_format_fixed(-int(v), 2) for v in lattice_key[3:])
    return "\n".join([formula, setting.symbol, lengths, angles] + [line[-1] for line in lines])


_MAX_ROUNDS = 4


def _encode_stable(structure: Structure, symprec: float, angle_tolerance: float) -> str:
    """Encode, then re-encode the decoded text until it no longer changes.

    The first text describes a symmetrized, rounded copy of the input; a second pass can differ
    when that copy is closer to a higher symmetry than the input was, or when rounding tips a
    near tie between equivalent descriptions. The text returned is a fixed point, so that
    ``canonical(canonical(x)) == canonical(x)``; inputs that differ by spglib's tolerance-edge
    decisions (atom order, supercells) usually meet at the same fixed point.
    """
    text = _encode(structure, symprec, angle_tolerance)
    seen = [text]
    for _ in range(_MAX_ROUNDS):
        try:
            again = _encode(_decode(text), symprec, angle_tolerance)
        except _DecodeFailure as exc:  # pragma: no cover - our own text must decode
            raise _EncodeFailure(f"the text written does not decode: {exc}") from None
        if again == text:
            return text
        if again in seen:  # a cycle: take its smallest member, so that every entry agrees
            cycle = seen[seen.index(again) :]
            return min(cycle)
        seen.append(again)
        text = again
    return text


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


class _DecodeFailure(Exception):
    pass


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _parse_numbers(fields: list[str], line_no: int, what: str) -> list[float]:
    values = []
    for field in fields:
        if not _NUMBER.match(field):
            raise _DecodeFailure(f"line {line_no}: {what} must be numbers, got {field!r}")
        values.append(float(field))
    return values


def _decode(text: str) -> Structure:
    lines = text.strip().split("\n")
    lines = [line.strip() for line in lines]
    if len(lines) < 5:
        raise _DecodeFailure(
            f"crystal text needs at least 5 lines (formula, space group, lengths, "
            f"angles, one site), got {len(lines)}"
        )
    formula_line, symbol_line = lines[0], lines[1]
    if len(formula_line.split()) != 1:
        raise _DecodeFailure(
            f"line 1: expected 1 field (the reduced formula), got {len(formula_line.split())}"
        )
    symbol = symbol_line.strip()
    exact, loose = _symbols()
    number = exact.get(symbol, loose.get(_loose_symbol(symbol)))
    if number is None:
        raise _DecodeFailure(f"line 2: unknown space-group symbol {symbol!r}")
    setting = _setting(number)

    lengths_fields, angle_fields = lines[2].split(), lines[3].split()
    if len(lengths_fields) != 3:
        raise _DecodeFailure(f"line 3: expected 3 fields (a b c), got {len(lengths_fields)}")
    if len(angle_fields) != 3:
        raise _DecodeFailure(
            f"line 4: expected 3 fields (alpha beta gamma), got {len(angle_fields)}"
        )
    lengths = _parse_numbers(lengths_fields, 3, "lattice lengths")
    angles = _parse_numbers(angle_fields, 4, "lattice angles")
    if not all(math.isfinite(v) and v > 0 for v in lengths):
        raise _DecodeFailure(f"line 3: lattice lengths must be positive numbers, got {lines[2]!r}")
    if not all(math.isfinite(v) and 0 < v < 180 for v in angles):
        raise _DecodeFailure(
            f"line 4: lattice angles must be between 0 and 180 degrees, got {lines[3]!r}"
        )
    cosines = [math.cos(math.radians(v)) for v in angles]
    gram = 1 - sum(c * c for c in cosines) + 2 * cosines[0] * cosines[1] * cosines[2]
    if gram <= 1e-8:
        raise _DecodeFailure(f"line 4: angles {lines[3]!r} do not form a cell (zero volume)")
    lattice = Lattice.from_parameters(*lengths, *angles)
    metric = lattice.metric_tensor
    conj = np.einsum("nji,jk,nkl->nil", setting.unique_rot, metric, setting.unique_rot)
    if np.max(np.abs(conj - metric)) > 2e-3 * float(np.max(np.abs(metric))):
        raise _DecodeFailure(
            f"lines 3-4: the cell {lines[2]} / {lines[3]} does not have the "
            f"symmetry of space group {setting.symbol}"
        )

    all_species, all_coords, all_lines = [], [], []
    for line_no, line in enumerate(lines[4:], start=5):
        fields = line.split()
        if len(fields) != 5:
            raise _DecodeFailure(
                f"line {line_no}: expected 5 fields (species, Wyckoff label, "
                f"x, y, z), got {len(fields)}"
            )
        name, label = fields[0], fields[1]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                species = get_el_sp(name)
        except Exception:  # noqa: BLE001
            species = None
        if species is None or isinstance(species, DummySpecies):
            raise _DecodeFailure(f"line {line_no}: unknown element {name!r}")
        match = re.fullmatch(r"(\d+)([a-zA])", label)
        if match is None:
            raise _DecodeFailure(
                f"line {line_no}: Wyckoff label {label!r} is not a multiplicity "
                "followed by a letter (e.g. 4a)"
            )
        multiplicity, letter = int(match.group(1)), match.group(2)
        point = np.array(_parse_numbers(fields[2:], line_no, "coordinates"))
        if not np.all(np.isfinite(point)):
            raise _DecodeFailure(f"line {line_no}: coordinates must be finite numbers")
        point = point % 1.0
        # put the site exactly on its special position (4 decimals leave 1/3 as 0.3333): the mean
        # of its images under its site-symmetry group
        images = np.einsum("nij,j->ni", setting.rotations, point) + setting.translations
        diff = _wrap(images - point)
        point = (point + diff[np.all(np.abs(diff) < _MERGE_TOL, axis=1)].mean(axis=0)) % 1.0
        images = (np.einsum("nij,j->ni", setting.rotations, point) + setting.translations) % 1.0
        close = np.all(np.abs(_wrap(images[:, None, :] - images[None, :, :])) < _MERGE_TOL, axis=2)
        unique = ~np.any(np.tril(close, -1), axis=1)
        images = images[unique]
        if len(images) != multiplicity:
            raise _DecodeFailure(
                f"line {line_no}: the site at {' '.join(fields[2:])} has {len(images)} "
                f"positions under {setting.symbol}, but Wyckoff label {label} says {multiplicity}"
            )
        position = _wyckoff_of(setting, point, multiplicity)
        if position is None or position.letter != letter:
            found = (
                f"it is on {position.multiplicity}{position.letter}"
                if position
                else f"no Wyckoff position of multiplicity {multiplicity} holds it"
            )
            raise _DecodeFailure(
                f"line {line_no}: the site at {' '.join(fields[2:])} is not on "
                f"Wyckoff position {label} of {setting.symbol} ({found})"
            )
        all_species.extend([species] * len(images))
        all_coords.append(images)
        all_lines.extend([line_no] * len(images))
        if len(all_species) > _MAX_SITES:
            raise _DecodeFailure(f"the conventional cell has more than {_MAX_SITES} sites")
    coords = _unit(np.concatenate(all_coords))
    line_of = np.array(all_lines)
    if len(coords) > 1:
        from scipy.spatial import cKDTree

        pairs = cKDTree(coords, boxsize=1.0).query_pairs(_MERGE_TOL, output_type="ndarray")
        pairs = pairs[line_of[pairs[:, 0]] != line_of[pairs[:, 1]]]
        if len(pairs):
            i, j = sorted(line_of[pairs[0]])
            raise _DecodeFailure(f"lines {i} and {j}: sites overlap")
    structure = Structure(lattice, all_species, coords)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no Pauling electronegativity for He", and the like
        try:
            formula = Composition(formula_line).element_composition.reduced_formula
        except Exception:  # noqa: BLE001
            raise _DecodeFailure(f"line 1: {formula_line!r} is not a chemical formula") from None
        written = structure.composition.element_composition.reduced_formula
    if formula != written:
        raise _DecodeFailure(
            f"line 1: formula {formula_line} does not match the sites, which give {written}"
        )
    return structure


# --------------------------------------------------------------------------------------------
# Other input formats
# --------------------------------------------------------------------------------------------


def _looks_like_cif(text: str) -> bool:
    return bool(re.search(r"^\s*data_", text, re.MULTILINE)) or "_cell_length_a" in text


def _from_cif(text: str) -> Structure:
    from pymatgen.io.cif import CifParser

    def notes(caught: list) -> str:
        seen: list[str] = []
        for w in caught:
            for line in str(w.message).splitlines():
                line = line.strip().strip("'")
                if line and not line.startswith("Issues encountered") and line not in seen:
                    seen.append(line)
        return f" ({'; '.join(seen)})" if seen else ""

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structures = CifParser.from_str(text).parse_structures(primitive=False)
        except Exception as exc:  # noqa: BLE001 - pymatgen raises many kinds
            raise _DecodeFailure(f"CIF could not be parsed: {exc}{notes(caught)}") from None
    if not structures:
        raise _DecodeFailure(f"CIF could not be parsed: it holds no structure{notes(caught)}")
    if len(structures) > 1:
        raise _DecodeFailure(f"CIF holds {len(structures)} structures; a crystal span holds one")
    return structures[0]


def _from_json(text: str) -> Structure:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _DecodeFailure(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict) or "lattice" not in data or "sites" not in data:
        raise _DecodeFailure("JSON is not a pymatgen Structure dict (needs 'lattice' and 'sites')")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Structure.from_dict(data)
    except Exception as exc:  # noqa: BLE001
        raise _DecodeFailure(f"JSON is not a valid pymatgen Structure dict: {exc}") from None


def _parse_any(text: str) -> Structure:
    if not isinstance(text, str):
        raise _DecodeFailure(f"expected text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise _DecodeFailure("empty text")
    if stripped.startswith("{"):
        structure = _from_json(stripped)
    elif _looks_like_cif(stripped):
        structure = _from_cif(text)
    else:
        return _decode(stripped)
    if len(structure) == 0:
        raise _DecodeFailure("the structure has no sites")
    if not structure.is_ordered:
        raise _DecodeFailure(
            "the structure is disordered (partial occupancies or mixed sites); "
            "only ordered structures can be written as crystal text"
        )
    return structure


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class CrystalCodec(Codec):
    """Crystal structures as canonical CrystaLLM-style text (see the module docstring).

    ``symprec`` (angstrom) and ``angle_tolerance`` (degrees) are spglib's tolerances for finding
    the space group when writing a structure.
    """

    name: ClassVar[str] = "crystal"
    examples: ClassVar[tuple[str, ...]] = (
        "NaCl\nFm-3m\n5.690 5.690 5.690\n90.00 90.00 90.00\n"
        "Na 4a 0.0000 0.0000 0.0000\nCl 4b 0.5000 0.5000 0.5000",
    )
    invalid_examples: ClassVar[tuple[str, ...]] = ("NaCl", "")

    def __init__(
        self, symprec: float = DEFAULT_SYMPREC, angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE
    ):
        self.symprec = symprec
        self.angle_tolerance = angle_tolerance

    def parse(self, text: str) -> Structure:
        """Crystal text, CIF text or ``Structure.as_dict()`` JSON -> `Structure`."""
        try:
            return _parse_any(text)
        except _DecodeFailure as exc:
            raise self.error(text if isinstance(text, str) else repr(text), str(exc)) from None

    def to_text(self, obj: Structure) -> str:
        if not isinstance(obj, IStructure):
            raise self.error(
                repr(obj)[:80], f"expected a pymatgen Structure, got {type(obj).__name__}"
            )
        try:
            return _encode_stable(obj, self.symprec, self.angle_tolerance)
        except _EncodeFailure as exc:
            raise self.error(obj.composition.formula, str(exc)) from None


def structure_to_text(
    structure: Structure,
    *,
    symprec: float = DEFAULT_SYMPREC,
    angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE,
) -> str:
    """Canonical crystal text of ``structure``."""
    return CrystalCodec(symprec=symprec, angle_tolerance=angle_tolerance).to_text(structure)


def text_to_structure(text: str) -> Structure:
    """The `Structure` that crystal text (or CIF, or Structure JSON) stands for."""
    return CrystalCodec().parse(text)
