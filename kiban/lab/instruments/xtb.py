"""GFN-xTB single points (tblite) on an RDKit conformer: a cheap, real quantum-chemistry
"instrument" for molecule campaigns.

One evaluation: canonical SMILES -> hydrogens added -> ETKDGv3 embedding with a fixed seed ->
MMFF94 pre-optimisation (UFF when MMFF has no parameters) -> tblite single point. The SMILES is
canonicalised first so that two spellings of one molecule give the same conformer and the same
numbers. Charge is RDKit's formal charge, unpaired electrons its radical count. For open-shell
molecules the singly occupied orbital counts as the HOMO.

Measures ``gap_ev`` (HOMO-LUMO gap, eV), ``energy_hartree`` (total energy, Eh) and
``dipole_debye`` (|dipole|, Debye; origin-dependent for ions).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args

from kiban.lab.instruments.base import (
    Instrument,
    InstrumentError,
    InstrumentOptions,
    Outcome,
    ProcessRunner,
    package_version,
)
from kiban.lab.options import require
from kiban.lab.space import Categorical, Molecule, Space

HARTREE_EV = 27.211386245988  # CODATA 2018
BOHR_ANGSTROM = 0.529177210903  # CODATA 2018
E_BOHR_DEBYE = 2.541746473  # 1 e*a0 in Debye
Method = Literal["GFN2-xTB", "GFN1-xTB", "IPEA1-xTB"]
Preopt = Literal["mmff", "uff", "none"]
METHODS = get_args(Method)
PREOPT = get_args(Preopt)
XTB_MEASURES = ("gap_ev", "energy_hartree", "dipole_debye")
MAX_Z = 86  # GFN parametrisations cover H-Rn


class XtbInputError(ValueError):
    """The molecule cannot be computed (bad SMILES, no conformer, unsupported element)."""


def warm_up() -> None:
    """Import RDKit and tblite once per worker, before the first job's clock starts."""
    import rdkit.Chem.AllChem  # noqa: F401
    import tblite.interface  # noqa: F401


def _parse(smiles: str) -> Any:
    from kiban.chem import SmilesError, parse_smiles

    try:
        return parse_smiles(smiles)
    except SmilesError as error:
        raise XtbInputError(f"invalid SMILES {smiles!r}: {error.reason}") from None


