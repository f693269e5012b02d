"""Tests for kiban/tasks/molecules/optimize.py and conditioned.py."""

from __future__ import annotations

import random

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import QED, Crippen, Descriptors, rdMolDescriptors

from kiban.tasks.molecules.conditioned import (
    PropertyRange,
    RangeSpec,
    Reference,
    compute_properties,
    conditioning_prompt,
    draw_targets,
    in_range,
    parse_prefix,
    score_samples,
)
from kiban.tasks.molecules.optimize import (
    CELECOXIB,
    BudgetExhausted,
    GAConfig,
    LoopConfig,
    Oracle,
    crossover,
    finetune_steps,
    graph_ga,
    heavy_atoms_oracle,
    mpo_oracle,
    mutate,
    optimize_with_model,
    similarity_oracle,
    top_k_auc,
    window_desirability,
)

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
START = ["CCO", "CCN", "c1ccccc1", "CC(=O)O", "CCCC", "C1CCCCC1", "CNC", "OCCO", "CC(C)C",
         "c1ccncc1", "CC(=O)N", "COC", "CCCl", "C1CCOC1", "CC#N", "NCCO", "c1ccoc1", "CCS",
         "CC=O", "OC(=O)CC(=O)O"]


# --- oracle -------------------------------------------------------------------------------------
def test_oracle_counts_calls_and_caches_by_canonical_smiles():
    seen = []
    oracle = Oracle(lambda mol: seen.append(Chem.MolToSmiles(mol)) or 0.5, budget=3)
    assert oracle("OCC") == 0.5
    assert oracle("CCO") == 0.5  # the same molecule spelled differently: cached, free
    assert oracle("C(O)C") == 0.5
    assert oracle("not a smiles") is None  # invalid: never scored, free
    assert (oracle.calls, seen) == (1, ["CCO"])
    assert oracle.score_many(["CCN", "c1ccccc1", "CCC", "OCC"]) == [0.5, 0.5, None, 0.5]
    assert oracle.calls == 3 and oracle.exhausted
    assert [s for s, _ in oracle.history] == ["CCO", "CCN", "c1ccccc1"]
    assert seen == ["CCO", "CCN", "c1ccccc1"]
    assert oracle("OCC") == 0.5  # cached molecules are answered after the budget
    with pytest.raises(BudgetExhausted, match="budget of 3 calls"):
        oracle("CCC")


def test_oracle_rejects_a_bad_budget():
    with pytest.raises(ValueError, match="Got 0 instead"):
        Oracle(heavy_atoms_oracle, budget=0)


def test_oracles_match_rdkit():
    celecoxib = Chem.MolFromSmiles(CELECOXIB)
    assert similarity_oracle(CELECOXIB)(celecoxib) == 1.0
    assert 0.0 < similarity_oracle(CELECOXIB)(Chem.MolFromSmiles(ASPIRIN)) < 0.3
    aspirin = Chem.MolFromSmiles(ASPIRIN)
    logp, tpsa = Crippen.MolLogP(aspirin), rdMolDescriptors.CalcTPSA(aspirin)  # 1.31, 63.6
    expected = (QED.qed(aspirin) * np.exp(-0.5 * ((2.0 - logp) / 0.5) ** 2) * 1.0) ** (1 / 3)
    assert mpo_oracle(aspirin) == pytest.approx(expected, rel=1e-12)
    assert window_desirability(2.5, 2.0, 3.0, 0.5) == 1.0
    assert window_desirability(3.5, 2.0, 3.0, 0.5) == pytest.approx(np.exp(-0.5 * 1.0))
    assert 40 <= tpsa <= 80


# --- the metric ---------------------------------------------------------------------------------
def test_top_k_auc_on_hand_made_histories():
    # readings after 2 calls (top-1 = 0.4) and at the end (0.8), trapezoids from 0:
    # (2 * 0.2 + 2 * 0.6) / 4
    assert top_k_auc([0.2, 0.4, 0.1, 0.8], budget=4, k=1, every=2) == pytest.approx(0.4)
    # stopped after 3 of 10 calls: top-2 mean 0.75 at 2 and 3 calls, then held flat:
    # (0.75 + 0.75 + 7 * 0.75) / 10
    assert top_k_auc([0.5, 1.0, 0.0], budget=10, k=2, every=2) == pytest.approx(0.675)
    # a perfect run read after every call loses half a call to the ramp from 0
    assert top_k_auc([1.0] * 4, budget=4, k=10, every=1) == pytest.approx(3.5 / 4)
    # fewer than k scores: the mean of those there are
    assert top_k_auc([0.3, 0.9], budget=2, k=10, every=5) == pytest.approx(0.6 / 2)
    # calls beyond the budget are ignored
    assert top_k_auc([0.0, 0.0, 1.0], budget=2, k=1, every=1) == 0.0
    assert top_k_auc([], budget=5) == 0.0


