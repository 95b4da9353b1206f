"""A small convolutional classifier for 28x28 images: conv blocks, then src.layers.Linear as its classifier head.

module=cnn (conf/module/cnn.yaml) builds it. Its samples arrive flat, (B, 784), as the MLP's do, and are
seen as one-channel 28x28 images.
"""
from collections.abc import Sequence

import torch
from torch import nn

from src.layers import ACTIVATIONS, Linear, draw_init

IMAGE = (1, 28, 28)  # (channels, height, width) of the images the CNN takes; a sample is their 784 pixels, flat


def feature_side(side: int, kernel_size: int, blocks: int) -> int:
    """The height (and width) of the feature maps after `blocks` conv blocks on `side` x `side` images."""
    for _ in range(blocks):
        side = (side + 2 * (kernel_size // 2) - kernel_size + 1) // 2  # the conv pads k//2 on each side, the pool halves
    return side


class CNN(nn.Module):
    """Per block: Conv2d(kernel_size, padding kernel_size//2) -> act -> MaxPool2d(2); then Linear(features, num_classes).

    With the defaults: (B, 784) -> (B, 1, 28, 28) -> (B, 8, 14, 14) -> (B, 16, 7, 7) -> (B, 784) -> (B, 10) logits.
    """

    def __init__(
        self,
        channels: Sequence[int] = (8, 16),
        kernel_size: int = 3,
        num_classes: int = 10,
        activation: str = "relu",
        init: str = "default",
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        # Each layer draws its initial values from `generator`, weight then bias, block by block, then the head's: the
        # same draws as nn.Conv2d's own init (U(+-1/sqrt(fan_in))) for init=default, N(0, 1) for init=randn.
        blocks, c_in = [], IMAGE[0]
        for c_out in channels:
            # made on the meta device, so that nn.Conv2d draws nothing from torch's global generator
            conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, device="meta").to_empty(device="cpu")
            with torch.no_grad():
                for p in (conv.weight, conv.bias):
                    draw_init(p, c_in * kernel_size * kernel_size, init, generator)
            blocks += [conv, ACTIVATIONS[activation].module(), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        side = feature_side(IMAGE[1], kernel_size, len(channels))  # >= 1 for up to 4 blocks (src.config's schema)
        self.head = Linear(c_in * side * side, num_classes, init=init, generator=generator)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        h = self.features(X.reshape(-1, *IMAGE))  # (B, 784) -> (B, 1, 28, 28) -> (B, C, side, side)
        return self.head(h.flatten(1))  # (B, C * side * side) -> (B, num_classes) logits
