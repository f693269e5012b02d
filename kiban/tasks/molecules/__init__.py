"""Molecule tasks, by product:

* `kiban.tasks.molecules.evaluation`: score a generator's molecules (every MOSES metric; the
  HTML report of a trained model, traced back to its corpus).
* `kiban.tasks.molecules.properties`: property prediction (MoleculeNet-style sets, scaffold
  splits, a fingerprint forest and a fine-tuned kiban model; saved property models).
* `kiban.tasks.molecules.design`: make molecules with wanted properties (oracles, graph GA, the
  model in the loop, REINVENT's augmented likelihood, property-conditioned prompting).

The chemistry they share (canonical SMILES, fingerprints, scaffolds, descriptors) is
`kiban.chem`; ``_smiles_file`` reads SMILES from data files for evaluation and properties alike.
"""