def test_top_k_auc_grows_with_earlier_finds():
    late = [0.1] * 90 + [1.0] * 10
    early = [1.0] * 10 + [0.1] * 90
    assert top_k_auc(early, 100, every=10) > top_k_auc(late, 100, every=10)


# --- graph GA -----------------------------------------------------------------------------------
def test_mutation_and_crossover_give_valid_molecules():
    rng = random.Random(0)
    parents = [Chem.MolFromSmiles(s) for s in (CELECOXIB, ASPIRIN, "CCN(CC)CCOc1ccccc1")]
    children = [mutate(parents[i % 3], rng) for i in range(30)]
    children += [crossover(parents[i % 3], parents[(i + 1) % 3], rng) for i in range(30)]
    made = [c for c in children if c is not None]
    assert len(made) >= 50
    for child in made:
        smiles = Chem.MolToSmiles(child)
        assert Chem.MolFromSmiles(smiles) is not None and "." not in smiles
    parent_smiles = {Chem.MolToSmiles(p) for p in parents}
    assert len({Chem.MolToSmiles(c) for c in made} - parent_smiles) >= 30


def test_graph_ga_improves_a_trivial_objective():
    oracle = Oracle(heavy_atoms_oracle, budget=300)
    result = graph_ga(oracle, START, config=GAConfig(population_size=20, offspring_size=40),
                      seed=0)
    assert oracle.calls == 300 and result["calls"] == 300
    start_best = max(heavy_atoms_oracle(Chem.MolFromSmiles(s)) for s in START)  # 0.07
    assert result["top1"] >= start_best + 0.05
    assert all(Chem.MolFromSmiles(s) is not None for s, _ in oracle.history)
    assert result["top10_auc"] > 0.07


# --- conditioned generation ---------------------------------------------------------------------
def test_properties_and_range_checks_on_known_molecules():
    aspirin = compute_properties(Chem.MolFromSmiles(ASPIRIN))
    mol = Chem.MolFromSmiles(ASPIRIN)
    assert aspirin["qed"] == QED.qed(mol) and aspirin["mw"] == Descriptors.MolWt(mol)
    assert aspirin["logp"] == Crippen.MolLogP(mol)
    assert aspirin["tpsa"] == pytest.approx(63.6, abs=0.01)
    assert aspirin["mw"] == pytest.approx(180.159, abs=0.001)
    assert in_range(ASPIRIN, RangeSpec((PropertyRange("mw", 170, 190),))) is True
    assert in_range(ASPIRIN, RangeSpec((PropertyRange("mw", 170, 190),
                                        PropertyRange("tpsa", high=60)))) is False
    assert in_range(ASPIRIN, RangeSpec((PropertyRange("tpsa", low=63.7),))) is False
    assert in_range(ASPIRIN, RangeSpec((PropertyRange("tpsa", 63.5, 63.7),
                                        PropertyRange("qed", high=0.56)))) is True  # QED 0.550
    assert in_range("CCO", RangeSpec((PropertyRange("tpsa", 20.23, 20.23),))) is True  # inclusive
    assert in_range("C1CC", RangeSpec((PropertyRange("qed", low=0),))) is None
    assert RangeSpec((PropertyRange("mw", 250, 300), PropertyRange("tpsa", high=60))).name == \
        "MW in [250, 300] and TPSA <= 60"
    with pytest.raises(ValueError, match="Got 'pka' instead"):
        PropertyRange("pka", 1, 2)


def test_prompt_round_trip_and_target_draws():
    targets = {"qed": 0.94123, "logp": -1.2345, "mw": 345.678, "tpsa": 60.0, "sa": 2.5}
    prompt = conditioning_prompt(targets)
    assert prompt == ("QED <num>0.9412</num>, logP <num>-1.234</num>, MW <num>345.7</num>, "
                      "TPSA <num>60</num>, SA <num>2.5</num>: <mol>")
    assert parse_prefix(prompt + "CCO</mol>") == {"qed": 0.9412, "logp": -1.234, "mw": 345.7,
                                                  "tpsa": 60.0, "sa": 2.5}
    assert parse_prefix("<mol>CCO</mol>") is None
    reference = Reference(("CCO", "CCN", "CCC"), np.array([[0.4, 0.0, 46.0, 20.2, 1.0],
                                                           [0.9, 1.5, 45.0, 26.0, 1.5],
                                                           [0.8, 1.8, 44.0, 0.0, 1.1]]))
    spec = RangeSpec((PropertyRange("qed", low=0.85),))
    drawn = draw_targets(spec, reference, 5, np.random.default_rng(0))
    assert all(d == dict(zip(["qed", "logp", "mw", "tpsa", "sa"], reference.values[1]))
               for d in drawn)
    uniform = draw_targets(RangeSpec((PropertyRange("logp", 1.0, 2.0),)), reference, 50,
                           np.random.default_rng(0), mode="uniform")
    assert all(1.0 <= d["logp"] <= 2.0 for d in uniform)
    assert len({d["logp"] for d in uniform}) == 50
    counts = score_samples(["CCO", None, "CCO", "CCCCCCCCCCCCCCCCCCCC"],
                           RangeSpec((PropertyRange("mw", high=100),)), frozenset({"CCO"}))
    assert counts == {"samples": 4, "valid": 3, "unique_valid": 2, "hits": 2, "unique_hits": 1,
                      "novel_unique_hits": 0, "success_rate": 2 / 3, "hits_per_sample": 0.5}


