"""kiban's MOSES metrics (kiban/tasks/molecules/moses.py): hand-checkable values, reference
implementations (RDKit, fcd_torch, scipy), inputs MOSES cannot score, and the CLI.

Parity with molsets' own `get_all_metrics` on 30,000 samples is in benchmarks/moses_parity.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

if importlib.util.find_spec("moses") is None or importlib.util.find_spec("fcd_torch") is None:
    pytest.skip("molsets (data-only) and fcd_torch are needed", allow_module_level=True)
from rdkit import Chem, DataStructs, RDConfig  # noqa: E402
from rdkit.Chem import AllChem  # noqa: E402

from kiban.data import moses_smiles  # noqa: E402
from kiban.tasks.molecules.evaluation import (  # noqa: E402
    METRIC_NAMES,
    MosesResult,
    _chemnet,
    _tanimoto,
    evaluate_moses,
    evaluate_moses_file,
    moses_metrics,
    read_samples,
)
from kiban.tasks.molecules.evaluation import _moses_features as _features  # noqa: E402
from kiban.tasks.molecules.evaluation.moses import (  # noqa: E402
    MOSES_RESULT,
    cosine_similarity,
    fraction_unique,
    moses_training_set,
    read_training_set,
    wasserstein_1d,
)


@pytest.fixture(scope="module")
def test_set() -> list[str]:
    return moses_smiles("test", 200)


def _bits(mols) -> np.ndarray:
    """MOSES' fingerprints, made as molsets makes them (the legacy RDKit call)."""
    rows = []
    for mol in mols:
        row = np.zeros(1024, dtype=np.uint8)
        DataStructs.ConvertToNumpyArray(
            AllChem.GetMorganFingerprintAsBitVect(mol, 2, nBits=1024), row
        )
        rows.append(row)
    return np.stack(rows)


# --- Tanimoto kernels --------------------------------------------------------------------------


def test_tanimoto_kernels_match_rdkit_bulk_tanimoto(test_set):
    rng = np.random.default_rng(0)
    mols = [Chem.MolFromSmiles(test_set[i]) for i in rng.choice(len(test_set), 120, replace=False)]
    fps = [AllChem.GetMorganFingerprintAsBitVect(m, 2, nBits=1024) for m in mols]
    query, reference = fps[:40], fps[40:]
    expected_nearest = [max(DataStructs.BulkTanimotoSimilarity(fp, reference)) for fp in query]
    bits = _bits(mols)
    nearest = _tanimoto.nearest_similarity(bits[:40], bits[40:])
    np.testing.assert_allclose(nearest, expected_nearest, rtol=0, atol=1e-12)

    all_pairs = np.array([DataStructs.BulkTanimotoSimilarity(fp, fps) for fp in fps])
    mean, mean_square = _tanimoto.mean_similarity(bits)
    np.testing.assert_allclose(mean, all_pairs.mean(1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean_square, (all_pairs**2).mean(1), rtol=0, atol=1e-12)
    # the matmul path used on accelerators gives the same numbers (run here on the CPU)
    torch_nearest, _ = _tanimoto._torch_aggregate(bits[:40], bits[40:], "cpu", "max", batch_size=32)
    np.testing.assert_allclose(torch_nearest, expected_nearest, atol=1e-6)
    torch_mean, torch_square = _tanimoto._torch_aggregate(bits, bits, "cpu", "mean", batch_size=50)
    np.testing.assert_allclose(torch_mean, mean, atol=1e-6)
    np.testing.assert_allclose(torch_square, mean_square, atol=1e-6)


def test_empty_fingerprints_are_identical_and_shapes_are_checked():
    empty = np.zeros((2, 64), dtype=np.uint8)
    one = np.zeros((1, 64), dtype=np.uint8)
    one[0, 3] = 1
    assert _tanimoto.nearest_similarity(empty[:1], empty).tolist() == [1.0]
    assert _tanimoto.nearest_similarity(one, empty).tolist() == [0.0]
    assert _tanimoto.mean_similarity(np.vstack([empty[:1], one]))[0].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match=r"got shape \(2, 10\)"):
        _tanimoto.pack_fingerprints(np.zeros((2, 10)))


def test_fingerprint_bits_are_mosess_morgan_radius_2_1024(test_set):
    mols = [Chem.MolFromSmiles(s) for s in test_set[:50]]
    expected = _bits(mols)
    for mol, row in zip(mols, expected):
        features = _features.describe(Chem.MolToSmiles(mol))
        assert np.array_equal(np.unpackbits(np.frombuffer(features.fingerprint, np.uint8)), row)


