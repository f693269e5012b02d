"""Per-call-site outputs of kiban's chemistry (issue 15: one `kiban.chem`), in the layout before
the split of kiban/tasks/molecules or after it, as JSON with floats in hex: run it on each tree and
diff the two files. Every key must match but ``table_source`` (which table it read).

    python benchmarks/moses_parity/make_samples.py --out /tmp/chemprobe
    git archive 531e3f1 kiban | tar -x -C /tmp/kiban-before
    PYTHONPATH=/tmp/kiban-before python benchmarks/moses_parity/chem_identity.py before.json \
        /tmp/chemprobe/samples-2k.smi --moses --props
    PYTHONPATH=. python benchmarks/moses_parity/chem_identity.py after.json \
        /tmp/chemprobe/samples-2k.smi --moses --props
"""

import hashlib
import json
import sys

import numpy as np
from rdkit import Chem

from kiban.data import moses_smiles


def imp(new, old):
    import importlib

    try:
        return importlib.import_module(new)
    except ModuleNotFoundError:
        return importlib.import_module(old)


def h(array):
    return (
        hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]
        + str(np.asarray(array).dtype)
        + str(np.asarray(array).shape)
    )


out = {}
lines = open(sys.argv[2], encoding="utf-8").read().split("\n")[:-1]
extra = [
    "",
    " ",
    "CCO ethanol",
    "CCO\tethanol",
    " CCO",
    "C C",
    "[Na+].[Cl-]",
    "C1CC",
    "*",
    "[H][H]",
    "C[C@H](N)C(=O)O",
    "C[C@@H]1CC[C@H](C)CC1",
    "c1ccccc1",
    "hello world",
    "C(C)(C)(C)(C)C",
    "N#N",
    "[2H]C",
    "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC",
    "C1CC2CCC1C2",
    "C1CCC2(CC1)CCCC2",
    "C1CCCCCCCCC1",
    "CC.CC",
]
texts = lines + extra
test = moses_smiles("test", limit=3000)

# --- MOSES per-molecule features (old _features.describe / new evaluation._moses_features)
features = imp(
    "kiban.tasks.molecules.evaluation._moses_features", "kiban.tasks.molecules._features"
)
rows = []
for t in texts:
    d = features.describe(t)
    if isinstance(d, str):
        rows.append(["invalid"])  # reasons change by design; validity must not
    else:
        rows.append(
            [
                d.canonical,
                d.fingerprint.hex(),
                list(d.fragments),
                d.scaffold,
                d.passes_filters,
                d.logp.hex(),
                d.sa.hex(),
                d.qed.hex(),
                d.weight.hex(),
            ]
        )
out["moses_features"] = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
out["moses_valid"] = sum(r != ["invalid"] for r in rows)
out["moses_sa_hex_over_8"] = [r[6] for r in rows if r != ["invalid"] and float.fromhex(r[6]) > 8]

# --- properties: dataset read, scaffolds, split, fingerprints, forest
if "--props" in sys.argv:
    datasets = imp("kiban.tasks.molecules.properties.datasets", "kiban.tasks.molecules.properties")
    split_mod = imp(
        "kiban.tasks.molecules.properties.scaffold_split", "kiban.tasks.molecules.properties"
    )
    predictors = imp(
        "kiban.tasks.molecules.properties.predictors", "kiban.tasks.molecules.properties"
    )
    chem_fp = getattr(predictors, "morgan_fingerprints", None)
    ds = datasets.load_dataset("bbbp")
    out["bbbp_smiles"] = hashlib.sha256("\n".join(ds.smiles).encode()).hexdigest()
    out["bbbp_bad"] = [(r.where, r.kind) for r in ds.bad_records]
    scaffolds = [split_mod.murcko_scaffold(m) for m in ds.molecules]
    out["bbbp_scaffolds"] = hashlib.sha256(json.dumps(scaffolds).encode()).hexdigest()
    sp = split_mod.scaffold_split(ds.molecules, seed=1)
    out["bbbp_split"] = [h(sp.train), h(sp.validation), h(sp.test)]
    forest = predictors.FingerprintForest("classification", n_estimators=20, seed=0)
    forest.fit([ds.molecules[i] for i in sp.train], ds.targets[sp.train])
    out["bbbp_forest"] = h(forest.predict([ds.molecules[i] for i in sp.test]))
    if chem_fp is not None:
        out["bbbp_fp"] = h(chem_fp(ds.molecules[:500]))
    else:
        from kiban.chem import morgan_fingerprints

        out["bbbp_fp"] = h(morgan_fingerprints(ds.molecules[:500]))

