"""The acquisition optimiser of one botorch proposal call: fit the surrogate, build the
acquisition, then choose ``n`` points greedily (each conditioned on the ones before), over the
cube (continuous, mixed, enumerated discrete, constrained), over a molecule pool, or both."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kiban.lab.proposers.base import Observation, ProposerError, clean, params_key
from kiban.lab.proposers.bo.acquisition import exploit_acquisition, make_acquisition
from kiban.lab.proposers.bo.layout import DTYPE, Layout, canonical, used_molecules
from kiban.lab.proposers.bo.surrogate import (
    fit_model,
    marginal_posterior,
    utility_thresholds,
    warp_outcomes,
    winsorize,
)
from kiban.lab.proposers.design import cube_stream, shared_keys, torch_constraints
from kiban.lab.space import Space

if TYPE_CHECKING:
    from kiban.lab.proposers.bo.proposer import BotorchProposer

MAX_CHOICES_ENUMERATE = 10_000  # BoTorch/Ax: fully discrete spaces evaluated exhaustively


class _Repeat(Exception):
    """The exploitation acquisition's best is observed or pending (or infeasible as rounded)."""


class BatchOptimiser:
    """One call's model, acquisition and greedy selection of ``n`` points."""

    def __init__(
        self,
        proposer: BotorchProposer,
        space: Space,
        observed: list[Observation],
        pending: list[dict],
        seed: int,
        seen: set,
        first: dict | None,
    ) -> None:
        o = proposer.options_for(space)
        self.o, self.space, self.seed, self.seen = o, space, seed, seen
        self.layout = L = Layout(space, int(o.fp_bits), int(o.fp_radius))
        self.rng = np.random.default_rng(seed)
        # molecule pool (excluding what was measured or is pending, where a repeat is a repeat)
        self.pool: list[str] = []
        if L.mol is not None:
            pool = proposer.molecule_pool(space, seed)
            if L.dim == 0 or o.new_molecules_only:
                used = used_molecules(space, observed, pending)
                pool = [s for s in pool if s not in used]
            if not pool:
                raise ProposerError(
                    f"molecule parameter {L.mol.name!r}: no new molecules to "
                    "propose (all candidates observed or pending)"
                )
            self.pool = pool
        # data
        self.X = L.encode([ob.params for ob in observed])
        Y = np.stack([space.utilities(ob.values) for ob in observed])
        Y = warp_outcomes(winsorize(Y, utility_thresholds(space)), str(o.warp))
        self.Y = torch.as_tensor(Y, dtype=DTYPE)
        self.X_pending = L.encode(pending)
        self.model = fit_model(L, self.X, self.Y)
        self.acqf = make_acquisition(self.model, space, self.X, int(o.mc_samples), seed)
        self.exploit = exploit_acquisition(
            self.model, len(observed), int(o.exploit_after), int(o.mc_samples), seed
        )
        self._exploiting = False
        self._chosen_by: Any = self.acqf  # the acquisition that chose the last point (`step`)
        self.ineq, self.eq = torch_constraints(space)
        self.bounds = torch.stack([torch.zeros(L.D, dtype=DTYPE), torch.ones(L.D, dtype=DTYPE)])
        # same_in_batch carried over from a design point that opened the batch
        self.fixed: dict[int, float] = {}
        self.fixed_mol: str | None = None
        self._raw: torch.Tensor | None = None
        if first is not None:
            self._freeze(L.encode([first])[0], first)

    # -- the greedy loop
    def run(self, n: int) -> list[dict]:
        chosen: list[torch.Tensor] = []
        out: list[dict] = []
        #: the model's prediction of each point chosen (`predict`), in `run`'s order
        self.predictions: list[dict[str, Any] | None] = []
        self._check_pool(n)
        for _ in range(n):
            pend = torch.cat([self.X_pending, *[c.unsqueeze(0) for c in chosen]])
            for acqf in (self.acqf, self.exploit):
                if acqf is not None:
                    acqf.set_X_pending(pend if len(pend) else None)
            x, params = self.step()
            self.predictions.append(self.predict(x, self._chosen_by))
            self.seen.add(params_key(self.space, params))
            chosen.append(x)
            out.append(params)
            if len(out) == 1 and not self.fixed and self.fixed_mol is None:
                self._freeze(x, params)
        return out

    def predict(self, x: torch.Tensor, acqf: Any = None) -> dict[str, Any]:
        """What the model expects of the chosen point ``x``: per objective the posterior mean
        and standard deviation in the objective's own units, and the value, given the points
        already in the batch (pending), of ``acqf``: the acquisition that chose ``x`` (with
        ``exploit_after`` reached, qSimpleRegret; default: qLogNEI's). The GP models utilities (a minimised
        objective negated); with ``warp = "power"`` or a ``target`` goal they cannot be mapped
        back to the objective's units, and mean and sd are None."""
        with torch.no_grad():
            posterior = self.model.posterior(x.reshape(1, -1))
            mean = posterior.mean.reshape(-1).tolist()
            sd = posterior.variance.clamp_min(0).sqrt().reshape(-1).tolist()
            acqf = self.acqf if acqf is None else acqf
            acq = float(acqf(x.reshape(1, 1, -1)).reshape(-1)[0])
        objectives: dict[str, dict[str, float | None]] = {}
        for j, o in enumerate(self.space.objectives):
            back = str(self.o.warp) == "none" and o.goal in ("max", "min")
            sign = 1.0 if o.goal == "max" else -1.0
            objectives[o.name] = {
                "mean": sign * mean[j] if back else None,
                "sd": sd[j] if back else None,
            }
        return {
            "model": "GP",
            "acquisition": type(acqf).__name__,
            "acquisition_value": acq,
            "objectives": objectives,
        }

    def _freeze(self, x: torch.Tensor, params: dict) -> None:
        if not self.space.same_in_batch:
            return
        self.fixed = self.layout.fixed_of(x)
        mol = self.layout.mol
        if mol is not None and mol.name in self.space.same_in_batch:
            self.fixed_mol = canonical(params[mol.name])

    def step(self) -> tuple[torch.Tensor, dict]:
        """One point: the exploitation acquisition's when it is on and finds a new feasible
        point, else qLogNEI's (a repeat of what was measured teaches nothing)."""
        if self.exploit is not None:
            explore, self.acqf, self._exploiting = self.acqf, self.exploit, True
            try:
                self._chosen_by = self.exploit
                return self._step()
            except _Repeat:
                pass
            finally:
                self.acqf, self._exploiting = explore, False
        self._chosen_by = self.acqf
        return self._step()

    def _step(self) -> tuple[torch.Tensor, dict]:
        L = self.layout
        if L.mol is None:
            x = self.cube_step({})
            return self.accept(x, None)
        if L.dim == 0:
            return self.molecule_step()
        return self.mixed_step()

    def value(self, X: torch.Tensor) -> torch.Tensor:
        """Acquisition values of single points (``N x D``), in chunks."""
        with torch.no_grad():
            return (
                torch.cat([self.acqf(X[i : i + 512].unsqueeze(1)) for i in range(0, len(X), 512)])
                if len(X)
                else torch.zeros(0)
            )

    def accept(self, x: torch.Tensor, smiles: str | None) -> tuple[torch.Tensor, dict]:
        """Decode ``x``; a point that breaks a constraint after rounding is repaired, a repeat
        replaced by the best of a few random feasible new points."""
        params = self.layout.decode(x, smiles)
        if self.space.check_params(params) or params_key(self.space, params) in self.seen:
            if self._exploiting:
                raise _Repeat
            x, params = self.repair(x, smiles)
        return x.reshape(-1), params

    def repair(self, x: torch.Tensor, smiles: str | None) -> tuple[torch.Tensor, dict]:
        L = self.layout
        options: list[torch.Tensor] = []
        relaxed = list(L.int_relaxed)[:6]
        for ups in itertools.product((0, 1), repeat=len(relaxed)):  # floor/ceil roundings
            y = x.clone().reshape(-1)
            for c, up in zip(relaxed, ups):
                steps = L.int_relaxed[c]
                y[c] = (math.floor(float(y[c]) * steps + 1e-9) + up) / steps
            options.append(y.clamp(0, 1))
        shared = shared_keys(self.space)
        first = L.decode(x, smiles) if self.fixed or self.fixed_mol else None
        stream = cube_stream(self.space, self.seed + 1 + len(self.seen), "random")
        for params in itertools.islice(stream, 2000):
            if smiles is not None:
                params[L.mol.name] = smiles
            if first is not None:
                params = {**params, **{k: first[k] for k in shared}}
            params = {k: params[k] for k in self.space.keys}
            if (
                not self.space.check_params(params)
                and params_key(self.space, params) not in self.seen
            ):
                options.append(L.encode([params])[0])
            if len(options) >= 64:
                break
        X = torch.stack(options)
        best_x, best_params, best_v = None, None, -math.inf
        values = self.value(X)
        for y, v in zip(X, values):
            params = L.decode(y, smiles)
            if self.space.check_params(params) or params_key(self.space, params) in self.seen:
                continue
            if float(v) > best_v:
                best_x, best_params, best_v = y, params, float(v)
        if best_x is None:
            raise ProposerError(
                "could not find a new feasible point to propose (is the space "
                "exhausted by the observed and pending points?)"
            )
        return best_x, best_params

    # -- continuous / mixed cube
    def _constraints(self, fixed: dict[int, float]) -> tuple[list | None, list | None]:
        """The constraints with the fixed columns substituted (fully fixed ones dropped)."""

        def reduce(cons: list, eq: bool) -> list:
            out = []
            for idx, coef, rhs in cons:
                keep = [i for i, c in enumerate(idx.tolist()) if c not in fixed]
                rhs = rhs - sum(
                    float(coef[i]) * fixed[c] for i, c in enumerate(idx.tolist()) if c in fixed
                )
                if keep:
                    out.append((idx[keep], coef[keep], rhs))
            return out

        ineq, eq = reduce(self.ineq, False), reduce(self.eq, True)
        return ineq or None, eq or None

    def _opt_kwargs(self) -> dict[str, Any]:
        o = self.o
        return dict(num_restarts=int(o.num_restarts), raw_samples=int(o.raw_samples))

    def cube_step(self, fixed: dict[int, float], smiles: str | None = None) -> torch.Tensor:
        """One point maximising the acquisition over the cube (``fixed`` columns held)."""
        from botorch.optim.optimize_mixed import optimize_acqf_mixed_alternating

        L = self.layout
        fixed = {**self.fixed, **fixed}
        ineq, eq = self._constraints(fixed)
        grids = {c: g for c, g in L.int_grids.items() if c not in fixed}
        blocks = [b for b in L.cat_blocks if b[0] not in fixed]
        free_cont = [c for c in L.cont_cols + list(L.int_relaxed) if c not in fixed]
        combos = math.prod(len(g) for g in grids.values()) * math.prod(len(b) for b in blocks)
        options = {"maxiter": int(self.o.maxiter), "batch_limit": 20, "init_batch_limit": 32}
        if not free_cont and combos <= MAX_CHOICES_ENUMERATE:
            return self._enumerate(fixed, grids, blocks, smiles)
        if combos > 1 and combos <= int(self.o.max_enumerate):
            # optimize_acqf_mixed, written out so that each combination gets its own
            # constraints and (when constrained) cheap feasible starting points
            best_x, best_v = None, -math.inf
            for f in self._combos(grids, blocks, fixed):
                if not self._lp_feasible(f):
                    continue
                c_ineq, c_eq = self._constraints(f)
                x = self._optimize(f, c_ineq, c_eq, options)
                v = float(self.value(x.reshape(1, -1))[0])
                if v > best_v:
                    best_x, best_v = x, v
            if best_x is None:
                raise ProposerError(
                    "no combination of the discrete parameters satisfies the linear constraints"
                )
            return best_x
        if grids:
            x, _ = optimize_acqf_mixed_alternating(
                self.acqf,
                self.bounds,
                discrete_dims=grids,
                q=1,
                fixed_features=fixed or None,
                inequality_constraints=ineq,
                equality_constraints=eq,
                post_processing_func=L.round,
                options={"batch_limit": 20, "init_batch_limit": 32},
                **self._opt_kwargs(),
            )
            return x
        return self._optimize(fixed, ineq, eq, options)

    def _optimize(
        self, fixed: dict[int, float], ineq: list | None, eq: list | None, options: dict[str, Any]
    ) -> torch.Tensor:
        """``optimize_acqf`` over the cube with ``fixed`` columns held. Under linear
        constraints BoTorch runs SLSQP, and by default on all restarts at once as one problem
        (the sum of their acquisition values): a step that helps a poor restart a lot may then
        move the best one to a worse point, and SLSQP's line search is not monotone anyway.
        So each restart is optimised on its own, and the best starting point is kept when no
        restart ends above it (measured on photo_*: before, 4-6 % of the steps ended below
        their best start, by ~2 in log-acquisition)."""
        from botorch.optim import optimize_acqf

        start = self._initial_conditions(fixed, ineq, eq)
        if start is not None:
            options = {**options, "max_optimization_problem_aggregation_size": 1}
        x, _ = optimize_acqf(
            self.acqf,
            self.bounds,
            q=1,
            fixed_features=fixed or None,
            inequality_constraints=ineq,
            equality_constraints=eq,
            batch_initial_conditions=start,
            post_processing_func=self.layout.round,
            options=options,
            **self._opt_kwargs(),
        )
        if start is not None:
            start = self.layout.round(start.reshape(len(start), -1))
            v0 = self.value(start)
            if float(v0.max()) > float(self.value(x.reshape(1, -1))[0]):
                x = start[int(v0.argmax())].unsqueeze(0)
        return x

    def _initial_conditions(
        self, fixed: dict[int, float], ineq: list | None, eq: list | None
    ) -> torch.Tensor | None:
        """Starting points under linear constraints: BoTorch would draw them by hit-and-run
        (seconds per call); the design's feasible Sobol points, scored, are as good here."""
        if not ineq and not eq:
            return None
        from botorch.optim.initializers import initialize_q_batch

        L = self.layout
        if self._raw is None:
            rows = itertools.islice(
                cube_stream(self.space, self.seed, "sobol"), int(self.o.raw_samples)
            )
            self._raw = torch.as_tensor(
                np.stack([self.space.to_unit(p) for p in rows]), dtype=DTYPE
            )
        R = torch.zeros(len(self._raw), L.D, dtype=DTYPE)
        R[:, : L.dim] = self._raw
        for c, v in fixed.items():
            R[:, c] = v
        X, _ = initialize_q_batch(
            R.unsqueeze(1), self.value(R), min(int(self.o.num_restarts), len(R))
        )
        return X

    def _combos(
        self, grids: dict[int, list[float]], blocks: list[list[int]], fixed: dict[int, float]
    ) -> list[dict[int, float]]:
        axes: list[list[dict[int, float]]] = [[{c: v} for v in g] for c, g in grids.items()]
        for b in blocks:
            axes.append([{c: float(c == hot) for c in b} for hot in b])
        out = []
        for parts in itertools.product(*axes):
            f = dict(fixed)
            for part in parts:
                f.update(part)
            out.append(f)
        return out

    def _lp_feasible(self, fixed: dict[int, float]) -> bool:
        """Whether the linear constraints leave room once ``fixed`` columns are set."""
        ineq, eq = self._constraints(fixed)
        if not ineq and not eq:
            return True
        from scipy.optimize import linprog

        free = [c for c in range(self.layout.dim) if c not in fixed]
        pos = {c: i for i, c in enumerate(free)}

        def rows(cons: list | None) -> tuple[np.ndarray | None, np.ndarray | None]:
            if not cons:
                return None, None
            A = np.zeros((len(cons), len(free)))
            b = np.zeros(len(cons))
            for r, (idx, coef, rhs) in enumerate(cons):
                for c, a in zip(idx.tolist(), coef.tolist()):
                    A[r, pos[c]] = a
                b[r] = rhs
            return A, b

        A_ub, b_ub = rows(ineq)
        A_eq, b_eq = rows(eq)
        if not free:
            return True
        res = linprog(
            np.zeros(len(free)),
            A_ub=None if A_ub is None else -A_ub,
            b_ub=None if b_ub is None else -b_ub,
            A_eq=A_eq,
            b_eq=b_eq,
            bounds=[(0, 1)] * len(free),
            method="highs",
        )
        return bool(res.status == 0)

    def _enumerate(
        self,
        fixed: dict[int, float],
        grids: dict[int, list[float]],
        blocks: list[list[int]],
        smiles: str | None,
    ) -> torch.Tensor:
        """Fully discrete: score every feasible new combination (Ax's optimize_acqf_discrete)."""
        L = self.layout
        rows, base = [], torch.zeros(L.D, dtype=DTYPE)
        for c, v in fixed.items():
            base[c] = v
        for f in self._combos(grids, blocks, {}):
            x = base.clone()
            for c, v in f.items():
                x[c] = v
            params = L.decode(x, smiles)
            if (
                not self.space.check_params(params)
                and params_key(self.space, params) not in self.seen
            ):
                rows.append(x)
        if not rows:
            raise ProposerError(
                "every feasible combination of the discrete parameters is "
                "already observed or pending"
            )
        X = torch.stack(rows)
        return X[int(self.value(X).argmax())].unsqueeze(0)

    # -- molecules
    def _check_pool(self, n: int) -> None:
        """A molecule-only space with fewer new candidates than asked for is refused up front
        with the numbers (the greedy loop would fail at the first point past the last one)."""
        L = self.layout
        if L.mol is None or L.dim != 0 or self.fixed_mol is not None:
            return
        left = sum(params_key(self.space, {L.mol.name: s}) not in self.seen for s in self.pool)
        total = len(L.mol.candidates) or len(self.pool)
        if left < n:
            raise ProposerError(
                f"molecule parameter {L.mol.name!r}: asked for {n} proposals, but only {left} "
                f"of the {total} candidates are neither observed nor pending "
                f"(ask for at most {left})"
            )

    def molecule_step(self) -> tuple[torch.Tensor, dict]:
        L = self.layout
        if self.fixed_mol is not None:
            smiles = self.fixed_mol
        else:
            pool = [
                s for s in self.pool if params_key(self.space, {L.mol.name: s}) not in self.seen
            ]
            if not pool:
                raise ProposerError(
                    f"molecule parameter {L.mol.name!r}: candidates exhausted "
                    "(all observed or pending)"
                )
            pool = self._subsample(pool)
            X = L.encode([{L.mol.name: s} for s in pool])
            keep = self._screen(X)
            smiles = pool[int(keep[int(self.value(X[keep]).argmax())])]
        x = L.encode([{L.mol.name: smiles}])[0]
        return x, clean(self.space, {L.mol.name: smiles})

    def _screen(self, X: torch.Tensor) -> torch.Tensor:
        """Indices of the candidates worth the (costly) qLogNEI: all of them for small pools
        or several objectives; else the ``screen`` best by an optimistic bound (mean + 2 sd)
        from the marginal posterior, computed in one pass (one N × n kernel block, no joint
        posterior per candidate)."""
        k = int(self.o.screen)
        if k <= 0 or len(X) <= k or self.Y.shape[-1] != 1:
            return torch.arange(len(X))
        mean, var = marginal_posterior(self.model, X)
        return torch.topk(mean + 2.0 * var.clamp_min(0).sqrt(), k).indices

    def _subsample(self, pool: list[str]) -> list[str]:
        k = int(self.o.max_candidates)
        if len(pool) <= k:
            return pool
        return [pool[i] for i in sorted(self.rng.choice(len(pool), k, replace=False))]

    def mixed_step(self) -> tuple[torch.Tensor, dict]:
        """Molecule and conditions: score (molecule, condition) pairs over the pool and a few
        Sobol conditions plus the best observed ones, then optimise the conditions of the best
        pair with its fingerprint held."""
        L = self.layout
        pool = [self.fixed_mol] if self.fixed_mol is not None else self._subsample(self.pool)
        conds = self._conditions()
        fps = torch.as_tensor(L.fingerprints(pool), dtype=DTYPE)
        best_v, best = -math.inf, None
        for i in range(0, len(pool), max(1, 4096 // len(conds))):
            block = fps[i : i + max(1, 4096 // len(conds))]
            X = torch.cat(
                [conds.repeat(len(block), 1), block.repeat_interleave(len(conds), dim=0)], dim=1
            )
            v = self.value(X)
            j = int(v.argmax())
            if float(v[j]) > best_v:
                best_v, best = float(v[j]), (i + j // len(conds), X[j])
        smiles = pool[best[0]]
        fp_fixed = {c: float(v) for c, v in zip(L.fp_cols, fps[best[0]].tolist())}
        try:
            x = self.cube_step(fp_fixed, smiles)
            if float(self.value(x.reshape(1, -1))[0]) < best_v:
                x = best[1].unsqueeze(0)
        except ProposerError:
            x = best[1].unsqueeze(0)
        return self.accept(x, smiles)

    def _conditions(self) -> torch.Tensor:
        """Cube points to pair with molecules: Sobol (same_in_batch columns held) and the
        observed conditions of the best observations."""
        L = self.layout
        k = int(self.o.cube_samples)
        rows = []
        for params in itertools.islice(cube_stream(self.space, self.seed, "sobol"), 20 * k):
            u = self.space.to_unit({**params, **{m.name: "" for m in self.space.molecules}})
            for c, v in self.fixed.items():
                u[c] = v
            rows.append(torch.as_tensor(u, dtype=DTYPE))
            if len(rows) >= k:
                break
        score = self.Y.sum(-1)
        for i in torch.argsort(score, descending=True)[: max(1, k // 2)].tolist():
            u = self.X[i, : L.dim].clone()
            for c, v in self.fixed.items():
                u[c] = v
            rows.append(u)
        return torch.stack(rows)