# --- per-molecule features ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("smiles", "passes"),
    [
        ("CCO", True),
        ("CC(=O)Nc1ccc(O)cc1", True),
        ("CCCl", False),  # MCF4: halogen on an sp3 carbon with two hydrogens
        ("CCP", False),  # phosphorus is not an allowed element
        ("CC[NH3+]", False),  # charged
        ("C1CCCCCCC1", False),  # ring of 8 atoms
        ("O=C1C(=Cc2ccccc2)SC(=S)N1", False),  # PAINS ene_rhod (benzylidene rhodanine)
    ],
)
def test_filters(smiles, passes):
    assert _features.passes_filters(Chem.MolFromSmiles(smiles)) is passes


def test_filter_patterns_are_mcf_plus_pains():
    assert len(_features.filter_patterns()) == 22 + 480  # as molsets loads them


def test_sa_score_is_rdkit_contribs_bit_for_bit(test_set):
    sys.path.insert(0, os.path.join(RDConfig.RDContribDir, "SA_Score"))
    try:
        import sascorer
    finally:
        sys.path.pop(0)
    # [Si]1[Si][Si]1 (SA 8.11) reaches the smoothed 10-end
    for smiles in test_set[:100] + [
        "C1CC2CCC1C2",
        "C1CCC2(CC1)CCCC2",
        "C1CCCCCCCCC1",
        "[Si]1[Si][Si]1",
    ]:
        mol = Chem.MolFromSmiles(smiles)
        assert _features.describe(smiles).sa == sascorer.calculateScore(mol)


def test_scaffold_needs_two_rings_and_fragments_are_brics():
    assert _features.murcko_scaffold(Chem.MolFromSmiles("CCc1ccccc1")) is None  # one ring
    assert (
        _features.murcko_scaffold(Chem.MolFromSmiles("CCc1ccc(Cc2ccccc2)cc1O"))
        == "c1ccc(Cc2ccccc2)cc1"
    )
    # ethyl benzoate: ester O (BRICS type 3) cut on both sides, carbonyl (1/6), phenyl (16),
    # ethyl (4)
    assert _features.brics_fragments(Chem.MolFromSmiles("CCOC(=O)c1ccccc1")) == (
        "[1*]C([6*])=O",
        "[16*]c1ccccc1",
        "[3*]O[3*]",
        "[4*]CC",
    )


def test_invalid_samples_get_rdkit_reasons():
    assert _features.describe("") == "empty line"
    assert "unclosed ring" in _features.describe("C1CC")
    assert "syntax error" in _features.describe("hello world")
    assert "control characters" in _features.describe("\x00\x01")
    assert "UTF-8" in _features.describe("C\ufffdC")
    assert "Explicit valence" in _features.describe("C(C)(C)(C)(C)C")


# --- ChemNet / FCD -----------------------------------------------------------------------------


def test_chemnet_input_and_activations_match_fcd_torch(test_set):
    torch = pytest.importorskip("torch")
    from fcd_torch.utils import get_one_hot, load_imported_model

    smiles = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in test_set[:24]] + [
        "ClC[Si](Br)CCl",
        "C" * 400,
        "C",
    ]
    expected = np.stack([get_one_hot(s, 350) / 35 for s in smiles]).astype(np.float32)
    assert np.array_equal(_chemnet.one_hot(smiles), expected)
    weights = _chemnet.package_file("fcd_torch", "ChemNet_v0.13_pretrained.pt")
    reference = load_imported_model(torch.load(weights, weights_only=True)).eval()
    with torch.no_grad():
        want = reference(torch.from_numpy(expected).transpose(1, 2)).numpy()
    np.testing.assert_allclose(_chemnet.activations(smiles, batch_size=10), want, atol=1e-6)


def test_frechet_distance_matches_fcd_torch_and_is_zero_for_equal_gaussians():
    from fcd_torch import calculate_frechet_distance

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 16)), rng.normal(loc=0.3, size=(150, 16)) * 1.5
    mu_a, sigma_a = _chemnet.gaussian(a)
    mu_b, sigma_b = _chemnet.gaussian(b)
    assert _chemnet.frechet_distance(mu_a, sigma_a, mu_b, sigma_b) == pytest.approx(
        calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b), rel=1e-12
    )
    assert abs(_chemnet.frechet_distance(mu_a, sigma_a, mu_a, sigma_a)) < 1e-8
    with pytest.raises(ValueError, match="different sizes"):
        _chemnet.frechet_distance(mu_a, sigma_a, mu_a[:3], sigma_a[:3, :3])


