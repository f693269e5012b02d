"""Tests of the crystal codec: canonical CrystaLLM-style text <-> `pymatgen.core.Structure`."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

pytest.importorskip("pymatgen")
pytest.importorskip("spglib")

import spglib  # noqa: E402
from pymatgen.analysis.structure_matcher import StructureMatcher  # noqa: E402
from pymatgen.core import Lattice, Structure  # noqa: E402
from pymatgen.io.cif import CifWriter  # noqa: E402
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer  # noqa: E402

from kiban.modalities import CodecError, get_codec  # noqa: E402
from kiban.modalities.crystal import (  # noqa: E402
    CrystalCodec,
    _setting,
    _wyckoff_of,
    structure_to_text,
    text_to_structure,
)

# the tests call spglib directly too; it warns about its own error-handling switch
pytestmark = pytest.mark.filterwarnings("ignore:Set OLD_ERROR_HANDLING:DeprecationWarning")

NACL_TEXT = """NaCl
Fm-3m
5.690 5.690 5.690
90.00 90.00 90.00
Na 4a 0.0000 0.0000 0.0000
Cl 4b 0.5000 0.5000 0.5000"""

SAMPLE_SIZE = 150
INVARIANCE_SIZE = 40
SEED = 20240611


@pytest.fixture(scope="module")
def codec() -> CrystalCodec:
    return CrystalCodec()


@pytest.fixture(scope="module")
def matcher() -> StructureMatcher:
    return StructureMatcher()


def nacl() -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


# --------------------------------------------------------------------------------------------
# real Materials Project structures (matbench_dielectric, shipped with crystal-toolkit)
# --------------------------------------------------------------------------------------------


def _dataset_path() -> Path | None:
    spec = importlib.util.find_spec("crystal_toolkit")  # locates it without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = (
        Path(list(spec.submodule_search_locations)[0])
        / "apps"
        / "examples"
        / "matbench_dielectric.json.gz"
    )
    return path if path.exists() else None


_DATA: dict | None = None


def _structures() -> dict:
    """{index: Structure dict} of matbench_dielectric. The file is a pandas ``to_dict()`` of
    4,764 rows: {"structure": {"0": {...}, ...}, "n": {...}, "spg_symbol": {...}, ...}."""
    global _DATA
    if _DATA is None:
        path = _dataset_path()
        if path is None:
            pytest.skip(
                "crystal_toolkit's matbench_dielectric.json.gz is not installed; "
                "real-structure tests need it"
            )
        with gzip.open(path, "rt") as handle:
            _DATA = json.load(handle)["structure"]
    return _DATA


def _sample_keys(n: int) -> list[str]:
    path = _dataset_path()
    if path is None:
        return []
    keys = sorted(_structures(), key=int)
    rng = np.random.default_rng(SEED)
    return [keys[i] for i in sorted(rng.choice(len(keys), size=n, replace=False))]


def _real(key: str) -> Structure:
    return Structure.from_dict(_structures()[key])


SAMPLE = _sample_keys(SAMPLE_SIZE)
INVARIANCE_SAMPLE = SAMPLE[:: max(1, SAMPLE_SIZE // INVARIANCE_SIZE)][:INVARIANCE_SIZE]
needs_data = pytest.mark.skipif(
    _dataset_path() is None, reason="crystal_toolkit's matbench_dielectric.json.gz is not installed"
)


def _spglib_standard(structure: Structure) -> Structure:
    data = spglib.get_symmetry_dataset(
        (structure.lattice.matrix, structure.frac_coords, [s.Z for s in structure.species]),
        symprec=0.1,
    )
    return Structure(data.std_lattice, data.std_types, data.std_positions)


def assert_matches(matcher: StructureMatcher, original: Structure, decoded: Structure) -> None:
    if matcher.fit(original, decoded):
        return
    # StructureMatcher cannot map a few awkward input cells onto another cell of the same
    # structure, not even onto spglib's own standardization of it (e.g. matbench_dielectric 717,
    # SrTiO3 in a body-centred cell, or a supercell that hides a halved axis): compare the decoded
    # structure with spglib's standardization then.
    standard = _spglib_standard(original)
    assert not matcher.fit(original, standard), "decoded structure does not match the original"
    assert matcher.fit(standard, decoded), "decoded structure does not match the original"


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


# --------------------------------------------------------------------------------------------
# format
# --------------------------------------------------------------------------------------------


def test_registry_loads_the_codec():
    codec = get_codec("crystal")
    assert isinstance(codec, CrystalCodec)
    assert codec.name == "crystal"
    assert codec.symprec == 0.1 and codec.angle_tolerance == 5.0


def test_rock_salt_text_is_exactly_the_documented_one(codec):
    assert codec.to_text(nacl()) == NACL_TEXT
    assert codec.canonical(NACL_TEXT) == NACL_TEXT
    assert structure_to_text(nacl()) == NACL_TEXT


def test_rock_salt_descriptions_meet(codec, matcher):
    conventional = nacl()
    primitive = conventional.get_primitive_structure()
    shifted = conventional.copy()  # Cl at the origin instead of Na
    shifted.translate_sites(range(len(shifted)), [0.5, 0, 0])
    for structure in (primitive, shifted):
        assert codec.to_text(structure) == NACL_TEXT
    decoded = text_to_structure(NACL_TEXT)
    assert len(decoded) == 8
    assert matcher.fit(decoded, conventional)


def test_diamond_uses_spglib_origin_choice_1(codec, matcher):
    """Fd-3m is written in spglib's default setting, origin choice 1 (8a at 0,0,0), and decoded
    with that setting's operations."""
    diamond = Structure(Lattice.cubic(5.43), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])
    diamond = Structure.from_sites(  # the F-centred cell
        [
            site
            for shift in ([0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0])
            for site in Structure(
                diamond.lattice, diamond.species, diamond.frac_coords + np.array(shift)
            )
        ]
    )
    text = codec.to_text(diamond)
    assert text == "Si\nFd-3m\n5.430 5.430 5.430\n90.00 90.00 90.00\nSi 8a 0.0000 0.0000 0.0000"
    decoded = codec.parse(text)
    assert len(decoded) == 8 and matcher.fit(decoded, diamond)
    # 1/8,1/8,1/8 is 8a only in origin choice 2; in origin choice 1 it is 16c
    with pytest.raises(CodecError, match="has 16 positions under Fd-3m, but Wyckoff label 8a"):
        codec.parse(text.replace("0.0000 0.0000 0.0000", "0.1250 0.1250 0.1250"))


