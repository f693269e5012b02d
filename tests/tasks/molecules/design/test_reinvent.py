"""Tests for kiban/tasks/molecules/design/reinvent.py: REINVENT's augmented likelihood."""

from __future__ import annotations

import numpy as np
import pytest

from kiban.tasks.molecules.design.optimize import Oracle, heavy_atoms_oracle

from ._molecules import ASPIRIN


def test_sequence_log_likelihood_is_the_unpadded_sum_over_smiles_and_closing_tag(tiny_model_dir):
    import torch

    from kiban.generate import load_generator
    from kiban.tasks.molecules.design.reinvent import sequence_log_likelihood

    loaded = load_generator(tiny_model_dir)
    model, science = loaded.model, loaded.science
    batch = ["CCO", ASPIRIN, "c1ccccc1"]
    with torch.no_grad():
        got = sequence_log_likelihood(model, science, batch)
        for i, smiles in enumerate(batch):
            ids = torch.tensor([[science.eos_id, *science.encode(f"<mol>{smiles}</mol>")]])
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
            targets = ids[0, 1:]
            # position 0 predicts <mol> (the prompt): not counted
            expected = log_probs[1:].gather(-1, targets[1:, None]).sum()
            assert abs(float(got[i]) - float(expected)) < 1e-4
    assert (got < 0).all()


def test_augmented_likelihood_step_raises_the_scored_molecule_over_the_prior(tiny_model_dir):
    import copy

    import torch

    from kiban.generate import load_generator
    from kiban.tasks.molecules.design.reinvent import (
        augmented_likelihood_loss,
        sequence_log_likelihood,
    )

    loaded = load_generator(tiny_model_dir)
    agent, science = loaded.model, loaded.science
    prior = copy.deepcopy(agent)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    batch, scores = [ASPIRIN, "CCCC"], torch.tensor([1.0, 0.0])
    with torch.no_grad():
        prior_ll = sequence_log_likelihood(prior, science, batch)
    for _ in range(5):
        loss = augmented_likelihood_loss(
            sequence_log_likelihood(agent, science, batch), prior_ll, scores, sigma=20.0
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = sequence_log_likelihood(agent, science, batch)
    assert float(after[0] - prior_ll[0]) > 1.0  # scored 1: pulled up towards +20
    assert abs(float(after[1] - prior_ll[1])) < float(after[0] - prior_ll[0])  # anchored


def test_replay_keeps_the_best_and_draws_by_score():
    from kiban.tasks.molecules.design.reinvent import _Replay

    replay = _Replay(3)
    replay.add(["A", "B", "C", "D"], [0.1, 0.9, 0.5, 0.7])
    assert sorted(replay.items) == ["B", "C", "D"]
    rng = np.random.default_rng(0)
    drawn = [replay.sample(1, rng)[0][0] for _ in range(400)]
    assert drawn.count("B") > drawn.count("C")  # 0.9 vs 0.5 of the weight
    assert len(set(replay.sample(5, rng)[0])) == 3  # never more than it holds, no repeats
    assert _Replay(3).sample(2, rng) == ([], [])


def test_augmented_likelihood_loop_runs_end_to_end_and_checks_its_config(tiny_model_dir):
    from kiban.tasks.molecules.design.reinvent import (
        AugmentedConfig,
        optimize_augmented_likelihood,
    )

    oracle = Oracle(heavy_atoms_oracle, budget=20)
    config = AugmentedConfig(
        batch=16, max_new_tokens=24, max_rounds=4, replay=4, sigma=50.0, top_fraction=0.25
    )
    result = optimize_augmented_likelihood(oracle, str(tiny_model_dir), config=config, seed=0)
    assert result["method"] == "model-augmented"
    assert 1 <= result["rounds"] <= 4 and result["samples"] == 16 * result["rounds"]
    assert 0 < oracle.calls <= 20 and result["calls"] == oracle.calls
    assert result["top1"] == max(score for _, score in oracle.history)
    assert result["stopped"] in ("budget", "max_rounds")
    # sigma 0 and an agent equal to the prior: the first loss is exactly zero
    zero = optimize_augmented_likelihood(
        Oracle(heavy_atoms_oracle, budget=5),
        str(tiny_model_dir),
        config=AugmentedConfig(batch=8, max_new_tokens=24, max_rounds=1, sigma=0.0),
    )
    assert zero["loss_first"] == 0.0
    with pytest.raises(ValueError, match="'batch' parameter of AugmentedConfig must be >= 1"):
        AugmentedConfig(batch=0)
    with pytest.raises(ValueError, match="lr > 0"):
        AugmentedConfig(lr=0.0)
    with pytest.raises(ValueError, match="'top_fraction' parameter .* Got 0"):
        AugmentedConfig(top_fraction=0)


def test_diversity_filter_zeroes_repeats_and_full_scaffold_buckets():
    from kiban.tasks.molecules.design.reinvent import DiversityFilter

    diversity = DiversityFilter(bucket=2, min_score=0.5)
    # three benzene-scaffold molecules above min_score: the third finds the bucket full
    assert diversity.rewards(["c1ccccc1C", "c1ccccc1CC", "c1ccccc1CCC"], [0.9, 0.8, 0.7]) == [
        0.9,
        0.8,
        0.0,
    ]
    # a repeat in another spelling is 0; low scores never fill buckets; unreadable is 0
    assert diversity.rewards(["Cc1ccccc1", "c1ccccc1N", "C1CC"], [0.9, 0.3, 0.6]) == [0.0, 0.3, 0.0]
    assert diversity.rewards(["c1ccccc1O"], [0.6]) == [0.0]  # bucket still full
    assert diversity.rewards(["C1CCNCC1C"], [0.6]) == [0.6]  # another scaffold
    assert diversity.rewards(["", "CCCC"], [0.6, 0.6]) == [0.0, 0.6]  # "" is not a molecule


def test_top_rewarded_keeps_the_best_fraction():
    from kiban.tasks.molecules.design.reinvent import top_rewarded

    smiles, rewards = ["A", "B", "C", "D", "E"], [0.1, 0.9, 0.0, 0.5, 0.3]
    assert top_rewarded(smiles, rewards, 0.4) == (["B", "D"], [0.9, 0.5])
    assert top_rewarded(smiles, rewards, 0.25) == (["B", "D"], [0.9, 0.5])  # ceil(1.25) = 2
    assert top_rewarded(smiles, rewards, 0.01) == (["B"], [0.9])
    assert top_rewarded(smiles, rewards, 1.0) == (smiles, rewards)