# --- aggregate metrics -------------------------------------------------------------------------


def test_cosine_similarity_of_known_counts():
    from scipy.spatial.distance import cosine

    assert cosine_similarity({"a": 1, "b": 2}, {"a": 2, "c": 1}) == pytest.approx(0.4, abs=1e-15)
    assert cosine_similarity({"a": 3}, {"a": 5}) == pytest.approx(1.0, abs=1e-15)
    assert cosine_similarity({"a": 3}, {"b": 5}) == 0.0
    assert cosine_similarity({}, {"a": 1}) is None
    reference, generated = {"x": 7, "y": 1, "z": 4}, {"x": 2, "w": 9, "z": 1}
    keys = sorted(set(reference) | set(generated))
    assert cosine_similarity(reference, generated) == pytest.approx(
        1 - cosine([reference.get(k, 0) for k in keys], [generated.get(k, 0) for k in keys]),
        abs=1e-15,
    )


def test_wasserstein_matches_scipy():
    from scipy.stats import wasserstein_distance

    assert wasserstein_1d(np.array([0.0]), np.array([1.0])) == 1.0
    assert wasserstein_1d(np.array([0.0, 1.0, 3.0]), np.array([5.0, 6.0, 8.0])) == 5.0
    rng = np.random.default_rng(2)
    u, v = rng.normal(size=500), rng.gamma(2.0, size=333)
    assert wasserstein_1d(u, v) == pytest.approx(wasserstein_distance(u, v), abs=1e-12)


# --- evaluate_moses ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_sample() -> tuple[list[str], MosesResult]:
    """300 random MOSES test molecules, then 30 repeats of the first ones."""
    test = moses_smiles("test")
    rng = np.random.default_rng(3)
    samples = [test[i] for i in rng.choice(len(test), 300, replace=False)]
    samples += samples[:30]
    return samples, evaluate_moses(samples, n_jobs=2)


def test_counts_of_a_test_set_sample(test_sample):
    samples, result = test_sample
    assert result.n_samples == result.n_valid == 330
    assert result["valid"] == 1.0
    assert result["unique@1000"] is None and result["unique@10000"] is None
    assert result.reasons["unique@1000"] == "needs at least 1,000 valid molecules, got 330"
    assert result["Novelty"] == 1.0  # MOSES' test molecules are not in train
    assert result["Filters"] == 1.0  # the MOSES data was built to pass its own filters


def test_unique_at_k_counts_the_first_k():
    canonical = ["CCO", "CCN", "CCO", "c1ccccc1", "CCN", "CCC"]
    assert fraction_unique(canonical, 4) == (3 / 4, None)
    assert fraction_unique(canonical, 6) == (4 / 6, None)
    assert fraction_unique(canonical, 7) == (None, "needs at least 7 valid molecules, got 6")
    assert fraction_unique(["C"] * 1000 + ["N"] * 9000, 1000) == (0.001, None)


def test_a_test_set_sample_is_close_to_the_test_statistics(test_sample):
    _, result = test_sample
    assert result["SNN/Test"] > 0.99  # each sample is itself among the test fingerprints
    assert result["Scaf/TestSF"] == 0.0  # scaffold split: no test scaffold is in test_scaffolds
    assert result["Frag/Test"] > 0.9 and result["Scaf/Test"] > 0.1
    assert result["SNN/TestSF"] < 0.7
    assert result["FCD/Test"] < result["FCD/TestSF"]
    for name in ("logP", "SA", "QED", "weight"):
        assert 0 <= result[name] < (5.0 if name == "weight" else 0.2)
    assert 0.8 < result["IntDiv2"] < result["IntDiv"] < 0.9


def test_fcd_of_test_molecules_is_far_below_fcd_of_unlike_molecules(test_sample):
    _, result = test_sample
    alkanes = ["C" * n for n in range(2, 40)] + ["C" * n + "O" for n in range(2, 40)]
    unlike = evaluate_moses(alkanes)
    assert 5 * result["FCD/Test"] < unlike["FCD/Test"]
    assert unlike["Scaf/Test"] is None
    assert "two or more rings" in unlike.reasons["Scaf/Test"]