LINE_3 = re.compile(r"^\d+\.\d{3} \d+\.\d{3} \d+\.\d{3}$")
LINE_4 = re.compile(r"^\d+\.\d{2} \d+\.\d{2} \d+\.\d{2}$")
SITE = re.compile(r"^(\S+) (\d+)([a-zA]) (0\.\d{4}) (0\.\d{4}) (0\.\d{4})$")


def check_format(text: str) -> None:
    assert not text.endswith("\n") and "  " not in text
    lines = text.split("\n")
    assert len(lines) >= 5
    assert re.fullmatch(r"[A-Za-z0-9().]+", lines[0])
    assert lines[1] in {spglib.get_spacegroup_type(h).international_short for h in range(1, 531)}
    assert LINE_3.match(lines[2]) and LINE_4.match(lines[3])
    for line in lines[4:]:
        assert SITE.match(line), line
    assert "-0.0000" not in text and "1.0000" not in " ".join(lines[4:])


# --------------------------------------------------------------------------------------------
# real structures: round trip and fixed point
# --------------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("key", SAMPLE)
def test_real_structure_round_trip(codec, matcher, key):
    original = _real(key)
    text = codec.to_text(original)
    check_format(text)
    decoded = codec.parse(text)
    assert_matches(matcher, original, decoded)
    assert codec.canonical(text) == text  # canonical(canonical(x)) == canonical(x)
    assert decoded.composition.reduced_formula == original.composition.reduced_formula
    symbol = SpacegroupAnalyzer(decoded, symprec=0.1).get_space_group_symbol()
    assert text.split("\n")[1] == symbol


