"""Space-filling and random designs: the initial Sobol design, the `sobol` and `random`
baselines, and the torch form of a space's constraints (shared with the BoTorch proposer).

A design point is drawn in "design coordinates", one per degree of freedom: a continuous
parameter one (its log scale honoured), an integer one (``floor(u * count)``: every integer
equally likely), a categorical one (the same for its choices), a composition of ``k``
components ``k - 1`` (sorted uniforms, whose spacings are uniform on the simplex). Linear
constraints are met by rejection; when the first 1024 Sobol points show an acceptance under 5 %
the whole stream switches to hit-and-run sampling of the constraint polytope (botorch's
`get_polytope_samples`), so the sequence stays the same however many points are asked for.
Molecules are not sampled in the cube: each point takes the next molecule of a seeded
permutation of the candidates (or of molecules sampled from the parameter's model).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from kiban.lab.proposers.base import (
    Observation,
    Proposer,
    ProposerError,
    check_n,
    clean,
    params_key,
)
from kiban.lab.proposers.molecules import canonical_candidates, model_sampler, sample_pool
from kiban.lab.space import Categorical, Composition, Continuous, Integer, Space

_PROBE = 1024  # Sobol points that decide rejection vs hit-and-run
_MIN_ACCEPT = 0.05
_MAX_DRAWS = 1 << 20  # rejection gives up after this many draws


# --------------------------------------------------------------------------------------------
# design coordinates


def design_dim(space: Space) -> int:
    """Degrees of freedom of the cube parameters (a composition of k components has k - 1)."""
    return sum(
        len(p.components) - 1 if isinstance(p, Composition) else 1 for p in space.cube_parameters
    )


def from_design(space: Space, u: np.ndarray) -> dict[str, Any]:
    """A design-coordinate vector in [0, 1)^design_dim to the cube parameters' values."""
    out: dict[str, Any] = {}
    at = 0
    for p in space.cube_parameters:
        if isinstance(p, Continuous):
            out[p.name] = p.decode(np.array([u[at]]))
            at += 1
        elif isinstance(p, Integer):
            count = p.high - p.low + 1
            out[p.name] = int(p.low + min(int(math.floor(u[at] * count)), count - 1))
            at += 1
        elif isinstance(p, Categorical):
            k = len(p.choices)
            out[p.name] = p.choices[min(int(math.floor(u[at] * k)), k - 1)]
            at += 1
        elif isinstance(p, Composition):
            k = len(p.components)
            cuts = np.sort(np.asarray(u[at : at + k - 1], dtype=float))
            fractions = np.diff(np.concatenate([[0.0], cuts, [1.0]]))
            out.update({c: float(f * p.total) for c, f in zip(p.components, fractions)})
            at += k - 1
    return out


def _feasible(space: Space, params: dict[str, Any]) -> bool:
    return all(c.satisfied(params) for c in space.constraints)


# --------------------------------------------------------------------------------------------
# constraints in BoTorch's form (unit-cube coordinates)


def torch_constraints(
    space: Space,
    margin: float = 1e-7,
) -> tuple[list[tuple[Any, Any, float]], list[tuple[Any, Any, float]]]:
    """``(inequality, equality)`` constraints over the unit cube in BoTorch's form:
    ``sum(coef * X[idx]) >= rhs`` (inequalities tightened by ``margin`` so that round-off
    after decoding cannot step over a bound) and ``sum(X[block]) == 1`` per composition."""
    import torch

    ineq = []
    for a, b in space.unit_constraints():
        if not a:
            continue
        idx = torch.tensor(sorted(a), dtype=torch.long)
        coef = torch.tensor([-a[i] for i in sorted(a)], dtype=torch.float64)
        ineq.append((idx, coef, float(-b + margin * max(1.0, abs(b)))))
    eq = []
    slices = space.slices()
    for p in space.cube_parameters:
        if isinstance(p, Composition):
            s = slices[p.name]
            idx = torch.arange(s.start, s.stop, dtype=torch.long)
            eq.append((idx, torch.ones(len(idx), dtype=torch.float64), 1.0))
    return ineq, eq