def test_identical_molecules_have_zero_internal_diversity():
    result = evaluate_moses(["c1ccccc1CCO"] * 4 + ["OCCc1ccccc1"])
    assert result["IntDiv"] == 0.0 and result["IntDiv2"] == 0.0
    assert result["SNN/Test"] < 1.0
    assert result["valid"] == 1.0


def test_hand_checkable_small_set():
    train_first = moses_smiles("train", 1)[0]
    assert Chem.MolToSmiles(Chem.MolFromSmiles(train_first)) == train_first
    samples = [train_first, train_first, "CCO", "OCC", "c1ccccc1", "not a smiles", ""]
    result = evaluate_moses(samples)
    assert result["valid"] == 5 / 7
    assert result["Novelty"] == 2 / 3  # {train molecule, ethanol, benzene}: 2 are new
    assert result["unique@1000"] is None
    assert [(s.where, s.text) for s in result.invalid] == [
        ("sample 6", "not a smiles"),
        ("sample 7", ""),
    ]
    assert result.invalid[1].reason == "empty line"
    assert moses_metrics(samples) == dict(result.values)


def test_metrics_that_cannot_be_computed_say_why():
    empty = evaluate_moses([])
    assert all(value is None for value in empty.values.values())
    assert set(empty.reasons) == set(METRIC_NAMES)
    assert "no samples" in empty.reasons["valid"]

    invalid = evaluate_moses(["C1CC", "xyz", ""])
    assert invalid["valid"] == 0.0
    assert {name for name, value in invalid.values.items() if value is None} == set(
        METRIC_NAMES
    ) - {"valid"}
    assert invalid.reasons["FCD/Test"] == "none of the 3 samples is a valid molecule"

    single = evaluate_moses(["CC(=O)Nc1ccc(O)cc1"])
    assert single["FCD/Test"] is None and "at least 2" in single.reasons["FCD/Test"]
    assert single["IntDiv"] == 0.0 and single["Novelty"] == 1.0


def test_result_validation_and_lookup():
    values = dict.fromkeys(METRIC_NAMES, 0.5)
    values["valid"] = None
    with pytest.raises(ValueError, match=r"\['valid'\] are None without a reason"):
        MosesResult(
            source="x",
            n_samples=1,
            n_valid=1,
            values=values,
            reasons={},
            invalid=(),
            training_set={"name": "test"},
        )
    result = MosesResult(
        source="x",
        n_samples=1,
        n_valid=1,
        values=values,
        reasons={"valid": "test"},
        invalid=(),
        training_set={"name": "test"},
    )
    with pytest.raises(KeyError, match="unknown MOSES metric 'FCD'"):
        result["FCD"]
    with pytest.raises(TypeError, match="Got a single str"):
        evaluate_moses("CCO")
    with pytest.raises(ValueError, match="Got 0"):
        evaluate_moses(["CCO"], n_jobs=0)


# --- files and the CLI -------------------------------------------------------------------------


def test_read_samples_lines(tmp_path):
    path = tmp_path / "s.smi"
    path.write_bytes(b"CCO\r\n  c1ccccc1  \n\nCC\n")
    assert read_samples(path) == ["CCO", "c1ccccc1", "", "CC"]
    path.write_bytes(b"")
    assert read_samples(path) == []
    with pytest.raises(FileNotFoundError, match="missing.smi"):
        read_samples(tmp_path / "missing.smi")


def test_binary_junk_file_is_all_invalid_with_reasons(tmp_path):
    path = tmp_path / "junk.bin"
    path.write_bytes(bytes(range(256)) * 3)
    result = evaluate_moses_file(path)
    assert result.n_samples == 4 and result.n_valid == 0 and result["valid"] == 0.0
    assert result.invalid[0].where == f"{path}:1"
    assert all(("control characters" in s.reason or "UTF-8" in s.reason) for s in result.invalid)


# --- the training set Novelty is measured against ------------------------------------------------


def _rdkit_canonical(smiles: str) -> str | None:
    """What molsets compares: RDKit's canonical SMILES of the molecule re-read from its own."""
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return None if mol is None else Chem.MolToSmiles(Chem.MolFromSmiles(Chem.MolToSmiles(mol)))