@needs_data
def test_wyckoff_letters_agree_with_spglib_on_real_structures():
    """The codec's Wyckoff tables (pymatgen's ISO-MAG data shifted to spglib's origin choice)
    give spglib's letters for the atoms of spglib's own standardized cells."""
    for key in SAMPLE:
        structure = _real(key)
        data = spglib.get_symmetry_dataset(
            (structure.lattice.matrix, structure.frac_coords, [s.Z for s in structure.species]),
            symprec=0.1,
        )
        setting = _setting(data.number)
        letter_of_prim = dict(zip(data.mapping_to_primitive, data.wyckoffs))
        orbit_of_prim = dict(zip(data.mapping_to_primitive, data.equivalent_atoms))
        orbit = np.array([orbit_of_prim[p] for p in data.std_mapping_to_primitive])
        positions = np.asarray(data.std_positions) % 1.0
        for atom, prim in enumerate(data.std_mapping_to_primitive):
            multiplicity = int((orbit == orbit[atom]).sum())
            position = _wyckoff_of(setting, positions[atom], multiplicity)
            assert position is not None, (key, atom)
            assert position.letter == letter_of_prim[prim], (key, atom)


def test_wyckoff_tables_agree_with_spglib_for_all_space_groups():
    """For every space group and Wyckoff position: a probe crystal with one atom orbit on the
    position (plus a general-position orbit that pins the group) gets the same letter from spglib,
    whenever spglib keeps the probe's own origin and axes (it may legitimately move to an
    equivalent origin, where letters differ)."""
    lattices = {
        "triclinic": Lattice.from_parameters(5, 6, 7, 80, 85, 95),
        "monoclinic": Lattice.from_parameters(5, 6, 7, 90, 100, 90),
        "orthorhombic": Lattice.orthorhombic(5, 6, 7),
        "tetragonal": Lattice.tetragonal(5, 7),
        "hexagonal": Lattice.hexagonal(5, 7),
        "cubic": Lattice.cubic(6),
    }
    systems = [
        (2, "triclinic"),
        (15, "monoclinic"),
        (74, "orthorhombic"),
        (142, "tetragonal"),
        (194, "hexagonal"),
        (230, "cubic"),
    ]
    params = np.array([0.1234, 0.2771, 0.3613])
    generic = np.array([0.0713, 0.1621, 0.2917])
    compared = 0
    for number in range(1, 231):
        setting = _setting(number)
        lattice = lattices[next(name for last, name in systems if number <= last)].matrix
        rot, trans = setting.rotations, setting.translations

        def orbit(point):
            images = np.round((rot @ point + trans) % 1.0, 8) % 1.0  # noqa: B023
            return np.unique(images, axis=0)

        for position in setting.wyckoff:
            # a point of the position's first coordinate triplet: b + A u with u generic
            constraints, offset = position.constraints[0], position.offsets[0]
            point = offset.copy()
            if constraints.shape[0] < 3:  # free parameters: move within the null space of C
                _, _, vh = np.linalg.svd(constraints if constraints.size else np.zeros((1, 3)))
                free = vh[constraints.shape[0] :] if constraints.size else np.eye(3)
                point = offset + params[: len(free)] @ free
            members = orbit(point % 1.0)
            assert len(members) == position.multiplicity, (number, position.letter)
            found = _wyckoff_of(setting, members[-1], position.multiplicity)
            assert found is not None and found.letter == position.letter, (number, position.letter)
            cell = (
                lattice,
                np.vstack([members, orbit(generic)]),
                [1] * len(members) + [2] * len(orbit(generic)),
            )
            data = spglib.get_symmetry_dataset(cell, symprec=1e-3)
            assert data.number == number
            same_frame = np.allclose(data.transformation_matrix, np.eye(3)) and np.allclose(
                data.origin_shift - np.rint(data.origin_shift), 0, atol=1e-6
            )
            if same_frame:
                assert data.wyckoffs[0] == position.letter, (number, position.letter)
                compared += 1
    assert compared > 1400  # of 1731 positions


# --------------------------------------------------------------------------------------------
# invariance
# --------------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("key", INVARIANCE_SAMPLE)
def test_rotated_permuted_supercell_input_gives_the_same_text(codec, key):
    original = _real(key)
    text = codec.to_text(original)
    rng = np.random.default_rng(int(key))
    rotated = Structure(
        original.lattice.matrix @ _random_rotation(rng).T, original.species, original.frac_coords
    )
    permuted = Structure.from_sites([rotated[i] for i in rng.permutation(len(rotated))])
    permuted.make_supercell([2, 1, 1])
    assert codec.to_text(permuted) == text


