"""Fréchet ChemNet Distance (Preuer et al. 2018) with the ChemNet weights shipped by ``fcd_torch``.

Only the weights come from ``fcd_torch`` (its ``ChemNet_v0.13_pretrained.pt``: a list of
(layer type, state dict, constructor arguments, extra info) converted from the original Keras
model); the network, the SMILES encoding and the distance are built here. The encoding follows
ChemNet's training: a 35-symbol vocabulary, two-letter symbols ``Cl``/``Br``/``Si`` (any symbol
followed by ``l``, ``r`` or ``i``), unknown symbols as ``X``, a ``.`` end marker, 350 positions,
one-hot rows scaled by 1/35.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from kiban.data import package_file

VOCABULARY = (
    "C",
    "N",
    "O",
    "H",
    "F",
    "Cl",
    "P",
    "B",
    "Br",
    "S",
    "I",
    "Si",
    "#",
    "(",
    ")",
    "+",
    "-",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "=",
    "[",
    "]",
    "@",
    "c",
    "n",
    "o",
    "s",
    "X",
    ".",
)
_INDEX = {symbol: i for i, symbol in enumerate(VOCABULARY)}
_SECOND_LETTERS = frozenset("lri")
SEQUENCE_LENGTH = 350
ACTIVATION_SIZE = 512


def encode(smiles: str) -> np.ndarray:
    """Symbol indices of a SMILES as ChemNet reads it, ending with the ``.`` marker (at most
    SEQUENCE_LENGTH entries: longer SMILES are cut and still end with the marker)."""
    text = smiles + "."
    indices = []
    position = 0
    while True:
        width = 2 if text[position + 1] in _SECOND_LETTERS else 1
        indices.append(_INDEX.get(text[position : position + width], _INDEX["X"]))
        position += width
        if text[position] == "." or len(indices) == SEQUENCE_LENGTH - 1:
            indices.append(_INDEX["."])
            return np.asarray(indices, dtype=np.int64)


def one_hot(smiles: Sequence[str]) -> np.ndarray:
    """(n, SEQUENCE_LENGTH, len(VOCABULARY)) float32 network input."""
    batch = np.zeros((len(smiles), SEQUENCE_LENGTH, len(VOCABULARY)), dtype=np.float32)
    for row, text in enumerate(smiles):
        indices = encode(text)
        batch[row, np.arange(len(indices)), indices] = 1.0 / len(VOCABULARY)
    return batch


def _same_padding(length: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """Keras 'same' padding of a strided 1-D convolution, split as the converted model does."""
    pad = max(kernel_size - (stride if length % stride == 0 else length % stride), 0)
    if pad % stride == 0:
        return pad // stride, pad // stride
    return pad // stride, pad - pad // stride


@lru_cache(maxsize=1)
def _network():
    import torch
    from torch import nn

    path = package_file("fcd_torch", "ChemNet_v0.13_pretrained.pt")
    if not path.is_file():
        raise FileNotFoundError(f"ChemNet weights are missing at {path}: install fcd_torch==1.0.7")
    layers = torch.load(path, map_location="cpu", weights_only=True)
    activations = {"selu": nn.SELU, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}

    class ChemNet(nn.Module):
        """Two strided 'same' convolutions, then LSTMs that read the sequence back to front;
        the last one's final state (512 values) is the activation FCD compares."""

        def __init__(self):
            super().__init__()
            self.convolutions = nn.ModuleList()
            self.conv_activations = nn.ModuleList()
            self.lstms = nn.ModuleList()
            self.lstm_info = []
            for kind, (state, kwargs, info) in layers:
                if kind == "Conv1d":
                    if info["padding"] != "same" or self.lstms:
                        raise ValueError(f"unexpected ChemNet layout in {path}: {kind} {info}")
                    conv = nn.Conv1d(**kwargs)
                    conv.load_state_dict(state)
                    self.convolutions.append(conv)
                    self.conv_activations.append(activations[info["activation"]]())
                elif kind == "LSTM":
                    lstm = nn.LSTM(**kwargs)
                    lstm.load_state_dict(state)
                    self.lstms.append(lstm)
                    self.lstm_info.append((info["reverse"], info["last"]))
                else:
                    raise ValueError(f"unknown ChemNet layer {kind!r} in {path}")

        def forward(self, x):  # x: (B, T, V)
            x = x.transpose(1, 2)  # (B, V, T)
            for conv, activation in zip(self.convolutions, self.conv_activations):
                left, right = _same_padding(x.shape[2], conv.kernel_size[0], conv.stride[0])
                x = activation(conv(nn.functional.pad(x, (left, right))))  # (B, C, T')
            x = x.transpose(1, 2)  # (B, T', C)
            for lstm, (reverse, last) in zip(self.lstms, self.lstm_info):
                if reverse:
                    x = torch.flip(x, [1])
                x = lstm(x)[0]  # (B, T', H)
                if last:
                    x = x[:, -1]  # (B, H)
            return x

    return ChemNet().eval()


def activations(
    smiles: Sequence[str],
    *,
    device: str = "cpu",
    batch_size: int = 512,
) -> np.ndarray:
    """(n, 512) float32 ChemNet activations of (canonical) SMILES."""
    import torch

    network = _network().to(device)
    out = [np.zeros((0, ACTIVATION_SIZE), dtype=np.float32)]
    with torch.no_grad():
        for start in range(0, len(smiles), batch_size):
            batch = torch.from_numpy(one_hot(smiles[start : start + batch_size])).to(device)
            out.append(network(batch).cpu().numpy())
    return np.concatenate(out)


def gaussian(activations_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rows are samples) of the activations."""
    return activations_.mean(axis=0), np.cov(activations_.T)


def frechet_distance(
    mu_ref: np.ndarray,
    sigma_ref: np.ndarray,
    mu_gen: np.ndarray,
    sigma_gen: np.ndarray,
    *,
    eps: float = 1e-6,
) -> float:
    """||mu_ref - mu_gen||² + tr(Σ_ref + Σ_gen - 2 (Σ_ref Σ_gen)^½) of two Gaussians."""
    from scipy import linalg

    if mu_ref.shape != mu_gen.shape or sigma_ref.shape != sigma_gen.shape:
        raise ValueError(
            f"Gaussians of different sizes: mu {mu_ref.shape} vs {mu_gen.shape}, "
            f"sigma {sigma_ref.shape} vs {sigma_gen.shape}"
        )
    difference = mu_ref - mu_gen
    root = linalg.sqrtm(sigma_ref.dot(sigma_gen))
    if not np.isfinite(root).all():  # near-singular product: regularise both covariances
        offset = np.eye(sigma_ref.shape[0]) * eps
        root = linalg.sqrtm((sigma_ref + offset).dot(sigma_gen + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise ValueError(
                "the covariance product's square root has an imaginary part of "
                f"{np.max(np.abs(root.imag)):.3g}; the FCD is not defined"
            )
        root = root.real
    return float(
        difference.dot(difference) + np.trace(sigma_ref) + np.trace(sigma_gen) - 2 * np.trace(root)
    )