def embed(smiles: str, seed: int = 42, preopt: str = "mmff") -> tuple[Any, str, str]:
    """RDKit molecule with hydrogens and one 3D conformer; also the canonical SMILES and the
    pre-optimisation actually used ("mmff", "uff" or "none")."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import AllChem

    from kiban.chem import canonical_smiles

    canonical = canonical_smiles(_parse(smiles))
    mol = Chem.AddHs(_parse(canonical))
    bad = sorted({a.GetSymbol() for a in mol.GetAtoms() if not 1 <= a.GetAtomicNum() <= MAX_Z})
    if bad:
        raise XtbInputError(f"{smiles!r} contains {bad}: GFN-xTB covers elements H to Rn only")
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    with rdBase.BlockLogs():
        status = AllChem.EmbedMolecule(mol, params)
        if status != 0:
            params.useRandomCoords = True
            status = AllChem.EmbedMolecule(mol, params)
    if status != 0:
        raise XtbInputError(
            f"RDKit could not embed a 3D conformer of {smiles!r} (ETKDGv3, "
            f"seed {seed}, also tried random starting coordinates)"
        )
    used = "none"
    with rdBase.BlockLogs():
        if preopt == "mmff" and AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
            used = "mmff"
        elif preopt in ("mmff", "uff") and AllChem.UFFHasAllMoleculeParams(mol):
            AllChem.UFFOptimizeMolecule(mol, maxIters=2000)
            used = "uff"
    return mol, canonical, used


def xtb_properties(
    params: dict[str, Any],
    *,
    smiles_param: str,
    method: str = "GFN2-xTB",
    seed: int = 42,
    preopt: str = "mmff",
    max_iter: int = 250,
    accuracy: float = 1.0,
) -> tuple[dict[str, float], dict[str, Any]]:
    """One xtb evaluation of ``params[smiles_param]`` (runs in a worker process)."""
    import numpy as np
    from rdkit import Chem
    from rdkit.Chem import Descriptors
    from tblite.interface import Calculator

    smiles = params.get(smiles_param)
    if not isinstance(smiles, str) or not smiles.strip():
        raise XtbInputError(
            f"params[{smiles_param!r}] should be a SMILES string, got "
            f"{smiles!r} (keys: {sorted(params)})"
        )
    mol, canonical, used = embed(smiles.strip(), seed, preopt)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int32)
    positions = mol.GetConformer().GetPositions() / BOHR_ANGSTROM
    charge = Chem.GetFormalCharge(mol)
    unpaired = int(Descriptors.NumRadicalElectrons(mol))
    electrons = int(numbers.sum()) - charge
    if (electrons - unpaired) % 2:
        raise XtbInputError(
            f"{smiles!r}: {electrons} electrons cannot have {unpaired} unpaired electrons"
        )
    calc = Calculator(method, numbers, positions, charge=float(charge), uhf=unpaired)
    calc.set("verbosity", 0)
    calc.set("max-iter", int(max_iter))
    calc.set("accuracy", float(accuracy))
    result = calc.singlepoint()  # TBLiteRuntimeError("SCF not converged in N cycles") fails it
    energies = np.asarray(result.get("orbital-energies"), dtype=float)
    occupations = np.asarray(result.get("orbital-occupations"), dtype=float)
    if energies.ndim == 1:
        # restricted: the first ceil(n_electrons/2) orbitals hold electrons (a SOMO included)
        n_occ = int(math.ceil(round(float(occupations.sum())) / 2))
        if not 0 < n_occ < len(energies):
            raise XtbInputError(
                f"{smiles!r}: no HOMO/LUMO pair ({n_occ} occupied of {len(energies)} orbitals)"
            )
        homo, lumo = energies[n_occ - 1], energies[n_occ]
    else:  # spin-polarised: per channel, occupied means occupation > 0.5
        homo = max(e[o > 0.5].max() for e, o in zip(energies, occupations) if (o > 0.5).any())
        lumo = min(e[o <= 0.5].min() for e, o in zip(energies, occupations) if (o <= 0.5).any())
    dipole = np.asarray(result.get("dipole"), dtype=float)
    values = {
        "gap_ev": float((lumo - homo) * HARTREE_EV),
        "energy_hartree": float(result.get("energy")),
        "dipole_debye": float(np.linalg.norm(dipole) * E_BOHR_DEBYE),
    }
    meta = {
        "smiles": canonical,
        "charge": charge,
        "unpaired": unpaired,
        "preopt": used,
        "atoms": len(numbers),
    }
    return values, meta


@dataclass(frozen=True, kw_only=True)
class XtbOptions(InstrumentOptions):
    """``smiles_param``: the molecule parameter (default: the space's only one); ``method``,
    ``seed`` (of the conformer), ``preopt``, ``max_iter``, ``accuracy``: the calculation;
    ``workers`` processes of ``threads`` OpenMP threads each; ``timeout_s`` per molecule."""

    smiles_param: str | None = None
    method: Method = "GFN2-xTB"
    seed: int = 42
    preopt: Preopt = "mmff"
    max_iter: int = 250
    accuracy: float = 1.0
    workers: int = 2
    threads: int = 1
    timeout_s: float | None = 600.0

    def __post_init__(self) -> None:
        require(self.threads >= 1, f"threads must be an integer >= 1, got {self.threads!r}")
        require(self.workers >= 0, f"workers must be an integer >= 0, got {self.workers!r}")
        require(self.max_iter >= 1, f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        require(self.accuracy > 0, f"accuracy must be a number > 0, got {self.accuracy!r}")
        require(
            self.timeout_s is None or self.timeout_s > 0,
            f"timeout_s must be a number > 0, got {self.timeout_s!r}",
        )


def _smiles_param(name: str | None, space: Space) -> str:
    """The parameter holding the SMILES: ``name``, else the space's only molecule parameter."""
    if name is not None:
        params = {p.name: p for p in space.parameters}
        if not isinstance(params.get(name), (Molecule, Categorical)):
            options = [p.name for p in space.parameters if isinstance(p, (Molecule, Categorical))]
            raise InstrumentError(
                f"[instrument] smiles_param {name!r} is not a molecule (or "
                f"categorical) parameter of the space; candidates: {options}"
            )
        return name
    molecules = [p.name for p in space.molecules]
    if len(molecules) != 1:
        raise InstrumentError(
            "[instrument] (kind 'xtb'): set `smiles_param`, the space has "
            f"{len(molecules)} molecule parameters {molecules}"
            if molecules
            else "[instrument] (kind 'xtb') needs a molecule "
            "parameter in the space (or `smiles_param` naming one)"
        )
    return molecules[0]


class XtbInstrument(Instrument):
    """GFN-xTB on RDKit conformers, ``workers`` processes (one OpenMP thread each by default)."""

    kind = "xtb"
    Options = XtbOptions

    @classmethod
    def from_options(cls, options: XtbOptions, space: Space) -> XtbInstrument:
        return cls(
            _smiles_param(options.smiles_param, space),
            method=options.method,
            seed=options.seed,
            preopt=options.preopt,
            max_iter=options.max_iter,
            accuracy=options.accuracy,
            workers=options.workers,
            threads=options.threads,
            timeout_s=options.timeout_s,
        )

    def __init__(
        self,
        smiles_param: str,
        *,
        method: str = "GFN2-xTB",
        seed: int = 42,
        preopt: str = "mmff",
        max_iter: int = 250,
        accuracy: float = 1.0,
        workers: int = 2,
        threads: int = 1,
        timeout_s: float | None = 600.0,
    ) -> None:
        XtbOptions.from_config(
            {
                "smiles_param": smiles_param,
                "method": method,
                "seed": seed,
                "preopt": preopt,
                "max_iter": max_iter,
                "accuracy": accuracy,
                "workers": workers,
                "threads": threads,
                "timeout_s": timeout_s,
            },
            where="[instrument] (kind 'xtb')",
        )
        self.smiles_param = smiles_param
        self.options = {
            "smiles_param": smiles_param,
            "method": method,
            "seed": int(seed),
            "preopt": preopt,
            "max_iter": int(max_iter),
            "accuracy": float(accuracy),
        }
        self.threads = threads
        thread_env = {
            k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        }
        thread_env["OMP_STACKSIZE"] = os.environ.get("OMP_STACKSIZE", "256M")
        self._meta = {
            "instrument": "xtb",
            "method": method,
            "seed": int(seed),
            "tblite": package_version("tblite"),
            "rdkit": package_version("rdkit"),
        }
        self.runner = ProcessRunner(
            xtb_properties,
            self.options,
            workers=workers,
            timeout_s=timeout_s,
            env=thread_env,
            init="kiban.lab.instruments.xtb:warm_up",
            measures=XTB_MEASURES,
            meta=self._meta,
            name="xtb",
        )

    def measures(self) -> tuple[str, ...]:
        return XTB_MEASURES

    def run_batch(
        self, jobs: list[tuple[int, dict]], timeout_s: float | None = None
    ) -> Iterator[Outcome]:
        return self.runner.run(jobs, timeout_s)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **self._meta,
            **self.options,
            "workers": self.runner.workers,
            "threads": self.threads,
            "timeout_s": self.runner.timeout_s,
            "conformer": "RDKit ETKDGv3 (fixed seed) + force-field pre-optimisation",
        }

    def close(self) -> None:
        self.runner.close()