def _polytope_rows(space: Space, seed: int, chunk: int = 64) -> Iterator[dict[str, Any]]:
    """Hit-and-run samples of the constraint polytope in the unit cube, decoded; chunk ``j``
    seeded by ``seed`` and ``j`` (prefix-stable). Integers rounded: rows that then break a
    constraint are dropped."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit inside botorch
        from botorch.utils.sampling import get_polytope_samples

    ineq, eq = torch_constraints(space, margin=1e-6)
    bounds = torch.stack(
        [torch.zeros(space.dim, dtype=torch.float64), torch.ones(space.dim, dtype=torch.float64)]
    )
    molecules = {m.name: "" for m in space.molecules}
    for j in range(1 << 16):
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit inside botorch
            samples = get_polytope_samples(
                chunk,
                bounds,
                inequality_constraints=ineq or None,
                equality_constraints=eq or None,
                seed=(seed * 7919 + j) % (2**31),
                n_burnin=200,
                n_thinning=4,
            )
        for x in samples.numpy():
            params = space.from_unit(np.clip(x, 0.0, 1.0), molecules)
            for m in space.molecules:
                params.pop(m.name)
            if _feasible(space, params):
                yield params


def center_of(space: Space) -> dict[str, Any]:
    """The centre of the cube parameters, as Ax's centre point: the midpoint of each range (in
    log space for a log-scale parameter), the middle integer and the middle choice, equal parts
    of a composition."""
    u: list[float] = []
    for p in space.cube_parameters:
        if isinstance(p, Composition):
            k = len(p.components)
            u.extend(i / k for i in range(1, k))
        else:
            u.append(0.5)
    return from_design(space, np.asarray(u, dtype=float))


def cube_stream(
    space: Space,
    seed: int,
    kind: str = "sobol",
    *,
    center: bool = False,
) -> Iterator[dict[str, Any]]:
    """An endless sequence of feasible values for the cube parameters (no molecules):
    scrambled Sobol (``kind="sobol"``) or uniform random (``"random"``), by rejection, or
    hit-and-run when the constraints leave under 5 % of the cube. ``center``: the space's
    centre first (`center_of`; left out when it breaks a constraint)."""
    d = design_dim(space)
    if d == 0:
        while True:
            yield {}
    if center:
        middle = center_of(space)
        if _feasible(space, middle):
            yield middle
    if kind == "sobol":
        import torch

        engine = torch.quasirandom.SobolEngine(d, scramble=True, seed=int(seed) % (2**31))

        def draw(m: int) -> np.ndarray:
            return engine.draw(m, dtype=torch.float64).numpy()
    else:
        rng = np.random.default_rng(seed)

        def draw(m: int) -> np.ndarray:
            return rng.random((m, d))

    if space.constraints:
        import torch

        probe = torch.quasirandom.SobolEngine(d, scramble=True, seed=int(seed) % (2**31))
        rate = np.mean(
            [
                _feasible(space, from_design(space, u))
                for u in probe.draw(_PROBE, dtype=torch.float64).numpy()
            ]
        )
        if rate < _MIN_ACCEPT:
            yield from _polytope_rows(space, seed)
            return
    drawn = 0
    while drawn < _MAX_DRAWS:
        block = draw(256)
        drawn += len(block)
        for u in block:
            params = from_design(space, u)
            if _feasible(space, params):
                yield params
    raise ProposerError(
        "could not draw feasible points: the linear constraints leave "
        "(almost) nothing of the search space"
    )


# --------------------------------------------------------------------------------------------
# molecules in a design


def molecule_pools(
    space: Space, seed: int, needed: int, pools: dict[str, list[str]] | None = None
) -> dict[str, list[str]]:
    """Per molecule parameter, the ordered molecules a design walks through: a seeded
    permutation of the candidates, else molecules sampled from the model."""
    out: dict[str, list[str]] = {}
    for i, m in enumerate(space.molecules):
        if pools and m.name in pools:
            out[m.name] = list(pools[m.name])
        elif m.candidates:
            cands = canonical_candidates(m)
            if not cands:
                raise ProposerError(
                    f"molecule parameter {m.name!r}: no valid SMILES among its candidates"
                )
            perm = np.random.default_rng([int(seed) % (2**32), i]).permutation(len(cands))
            out[m.name] = [cands[j] for j in perm]
        else:
            out[m.name] = sample_pool(model_sampler(m), needed, seed + i)
        if not out[m.name]:
            raise ProposerError(
                f"molecule parameter {m.name!r}: no molecules to choose from "
                f"(the model {m.model!r} sampled no valid SMILES)"
            )
    return out


def design_stream(
    space: Space,
    seed: int,
    kind: str = "sobol",
    needed: int = 64,
    pools: dict[str, list[str]] | None = None,
    *,
    center: bool = False,
) -> Iterator[dict[str, Any]]:
    """Complete params: the cube stream zipped with each molecule pool (cycled)."""
    mols = molecule_pools(space, seed, needed, pools) if space.molecules else {}
    for j, params in enumerate(cube_stream(space, seed, kind, center=center)):
        for name, pool in mols.items():
            params[name] = pool[j % len(pool)]
        yield {k: params[k] for k in space.keys}


def initial_design(
    space: Space,
    n: int,
    seed: int,
    skip: int = 0,
    *,
    pools: dict[str, list[str]] | None = None,
    center: bool = False,
) -> list[dict]:
    """Points ``skip .. skip + n - 1`` of the campaign's scrambled Sobol design (opened by the
    centre of the space when ``center``): deterministic given ``seed``, so a resumed campaign
    (``skip`` = points drawn so far) continues it.

    With `same_in_batch`, the ``n`` points are one batch: the later ones take the first one's
    shared values (a point that then breaks a constraint is passed over), so the sequence is
    only prefix-stable per batch. ``pools`` replaces a molecule parameter's candidates (tests,
    the generative proposer)."""
    check_n(n)
    if skip < 0:
        raise ProposerError(f"skip must be >= 0, got {skip}")
    stream = design_stream(space, seed, "sobol", needed=skip + n, pools=pools, center=center)
    for _ in range(skip):
        next(stream)
    shared = shared_keys(space)
    out: list[dict] = []
    fixed: dict[str, Any] | None = None
    for tries, params in enumerate(stream):
        if fixed:
            params = {**params, **fixed}
            if not _feasible(space, params):
                if tries > 100_000:
                    raise ProposerError(
                        "same_in_batch: no further design point is feasible "
                        "with the batch's shared values"
                    )
                continue
        elif shared:
            fixed = {k: params[k] for k in shared}
        out.append(clean(space, params))
        if len(out) == n:
            return out
    raise AssertionError("unreachable: the design stream is endless")


# --------------------------------------------------------------------------------------------
# batches from a stream: no repeats, same_in_batch honoured


def shared_keys(space: Space) -> list[str]:
    """The flat keys that every member of a batch shares (`same_in_batch`)."""
    keys: list[str] = []
    for p in space.parameters:
        if p.name in space.same_in_batch:
            keys.extend(p.components if isinstance(p, Composition) else [p.name])
    return keys


def batch_from_stream(
    space: Space,
    stream: Iterator[dict[str, Any]],
    n: int,
    seen: set,
    first: dict[str, Any] | None = None,
    limit: int = 100_000,
) -> list[dict]:
    """The next ``n`` points of ``stream`` that are new (not in ``seen``) and, after the
    first point of the batch (or ``first``), share its `same_in_batch` values."""
    shared = shared_keys(space)
    fixed = {k: first[k] for k in shared} if first is not None and shared else None
    out: list[dict] = []
    for tries, params in enumerate(stream):
        if tries >= limit:
            break
        if fixed:
            params = {**params, **fixed}
            if not _feasible(space, params):
                continue
        key = params_key(space, params)
        if key in seen:
            continue
        seen.add(key)
        out.append(clean(space, params))
        if fixed is None and shared:
            fixed = {k: params[k] for k in shared}
        if len(out) == n:
            return out
    raise ProposerError(
        f"only {len(out)} new points could be found of the {n} asked "
        "(all candidates observed or pending?)"
    )


def seen_keys(space: Space, observed: list[Observation], pending: list[dict]) -> set:
    return {params_key(space, o.params) for o in observed} | {params_key(space, p) for p in pending}


def _stream_limit(space: Space, n: int, seen: set) -> int:
    """How far a stream is followed before giving up (molecule pools cycle for ever)."""
    return 10 * (n + len(seen)) + 10_000


class SobolProposer(Proposer):
    """Scrambled Sobol, continuing the campaign's sequence (seeded by the campaign's seed)
    past the points already observed or pending; repeats are skipped."""

    kind = "sobol"

    def propose(
        self, space: Space, observed: list[Observation], pending: list[dict], n: int, seed: int
    ) -> list[dict]:
        check_n(n)
        seen = seen_keys(space, observed, pending)
        drawn = len(observed) + len(pending)
        stream = design_stream(space, self.seed, "sobol", needed=drawn + n, center=self.center)
        for _ in range(drawn):
            next(stream)
        return batch_from_stream(space, stream, n, seen, limit=_stream_limit(space, n, seen))


class RandomProposer(Proposer):
    """Independent uniform draws (seeded by each call's ``seed``); repeats are skipped."""

    kind = "random"

    def propose(
        self, space: Space, observed: list[Observation], pending: list[dict], n: int, seed: int
    ) -> list[dict]:
        check_n(n)
        seen = seen_keys(space, observed, pending)
        pools = None
        if space.molecules:  # a fresh random order of the molecules per call
            rng = np.random.default_rng([int(seed) % (2**32), 7])
            pools = {
                name: [pool[i] for i in rng.permutation(len(pool))]
                for name, pool in molecule_pools(space, seed, n + len(seen)).items()
            }
        stream = design_stream(space, seed, "random", pools=pools)
        return batch_from_stream(space, stream, n, seen, limit=_stream_limit(space, n, seen))