# --- design: oracles, canonical keys, scaffolds in diverse_top / DiversityFilter, graph GA
optimize = imp("kiban.tasks.molecules.design.optimize", "kiban.tasks.molecules.optimize")
reinvent = imp("kiban.tasks.molecules.design.reinvent", "kiban.tasks.molecules.reinvent")
conditioned = imp("kiban.tasks.molecules.design.conditioned", "kiban.tasks.molecules.conditioned")
good = [t for t in test[:400]]
orc = optimize.Oracle(optimize.similarity_oracle(optimize.CELECOXIB), budget=10_000)
out["oracle_celecoxib"] = [None if s is None else s.hex() for s in orc.score_many(good + extra[2:])]
out["oracle_keys"] = [k for k, _ in orc.history]
mpo = optimize.get_oracle("mpo", 10_000)
out["oracle_mpo"] = [None if s is None else s.hex() for s in mpo.score_many(good)]
hist = [(s, float(i % 17)) for i, s in enumerate(test[:600])]
out["diverse_top"] = optimize.diverse_top(hist, 64, 2)
df = reinvent.DiversityFilter(3, 0.4)
out["diversity_rewards"] = df.rewards(
    test[:600] + test[:50] + extra[2:], [(i % 10) / 10 for i in range(600 + 50 + len(extra) - 2)]
)
ga_oracle = optimize.get_oracle("qed", 300)
ga = optimize.graph_ga(
    ga_oracle, test[:200], config=optimize.GAConfig(population_size=20, offspring_size=40), seed=3
)
out["graph_ga"] = [ga["top10_auc"].hex(), ga["generations"], ga_oracle.history[-5:]]
props = [conditioned.smiles_properties(s) for s in test[:300] + extra[2:]]
out["conditioned_props"] = [
    None if p is None else {k: v.hex() for k, v in p.items()} for p in props
]

# --- report: fingerprints and property table
report = imp("kiban.tasks.molecules.evaluation.report", "kiban.tasks.molecules.report")
mols = [Chem.MolFromSmiles(s) for s in test[:500]]
out["report_bits"] = h(report.morgan_bits(mols))
out["report_props"] = {k: h(v) for k, v in report.properties(mols).items()}

# --- corpus clean's table (call site not owned: the proposed replacement is kiban.chem's)
try:
    from kiban.chem import DESCRIPTORS as table

    out["table_source"] = "kiban.chem.DESCRIPTORS"
except ImportError:
    from kiban.corpus.clean import PROPERTY_FUNCTIONS as table

    out["table_source"] = "kiban.corpus.clean.PROPERTY_FUNCTIONS"
out["descriptor_table"] = {k: h(np.array([f(m) for m in mols])) for k, f in table.items()}

# --- lab's fingerprints (not owned; proposed replacement: kiban.chem.morgan_fingerprints)
try:
    from kiban.chem import canonical_or_none, morgan_fingerprints

    fps = morgan_fingerprints([Chem.MolFromSmiles(s) for s in test[:300]], dtype=np.float64)
    keys = [canonical_or_none(s) for s in texts[:300] + extra]
    keys = [k if k is not None else s for k, s in zip(keys, texts[:300] + extra)]
except ImportError:
    from kiban.lab.proposers.base import canonical_smiles
    from kiban.lab.proposers.molecules import fingerprints

    fps = fingerprints(test[:300])
    keys = [canonical_smiles(s) for s in texts[:300] + extra]
out["lab_fingerprints"] = h(fps)
out["lab_keys"] = keys

if "--moses" in sys.argv:
    moses = imp("kiban.tasks.molecules.evaluation.moses", "kiban.tasks.molecules.moses")
    result = moses.evaluate_moses_file(sys.argv[2], n_jobs=1)
    out["moses_metrics"] = {k: (None if v is None else v.hex()) for k, v in result.values.items()}
    out["moses_metrics_float"] = dict(result.values)
    out["moses_n_valid"] = result.n_valid

json.dump(out, open(sys.argv[1], "w"), indent=1)
print("wrote", sys.argv[1])
