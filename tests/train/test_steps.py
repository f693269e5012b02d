"""`kiban.train.steps`: the public step API gives exactly the weights of the hand-written
loop design code ran before it (``finetune_steps`` in kiban.tasks.molecules.optimize), and stops
on a non-finite loss."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

SMILES = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "OCCO", "C1CC1", "CC#N"]


class CharTokenizer:
    """One id per character: enough for `SupervisedData` and a tiny model."""

    eos_id, pad_id = 1, 0

    def encode(self, text: str) -> list[int]:
        return [2 + ord(c) % 60 for c in text]


def tiny_model(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=None,
        eos_token_id=1,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def data(smiles=SMILES, seed: int = 5):
    from kiban.train.sft import Example, SupervisedData

    examples = [Example("", f"<mol>{s}</mol>", f"top-k:{i}", "top-k") for i, s in enumerate(smiles)]
    return SupervisedData(examples, CharTokenizer(), seq_len=64, seed=seed, validation_fraction=0.0)


def finetune_steps_before(model, data, *, steps, batch_size, lr, optimizer=None):
    """The loop of ``finetune_steps`` as it was before the step API, verbatim but for the data
    it is given (the reference the API must match bit for bit)."""
    from kiban.train.loop import Env, _tensors, loss_sum

    env = Env(0, 1, 0, torch.device("cpu"), None)
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        batch = data.global_batch(step, min(batch_size, data.train_examples))
        tensors = _tensors(batch, env.device)
        loss = loss_sum(model, tensors, env) / batch.n_targets
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return optimizer


@pytest.mark.parametrize("batch_size", [3, 16])  # 16 > 7 examples: the batch is all of them
def test_train_steps_is_bit_identical_to_the_loop_it_replaces(batch_size):
    from kiban.train import train_steps

    ours, theirs = tiny_model(), tiny_model()
    optimizer = train_steps(ours, data(), steps=3, batch_size=batch_size, lr=3e-3)
    reference = finetune_steps_before(theirs, data(), steps=3, batch_size=batch_size, lr=3e-3)
    # a second round reuses the optimizer (its moments carry over), on other data
    again = train_steps(
        ours, data(SMILES[:4], seed=6), steps=2, batch_size=batch_size, lr=3e-3, optimizer=optimizer
    )
    finetune_steps_before(
        theirs,
        data(SMILES[:4], seed=6),
        steps=2,
        batch_size=batch_size,
        lr=3e-3,
        optimizer=reference,
    )
    assert again is optimizer and isinstance(optimizer, torch.optim.AdamW)
    assert (
        optimizer.param_groups[0]["weight_decay"] == 0.0 and optimizer.param_groups[0]["lr"] == 3e-3
    )
    changed = False
    for (name, mine), (_, reference_weight) in zip(
        ours.state_dict().items(), theirs.state_dict().items()
    ):
        assert torch.equal(mine, reference_weight), name
        changed |= not torch.equal(mine, tiny_model().state_dict()[name])
    assert changed and not ours.training


def test_a_non_finite_loss_raises_before_the_step_is_applied():
    from kiban.errors import RunFailure
    from kiban.train import TrainingDiverged, train_steps

    model = tiny_model()
    with torch.no_grad():
        model.model.norm.weight[0] = float("inf")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        TrainingDiverged,
        match=r"^train_steps diverged at step 1 of 2: the loss "
        r"is nan \(lr = 0.001\); the step was not "
        r"applied$",
    ) as caught:
        train_steps(model, data(), steps=2, batch_size=4, lr=1e-3)
    assert isinstance(caught.value, RunFailure) and not model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value.nan_to_num(), before[name].nan_to_num()), name


@pytest.mark.parametrize(
    "options, message",
    [
        ({"steps": -1}, "The 'steps' parameter of train_steps must be an integer >= 0. Got -1"),
        (
            {"batch_size": 0},
            ("The 'batch_size' parameter of train_steps must be an integer >= 1. Got 0"),
        ),
        (
            {"lr": float("inf")},
            ("The 'lr' parameter of train_steps must be a finite number > 0. Got inf"),
        ),
    ],
)
def test_bad_options_are_value_errors(options, message):
    from kiban.train import train_steps

    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        train_steps(tiny_model(), data(), **{"steps": 1, "batch_size": 2, "lr": 1e-3, **options})


def test_env_local_and_batch_tensors():
    import numpy as np

    from kiban.train import Env, batch_tensors
    from kiban.train.batches import Batch
    from kiban.train.loop import _tensors

    env = Env.local()
    assert (env.rank, env.world, env.local_rank, env.device, env.autocast, env.main) == (
        0,
        1,
        0,
        torch.device("cpu"),
        None,
        True,
    )
    batch = Batch(np.array([[3, 4]]), np.array([[4, -100]]), np.array([[1, 1]]))
    tensors = batch_tensors(batch, env.device)
    assert sorted(tensors) == ["attention_mask", "input_ids", "labels"]
    assert tensors["labels"].tolist() == [[4, -100]] and _tensors is batch_tensors
