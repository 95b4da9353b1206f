"""The tutorial's MNIST classifier: [num_units, num_units//2, num_classes] built from src.layers.Linear."""
import torch
from torch import nn

from src.layers import Linear

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


def layer_sizes(num_units: int, input_dim: int = 784, num_classes: int = 10) -> list[int]:
    """[input_dim, num_units, num_units // 2, num_classes]: the widths of NeuralNet's layers, in order."""
    return [input_dim, num_units, num_units // 2, num_classes]


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
        if isinstance(num_units, bool) or not isinstance(num_units, int) or num_units < 2:
            raise ValueError(f"module.num_units={num_units!r} must be an integer >= 2 (the second layer has num_units//2 units)")
        if activation not in ACTIVATIONS:
            raise ValueError(f"module.activation={activation!r} is not known; choose one of {', '.join(ACTIVATIONS)}")
        # The layers draw their initial weights in this order, weight then bias, from `generator`
        # (src.fused draws a fused model's in the same order, to train the same fit).
        sizes = layer_sizes(num_units, input_dim, num_classes)
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            layers += [Linear(n_in, n_out, init=init, generator=generator)] + ([ACTIVATIONS[activation]()] if i < 2 else [])
        self.layers = nn.Sequential(*layers)

    def forward(self, X):
        return self.layers(X)  # (B, input_dim) -> (B, num_classes) logits
