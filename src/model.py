"""The MNIST classifier: an MLP of any depth built from src.layers.Linear, by default the tutorial's
[num_units, num_units//2] hidden layers.

Its layer sizes (layer_sizes), state_dict names (linear_keys) and parameter count (parameter_count) are
defined here once (its activations in src.layers.ACTIVATIONS); src.fused trains stacks of the same model from them.
"""
from collections.abc import Sequence

import torch
from torch import nn

from src.layers import ACTIVATIONS, Linear


def layer_sizes(num_units: int = 128, input_dim: int = 784, num_classes: int = 10, hidden_sizes: Sequence[int] | None = None) -> list[int]:
    """The widths of NeuralNet's layers, input to output: [input_dim, *hidden_sizes, num_classes], where hidden_sizes
    defaults to the tutorial's [num_units, num_units // 2]."""
    hidden = [num_units, num_units // 2] if hidden_sizes is None else list(hidden_sizes)
    return [input_dim, *hidden, num_classes]


def parameter_count(sizes: Sequence[int]) -> int:
    """The trainable parameters of an MLP with these layer sizes: each Linear's weight and bias."""
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes, sizes[1:]))


def module_sizes(module: dict) -> list[int] | None:
    """The layer sizes of the NeuralNet these keyword arguments (a job's module settings) build; None for another
    module's (module._target_: module=cnn, your own)."""
    if "_target_" in module or ("num_units" not in module and "hidden_sizes" not in module):
        return None
    return layer_sizes(module.get("num_units", 128), module.get("input_dim", 784), module.get("num_classes", 10), module.get("hidden_sizes"))


def linear_keys(sizes: list[int]) -> list[tuple[str, str]]:
    """The (weight, bias) state_dict keys of each Linear of a NeuralNet with these layer sizes, in order."""
    # nn.Sequential names its children by position, and an activation follows every Linear but the last
    return [(f"layers.{2 * i}.weight", f"layers.{2 * i}.bias") for i in range(len(sizes) - 1)]


class NeuralNet(nn.Module):
    """Linear(input_dim, h1) -> act -> Linear(h1, h2) -> act -> ... -> Linear(h_last, num_classes), over the hidden
    widths `hidden_sizes`, or the tutorial's [num_units, num_units // 2] when it is None.

    Returns logits; skorch's NeuralNetClassifier with CrossEntropyLoss applies the softmax for predict_proba.
    """

    def __init__(
        self,
        num_units: int = 128,
        input_dim: int = 784,
        num_classes: int = 10,
        activation: str = "relu",
        init: str = "default",
        generator: torch.Generator | None = None,
        hidden_sizes: Sequence[int] | None = None,
    ):
        super().__init__()
        # The layers draw their initial weights in this order, weight then bias, from `generator`
        # (src.fused draws a fused model's in the same order, to train the same fit).
        sizes = layer_sizes(num_units, input_dim, num_classes, hidden_sizes)
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            last = i == len(sizes) - 2
            layers += [Linear(n_in, n_out, init=init, generator=generator)] + ([] if last else [ACTIVATIONS[activation].module()])
        self.layers = nn.Sequential(*layers)

    def forward(self, X):
        return self.layers(X)  # (B, input_dim) -> (B, num_classes) logits
