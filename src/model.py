"""The tutorial's MNIST classifier: [num_units, num_units//2, num_classes] built from src.layers.Linear."""
from torch import nn

from src.layers import Linear

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


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
    ):
        super().__init__()
        if isinstance(num_units, bool) or not isinstance(num_units, int) or num_units < 2:
            raise ValueError(f"module.num_units={num_units!r} must be an integer >= 2 (the second layer has num_units//2 units)")
        if activation not in ACTIVATIONS:
            raise ValueError(f"module.activation={activation!r} is not known; choose one of {', '.join(ACTIVATIONS)}")
        act = ACTIVATIONS[activation]
        self.layers = nn.Sequential(
            Linear(input_dim, num_units, init=init),
            act(),
            Linear(num_units, num_units // 2, init=init),
            act(),
            Linear(num_units // 2, num_classes, init=init),
        )

    def forward(self, X):
        return self.layers(X)  # (B, input_dim) -> (B, num_classes) logits