def test_a_user_training_set_is_canonicalised_like_the_samples(tmp_path):
    import hashlib

    path = tmp_path / "train.smi"
    path.write_text("OCC ethanol\n\nC(C)O\nc1ccncc1\nnot a smiles\nN[C@@H](C)C(=O)O\n")
    training = read_training_set(path)
    assert training.smiles == frozenset({"CCO", "c1ccncc1", "C[C@H](N)C(=O)O"})
    assert training.lines == 5  # the blank line is not counted
    assert [(s.where, s.text) for s in training.invalid] == [(f"{path}:5", "not a smiles")]
    assert training.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_training_set(path, n_jobs=2) == training  # worker processes agree
    assert training.as_dict() == {
        "name": "your training set",
        "path": str(path),
        "sha256": training.sha256,
        "molecules": 3,
        "lines": 5,
        "invalid": {
            "count": 1,
            "examples": [
                {"where": f"{path}:5", "text": "not a smiles", "reason": training.invalid[0].reason}
            ],
        },
    }


def test_novelty_against_a_user_training_set_equals_brute_force(tmp_path):
    rng = np.random.default_rng(5)
    test = moses_smiles("test")
    pool = [test[i] for i in rng.choice(len(test), 60, replace=False)]
    train = pool[:40] + ["OCC", "C(C)O"]  # two spellings of one molecule
    samples = pool[20:60] + ["CCO", "c1ccccc1", "not a smiles"] + pool[25:30]
    path = tmp_path / "train.smi"
    path.write_text("\n".join(train) + "\n")
    result = evaluate_moses(samples, training=read_training_set(path))
    generated = {c for c in map(_rdkit_canonical, samples) if c is not None}
    reference = {_rdkit_canonical(s) for s in train}
    assert len(generated) == 42 and len(generated - reference) == 21  # pool[40:60] + benzene
    assert result["Novelty"] == len(generated - reference) / len(generated) == 21 / 42
    assert result.training_set["path"] == str(path)
    assert result.training_set["molecules"] == 41
    assert result.as_dict()["training_set"] == read_training_set(path).as_dict()


def test_a_csv_training_set_reads_its_smiles_column(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('id,Smiles,parent\nm1,OCC,CCN\nm2,"c1ccccc1",CCN\nm3,C1CC,NCC\n')
    training = read_training_set(path)
    assert training.smiles == frozenset({"CCO", "c1ccccc1"})
    assert [s.where for s in training.invalid] == [f"{path}:4"]
    parent = read_training_set(path, smiles_column="parent")
    assert parent.smiles == frozenset({"CCN"}) and parent.lines == 3 and not parent.invalid


@pytest.mark.parametrize(
    "name, text, column, message",
    [
        (
            "t.csv",
            "id,smile\n1,CCO\n",
            None,
            "t.csv:1: no column 'smiles' (a column named 'smiles') in the header; the columns "
            "are ['id', 'smile'] (did you mean 'smile'?); name the SMILES column with "
            "--train-column",
        ),
        (
            "t.csv",
            "id,smiles\n1,CCO\n",
            "smile",
            "t.csv:1: no column 'smile' (--train-column) in the header; the columns are "
            "['id', 'smiles'] (did you mean 'smiles'?)",
        ),
        ("t.csv", "", None, "t.csv is empty (a CSV file needs a header)"),
        ("t.smi", "CCO\n", "smiles", "--train-column 'smiles' names a CSV column"),
        ("t.smi", "xyz\n\n", None, "t.smi holds no valid molecule (1 non-blank lines); "),
    ],
)
def test_bad_training_sets_are_input_errors(tmp_path, name, text, column, message):
    from kiban.errors import InputError

    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        read_training_set(path, smiles_column=column)
    assert message in str(caught.value)
    with pytest.raises(FileNotFoundError, match="nope.smi does not exist"):
        read_training_set(tmp_path / "nope.smi")


def test_without_a_training_set_novelty_is_against_moses_train_and_says_so():
    from kiban.data import package_file
    from kiban.io import file_sha256

    result = evaluate_moses(["CCO", "c1ccccc1"])
    path = package_file("moses", "dataset/data/train.csv.gz")
    train = moses_smiles("train")
    assert result.training_set == moses_training_set().as_dict()
    assert dict(result.training_set) == {
        "name": "MOSES train",
        "path": str(path),
        "sha256": file_sha256(path),
        "molecules": len(set(train)),
        "lines": len(train),
        "invalid": {"count": 0, "examples": []},
    }


def test_version_1_results_read_as_against_moses_train():
    from kiban.formats import check

    v1 = {"format": "kiban.moses_result", "version": 1, "metrics": {}}
    assert check(v1, MOSES_RESULT, where="old.json")["training_set"] == {"name": "MOSES train"}
