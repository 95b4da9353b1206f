"""The tutorial's MNIST classifier: [num_units, num_units//2, num_classes] built from src.layers.Linear.

Its layer sizes (layer_sizes), activations (ACTIVATIONS) and state_dict names (linear_keys) are defined
here once; src.fused trains stacks of the same model from them.
"""
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from src.layers import Linear


@dataclass(frozen=True)
class Activation:
    """An activation function: the module NeuralNet puts between its layers, and its derivative for the fused engine."""
    module: type[nn.Module]
    # d act / d z from the pre-activation z and the output h, as autograd computes it; None: the fused engine
    # (src.fused), whose backward pass is written by hand, cannot train it, and such jobs run through GridSearchCV
    derivative: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


ACTIVATIONS = {
    "relu": Activation(nn.ReLU, lambda z, h: h > 0),
    "tanh": Activation(nn.Tanh, lambda z, h: 1 - h * h),
    "sigmoid": Activation(nn.Sigmoid, lambda z, h: h * (1 - h)),
    "gelu": Activation(nn.GELU,  # the exact (erf) GELU, nn.GELU's default
                       lambda z, h: 0.5 * (1 + torch.erf(z * math.sqrt(0.5))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)),
}


def layer_sizes(num_units: int, input_dim: int = 784, num_classes: int = 10) -> list[int]:
    """[input_dim, num_units, num_units // 2, num_classes]: the widths of NeuralNet's layers, in order."""
    return [input_dim, num_units, num_units // 2, num_classes]


def linear_keys(sizes: list[int]) -> list[tuple[str, str]]:
    """The (weight, bias) state_dict keys of each Linear of a NeuralNet with these layer sizes, in order."""
    # nn.Sequential names its children by position, and an activation follows every Linear but the last
    return [(f"layers.{2 * i}.weight", f"layers.{2 * i}.bias") for i in range(len(sizes) - 1)]


class NeuralNet(nn.Module):
    """Linear(input_dim, num_units) -> act -> Linear(num_units, num_units//2) -> act -> Linear(num_units//2, num_classes).

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
    ):
        super().__init__()
        # The layers draw their initial weights in this order, weight then bias, from `generator`
        # (src.fused draws a fused model's in the same order, to train the same fit).
        sizes = layer_sizes(num_units, input_dim, num_classes)
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            last = i == len(sizes) - 2
            layers += [Linear(n_in, n_out, init=init, generator=generator)] + ([] if last else [ACTIVATIONS[activation].module()])
        self.layers = nn.Sequential(*layers)

    def forward(self, X):
        return self.layers(X)  # (B, input_dim) -> (B, num_classes) logits