# --- model in the loop --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer Llama with a kiban tokenizer trained on a few molecule documents, given 20
    fine-tuning steps on small molecules so that it writes some valid SMILES."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from kiban.tokenizer import train_tokenizer
    import torch

    texts = [f"<mol>{s}</mol>" for s in START + [CELECOXIB, ASPIRIN]] * 3
    tokenizer = train_tokenizer(texts, vocab_size=300)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2,
                         vocab_size=tokenizer.vocab_size, max_position_embeddings=128,
                         bos_token_id=None, eos_token_id=tokenizer.eos_id,
                         pad_token_id=tokenizer.pad_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    finetune_steps(model, tokenizer, START, steps=20, batch_size=20, lr=2e-2, seed=0)
    directory = tmp_path_factory.mktemp("molopt-model")
    model.save_pretrained(directory)
    tokenizer.save(directory)
    return directory


def test_finetune_steps_lower_the_loss_on_given_molecules(tiny_model_dir):
    import torch

    from kiban.generate import load_generator

    generator = load_generator(tiny_model_dir)
    model, science = generator.model, generator.science
    ids = torch.tensor([[science.eos_id, *science.encode(f"<mol>{ASPIRIN}</mol>"),
                         science.eos_id]])

    def loss() -> float:
        with torch.no_grad():
            return float(model(input_ids=ids, labels=ids).loss)

    before = loss()
    finetune_steps(model, science, [ASPIRIN] * 4, steps=5, batch_size=4, lr=2e-2, seed=0)
    assert loss() < before - 1.0


def test_model_loop_runs_end_to_end(tiny_model_dir):
    oracle = Oracle(heavy_atoms_oracle, budget=12)
    config = LoopConfig(batch=16, steps=2, top_k=4, train_batch=4, max_new_tokens=24,
                        max_rounds=3)
    result = optimize_with_model(oracle, str(tiny_model_dir), config=config, seed=0)
    assert 1 <= result["rounds"] <= 3
    assert result["samples"] == 16 * result["rounds"]
    assert 0 < result["valid_samples"] <= result["samples"]
    assert 0 < oracle.calls <= 12 and result["calls"] == oracle.calls
    assert all(Chem.MolFromSmiles(s) is not None for s, _ in oracle.history)
    assert result["top1"] == max(score for _, score in oracle.history)


def test_diverse_top_caps_each_scaffold():
    from kiban.tasks.molecules.optimize import diverse_top

    history = [("c1ccccc1C", 0.9), ("c1ccccc1CC", 0.8), ("c1ccccc1CCC", 0.7),
               ("C1CCNCC1", 0.6), ("CCO", 0.5), ("CCCO", 0.4)]
    assert diverse_top(history, 4, None) == ["c1ccccc1C", "c1ccccc1CC", "c1ccccc1CCC",
                                             "C1CCNCC1"]
    # benzene scaffold at most twice; the acyclic ones share the empty scaffold
    assert diverse_top(history, 4, 2) == ["c1ccccc1C", "c1ccccc1CC", "C1CCNCC1", "CCO"]
    assert diverse_top(history, 10, 1) == ["c1ccccc1C", "C1CCNCC1", "CCO"]


# --- REINVENT's augmented likelihood (kiban/tasks/molecules/reinvent.py) -------------------------


