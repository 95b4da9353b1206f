"""Small modules for the tests of the fused engine's general path (src.vmapped): importable by name (the tests folder
is on the path), as a user's own module._target_ is. Each draws its initial weights from the `generator` it is given."""
import torch
from torch import nn

from src.layers import Linear


def uniform_(module: nn.Module, bound: float, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-bound, bound, generator=generator)


class TinyCNN(nn.Module):
    """conv 3x3 -> relu -> max pool 2 -> the hand-written Linear head, on 28x28 inputs given as rows of 784."""

    def __init__(self, channels: int = 4, init: str = "default", generator: torch.Generator | None = None):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3)
        uniform_(self.conv, 1 / 3, generator)  # U(+-1/sqrt(fan_in)), fan_in 9
        self.head = Linear(channels * 13 * 13, 10, init=init, generator=generator)

    def forward(self, X):
        h = torch.max_pool2d(torch.relu(self.conv(X.reshape(-1, 1, 28, 28))), 2)  # (B, channels, 13, 13)
        return self.head(h.flatten(1))


class DeepMLP(nn.Module):
    """input -> hidden widths (tanh) -> 10, of the hand-written Linear."""

    def __init__(self, hidden: tuple[int, ...] = (32, 16, 8), input_dim: int = 784, init: str = "default",
                 generator: torch.Generator | None = None):
        super().__init__()
        sizes = [input_dim, *hidden, 10]
        layers = []
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += [Linear(n_in, n_out, init=init, generator=generator), nn.Tanh()]
        self.layers = nn.Sequential(*layers[:-1])

    def forward(self, X):
        return self.layers(X)


class BatchNormNet(nn.Module):
    """A linear layer and batch norm (in training mode): fits cannot be vmapped."""

    def __init__(self, generator: torch.Generator | None = None):
        super().__init__()
        self.fc, self.norm = nn.Linear(784, 10), nn.BatchNorm1d(10)
        uniform_(self.fc, 0.03, generator)

    def forward(self, X):
        return self.norm(self.fc(X))


class DropoutNet(nn.Module):
    """Dropout draws from torch's global generator: vmap refuses the random operation."""

    def __init__(self, generator: torch.Generator | None = None):
        super().__init__()
        self.fc = nn.Linear(784, 10)
        uniform_(self.fc, 0.03, generator)

    def forward(self, X):
        return self.fc(torch.dropout(X, 0.5, self.training))


class InPlaceStatsNet(nn.Module):
    """Keeps a running sum of its inputs in a plain tensor, updated in place: vmap refuses it."""

    def __init__(self, generator: torch.Generator | None = None):
        super().__init__()
        self.fc = nn.Linear(784, 10)
        uniform_(self.fc, 0.03, generator)
        self.seen = torch.zeros(())

    def forward(self, X):
        self.seen.add_(X.detach().sum())
        return self.fc(X)


class NoParameters(nn.Module):
    """Logits of the right shape, and nothing to train: torch.optim refuses its empty parameter list."""

    def forward(self, X):
        return X[:, :10]


class ScaledLinear(nn.Module):
    """A module with a buffer its state_dict does not hold (persistent=False)."""

    def __init__(self, scale: float = 2.0):
        super().__init__()
        self.linear = nn.Linear(784, 10)
        self.register_buffer("scale", torch.tensor(scale), persistent=False)

    def forward(self, x):
        return self.linear(x) * self.scale


class ValueInInit(nn.Module):
    """A module whose constructor reads a tensor's value (which a tensor on the meta device has not)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(784, 10)
        self.scale = float(torch.ones(4).sum())

    def forward(self, x):
        return self.linear(x) * self.scale