@needs_data
@pytest.mark.parametrize("key", INVARIANCE_SAMPLE)
def test_primitive_and_conventional_input_give_the_same_text(codec, key):
    analyzer = SpacegroupAnalyzer(_real(key), symprec=0.1)
    primitive = analyzer.get_primitive_standard_structure()
    conventional = analyzer.get_conventional_standard_structure()
    assert codec.to_text(primitive) == codec.to_text(conventional)


@needs_data
@pytest.mark.parametrize("key", INVARIANCE_SAMPLE)
def test_origin_and_setting_choices_meet_for_symmetric_structures(codec, key):
    """An exactly symmetric structure (a decoded text) moved to another origin, rotated, permuted,
    in a supercell or in a left-handed cell still gives its text: the normalizer search finds the
    same description whatever origin or axes spglib starts from."""
    text = codec.to_text(_real(key))
    symmetric = codec.parse(text)
    rng = np.random.default_rng(int(key) + 1)
    moved = symmetric.copy()
    moved.translate_sites(range(len(moved)), rng.random(3))
    assert codec.to_text(moved) == text
    moved = Structure(
        moved.lattice.matrix @ _random_rotation(rng).T, moved.species, moved.frac_coords
    )
    moved = Structure.from_sites([moved[i] for i in rng.permutation(len(moved))])
    moved.make_supercell([[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    assert codec.to_text(moved) == text
    left_handed = Structure(-moved.lattice.matrix, moved.species, -moved.frac_coords)
    assert codec.to_text(left_handed) == text


# --------------------------------------------------------------------------------------------
# other input formats
# --------------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("key", SAMPLE[:8])
def test_cif_input(codec, matcher, key):
    original = _real(key)
    for cif in (str(CifWriter(original)), str(CifWriter(original, symprec=0.1))):
        parsed = codec.parse(cif)
        assert isinstance(parsed, Structure)
        assert_matches(matcher, original, parsed)
        assert_matches(matcher, original, codec.parse(codec.canonical(cif)))


def test_cif_input_rock_salt(codec):
    cif = str(CifWriter(nacl(), symprec=0.1))
    assert codec.canonical(cif) == NACL_TEXT


@needs_data
@pytest.mark.parametrize("key", SAMPLE[:8])
def test_json_input(codec, matcher, key):
    original = _real(key)
    text = json.dumps(original.as_dict())
    parsed = codec.parse(text)
    assert matcher.fit(original, parsed)
    assert codec.canonical(text) == codec.to_text(original)


def test_json_input_rock_salt(codec):
    assert codec.canonical(nacl().to_json()) == NACL_TEXT


def test_tolerances_are_parameters():
    distorted = nacl()
    distorted.translate_sites([0], [0.05, 0.0, 0.0], frac_coords=False)  # 0.05 angstrom
    assert CrystalCodec().to_text(distorted) == NACL_TEXT  # symprec 0.1 angstrom
    strict = CrystalCodec(symprec=0.01, angle_tolerance=1.0)
    assert strict.symprec == 0.01 and strict.angle_tolerance == 1.0
    assert strict.to_text(distorted).split("\n")[1] != "Fm-3m"
    assert structure_to_text(distorted, symprec=0.01).split("\n")[1] != "Fm-3m"


def test_loose_space_group_spelling(codec):
    loose = NACL_TEXT.replace("Fm-3m", "F m -3 m")
    assert codec.canonical(loose) == NACL_TEXT
    text = "NaCl\nP 21/c\n5 6 7\n90 100 90\nNa 4e 0.1 0.2 0.3\nCl 4e 0.6 0.2 0.3"
    assert codec.canonical(text).split("\n")[1] == "P2_1/c"


def test_oxidation_states_are_kept(codec, matcher):
    structure = nacl()
    structure.add_oxidation_state_by_element({"Na": 1, "Cl": -1})
    text = codec.to_text(structure)
    assert text.split("\n")[0] == "NaCl"
    assert text.split("\n")[4].startswith("Na+ 4a") and text.split("\n")[5].startswith("Cl- 4b")
    assert codec.canonical(text) == text
    assert matcher.fit(structure, codec.parse(text))


# --------------------------------------------------------------------------------------------
# property test: random simple structures
# --------------------------------------------------------------------------------------------

SPACE_GROUPS = {
    "Pm-3m": "cubic",
    "Fm-3m": "cubic",
    "Im-3m": "cubic",
    "Fd-3m": "cubic",
    "Pa-3": "cubic",
    "P4/mmm": "tetragonal",
    "I4/mmm": "tetragonal",
    "P4_2/mnm": "tetragonal",
    "I4_1/amd": "tetragonal",
    "P-4m2": "tetragonal",
    "P4mm": "tetragonal",
    "P6_3/mmc": "hexagonal",
    "R-3m": "hexagonal",
    "Pnma": "orthorhombic",
    "P2_1/c": "monoclinic",
}
SPECIAL = [0.0, 0.25, 0.5, 0.75, 1 / 3, 2 / 3, 1 / 8]
LARGE_GROUPS = {"Fm-3m", "Fd-3m", "Im-3m"}


@st.composite
def simple_structures(draw) -> Structure:
    group = draw(st.sampled_from(sorted(SPACE_GROUPS)))
    system = SPACE_GROUPS[group]
    a, b, c = (draw(st.floats(4.0, 10.0)) for _ in range(3))
    if system == "cubic":
        lattice = Lattice.cubic(a)
    elif system == "tetragonal":
        lattice = Lattice.tetragonal(a, c)
    elif system == "hexagonal":
        lattice = Lattice.hexagonal(a, c)
    elif system == "orthorhombic":
        lattice = Lattice.orthorhombic(a, b, c)
    else:
        lattice = Lattice.monoclinic(a, b, c, draw(st.floats(92.0, 118.0)))
    n = draw(st.integers(1, 3))
    species = draw(
        st.lists(st.sampled_from(["Na", "Cl", "Mg", "O", "Si", "Ti", "Li"]), min_size=n, max_size=n)
    )
    coordinate = st.one_of(st.sampled_from(SPECIAL), st.floats(0.0, 1.0).map(lambda x: round(x, 3)))
    if group in LARGE_GROUPS:  # pymatgen expands general positions of big groups slowly
        coordinate = st.sampled_from([0.0, 0.125, 0.25, 0.5])
    coords = draw(st.lists(st.tuples(coordinate, coordinate, coordinate), min_size=n, max_size=n))
    # a cheap check first: the sites as given must not overlap (pymatgen's expansion is slow)
    if n > 1:
        given_sites = Structure(lattice, species, coords)
        distances = given_sites.distance_matrix
        np.fill_diagonal(distances, np.inf)
        assume(distances.min() > 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            structure = Structure.from_spacegroup(group, lattice, species, coords, tol=0.01)
        except ValueError:  # e.g. generated sites that coincide
            assume(False)
    assume(len(structure) <= 64)
    neighbors = structure.get_neighbor_list(1.0)[3]
    assume(len(neighbors) == 0)  # no two atoms closer than 1 angstrom
    return structure


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(simple_structures())
def test_random_simple_structures_round_trip(structure):
    codec = CrystalCodec()
    text = codec.to_text(structure)
    check_format(text)
    decoded = codec.parse(text)
    assert_matches(StructureMatcher(), structure, decoded)
    assert codec.canonical(text) == text


# --------------------------------------------------------------------------------------------
# errors: always a CodecError that says why
# --------------------------------------------------------------------------------------------


def _replace_line(number: int, line: str) -> str:
    lines = NACL_TEXT.split("\n")
    lines[number - 1] = line
    return "\n".join(lines)


ERROR_CASES = [
    ("", "empty text"),
    ("  \n \n", "empty text"),
    ("NaCl\nFm-3m", "at least 5 lines"),
    (_replace_line(1, "Na Cl"), "line 1: expected 1 field"),
    (_replace_line(1, "KCl"), "line 1: formula KCl does not match the sites"),
    (_replace_line(2, "Fm-3x"), "line 2: unknown space-group symbol 'Fm-3x'"),
    (_replace_line(3, "5.69 5.69"), "line 3: expected 3 fields"),
    (_replace_line(3, "5.69 5.69 -5.69"), "line 3: lattice lengths must be positive numbers"),
    (_replace_line(3, "5.69 5.69 0"), "line 3: lattice lengths must be positive numbers"),
    (_replace_line(3, "5.69 5.69 big"), "line 3: lattice lengths must be numbers, got 'big'"),
    (_replace_line(3, "5.69 5.69 nan"), "line 3: lattice lengths must be numbers"),
    (_replace_line(3, "5.0 6.0 7.0"), "does not have the symmetry of space group Fm-3m"),
    (_replace_line(4, "90 90"), "line 4: expected 3 fields"),
    (_replace_line(4, "90 90 190"), "line 4: lattice angles must be between 0 and 180"),
    (_replace_line(4, "90 90 ninety"), "line 4: lattice angles must be numbers"),
    (_replace_line(4, "120 120 120"), "do not form a cell"),
    (_replace_line(5, "Na 4a 0 0"), "line 5: expected 5 fields"),
    (_replace_line(6, "Cl 4b 0.5 0.5 0.5 0.5"), "line 6: expected 5 fields"),
    (_replace_line(5, "Xx 4a 0 0 0"), "line 5: unknown element 'Xx'"),
    (_replace_line(5, "Na a4 0 0 0"), "line 5: Wyckoff label 'a4' is not a multiplicity"),
    (_replace_line(5, "Na 4a zero 0 0"), "line 5: coordinates must be numbers, got 'zero'"),
    (
        _replace_line(5, "Na 4a 0.1 0 0"),
        "has 24 positions under Fm-3m, but Wyckoff label 4a says 4",
    ),
    (_replace_line(6, "Cl 4a 0.5 0.5 0.5"), "is not on Wyckoff position 4a of Fm-3m (it is on 4b)"),
    (_replace_line(6, "Cl 4b 0 0 0"), "is not on Wyckoff position 4b of Fm-3m (it is on 4a)"),
    (
        NACL_TEXT.replace("Cl 4b 0.5000 0.5000 0.5000", "Cl 4a 0.0000 0.0000 0.0000"),
        "lines 5 and 6: sites overlap",
    ),
    ("data_broken\n_cell_length_a 5.0\n", "CIF could not be parsed"),
    ("{not json", "invalid JSON"),
    ('{"a": 1}', "not a pymatgen Structure dict"),
    ('{"lattice": 1, "sites": 2}', "not a valid pymatgen Structure dict"),
]


@pytest.mark.parametrize(("text", "reason"), ERROR_CASES)
def test_parse_errors_say_why(codec, text, reason):
    with pytest.raises(CodecError) as info:
        codec.parse(text)
    assert reason in str(info.value)
    assert info.value.modality == "crystal"


def test_disordered_structures_are_rejected(codec):
    disordered = Structure(
        Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    with pytest.raises(CodecError, match="disordered"):
        codec.to_text(disordered)
    with pytest.raises(CodecError, match="disordered"):
        codec.parse(disordered.to_json())
    with pytest.raises(CodecError, match="disordered"):
        codec.parse(str(CifWriter(disordered)))


def test_bad_objects_are_rejected(codec):
    with pytest.raises(CodecError, match="expected a pymatgen Structure, got str"):
        codec.to_text("NaCl")
    with pytest.raises(CodecError, match="the structure has no sites"):
        codec.to_text(Structure(Lattice.cubic(3.0), [], []))
    with pytest.raises(CodecError, match="apart"):
        codec.to_text(Structure(Lattice.cubic(3.0), ["Na", "Cl"], [[0, 0, 0], [0, 0, 0.01]]))
    with pytest.raises(CodecError, match="expected text, got int"):
        codec.parse(5)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mangled_text_raises_only_codec_errors(data):
    """Damaged crystal text either still parses or raises CodecError, never anything else."""
    codec = CrystalCodec()
    lines = NACL_TEXT.split("\n")
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "replace", "insert", "fields"]))
        if action == "drop" and len(lines) > 1:
            del lines[index]
        elif action == "replace":
            lines[index] = data.draw(st.text(max_size=30))
        elif action == "insert":
            lines.insert(index, data.draw(st.text(max_size=30)))
        else:
            fields = lines[index].split(" ")
            k = data.draw(st.integers(0, len(fields) - 1))
            fields[k] = data.draw(
                st.sampled_from(
                    [
                        "",
                        "-1",
                        "0",
                        "1e9",
                        "1e-9",
                        "inf",
                        "X",
                        "Og",
                        "999",
                        "0.3333",
                        "4z",
                        "P1",
                        "R3",
                    ]
                )
            )
            lines[index] = " ".join(fields)
    text = "\n".join(lines)
    try:
        codec.parse(text)
    except CodecError as exc:
        assert exc.reason