def test_sequence_log_likelihood_is_the_unpadded_sum_over_smiles_and_closing_tag(tiny_model_dir):
    import torch

    from kiban.generate import load_generator
    from kiban.tasks.molecules.reinvent import sequence_log_likelihood

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
    from kiban.tasks.molecules.reinvent import augmented_likelihood_loss, sequence_log_likelihood

    loaded = load_generator(tiny_model_dir)
    agent, science = loaded.model, loaded.science
    prior = copy.deepcopy(agent)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    batch, scores = [ASPIRIN, "CCCC"], torch.tensor([1.0, 0.0])
    with torch.no_grad():
        prior_ll = sequence_log_likelihood(prior, science, batch)
    for _ in range(5):
        loss = augmented_likelihood_loss(sequence_log_likelihood(agent, science, batch),
                                         prior_ll, scores, sigma=20.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = sequence_log_likelihood(agent, science, batch)
    assert float(after[0] - prior_ll[0]) > 1.0          # scored 1: pulled up towards +20
    assert abs(float(after[1] - prior_ll[1])) < float(after[0] - prior_ll[0])  # anchored


def test_replay_keeps_the_best_and_draws_by_score():
    from kiban.tasks.molecules.reinvent import _Replay

    replay = _Replay(3)
    replay.add(["A", "B", "C", "D"], [0.1, 0.9, 0.5, 0.7])
    assert sorted(replay.items) == ["B", "C", "D"]
    rng = np.random.default_rng(0)
    drawn = [replay.sample(1, rng)[0][0] for _ in range(400)]
    assert drawn.count("B") > drawn.count("C")       # 0.9 vs 0.5 of the weight
    assert len(set(replay.sample(5, rng)[0])) == 3   # never more than it holds, no repeats
    assert _Replay(3).sample(2, rng) == ([], [])


def test_augmented_likelihood_loop_runs_end_to_end_and_checks_its_config(tiny_model_dir):
    from kiban.tasks.molecules.reinvent import AugmentedConfig, optimize_augmented_likelihood

    oracle = Oracle(heavy_atoms_oracle, budget=20)
    config = AugmentedConfig(batch=16, max_new_tokens=24, max_rounds=4, replay=4, sigma=50.0,
                             top_fraction=0.25)
    result = optimize_augmented_likelihood(oracle, str(tiny_model_dir), config=config, seed=0)
    assert result["method"] == "model-augmented"
    assert 1 <= result["rounds"] <= 4 and result["samples"] == 16 * result["rounds"]
    assert 0 < oracle.calls <= 20 and result["calls"] == oracle.calls
    assert result["top1"] == max(score for _, score in oracle.history)
    assert result["stopped"] in ("budget", "max_rounds")
    # sigma 0 and an agent equal to the prior: the first loss is exactly zero
    zero = optimize_augmented_likelihood(Oracle(heavy_atoms_oracle, budget=5), str(tiny_model_dir),
                                         config=AugmentedConfig(batch=8, max_new_tokens=24,
                                                                max_rounds=1, sigma=0.0))
    assert zero["loss_first"] == 0.0
    with pytest.raises(ValueError, match="'batch' parameter of AugmentedConfig must be >= 1"):
        AugmentedConfig(batch=0)
    with pytest.raises(ValueError, match="lr > 0"):
        AugmentedConfig(lr=0.0)
    with pytest.raises(ValueError, match="'top_fraction' parameter .* Got 0"):
        AugmentedConfig(top_fraction=0)


def test_diversity_filter_zeroes_repeats_and_full_scaffold_buckets():
    from kiban.tasks.molecules.reinvent import DiversityFilter

    diversity = DiversityFilter(bucket=2, min_score=0.5)
    # three benzene-scaffold molecules above min_score: the third finds the bucket full
    assert diversity.rewards(["c1ccccc1C", "c1ccccc1CC", "c1ccccc1CCC"], [0.9, 0.8, 0.7]) == \
        [0.9, 0.8, 0.0]
    # a repeat in another spelling is 0; low scores never fill buckets; unreadable is 0
    assert diversity.rewards(["Cc1ccccc1", "c1ccccc1N", "C1CC"], [0.9, 0.3, 0.6]) == \
        [0.0, 0.3, 0.0]
    assert diversity.rewards(["c1ccccc1O"], [0.6]) == [0.0]   # bucket still full
    assert diversity.rewards(["C1CCNCC1C"], [0.6]) == [0.6]   # another scaffold


def test_top_rewarded_keeps_the_best_fraction():
    from kiban.tasks.molecules.reinvent import top_rewarded

    smiles, rewards = ["A", "B", "C", "D", "E"], [0.1, 0.9, 0.0, 0.5, 0.3]
    assert top_rewarded(smiles, rewards, 0.4) == (["B", "D"], [0.9, 0.5])
    assert top_rewarded(smiles, rewards, 0.25) == (["B", "D"], [0.9, 0.5])  # ceil(1.25) = 2
    assert top_rewarded(smiles, rewards, 0.01) == (["B"], [0.9])
    assert top_rewarded(smiles, rewards, 1.0) == (smiles, rewards)
