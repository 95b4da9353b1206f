"""src.cnn.CNN against the same network written with torch.nn.functional, and its init drawn from a fit's generator."""
import math

import pytest
import torch
import torch.nn.functional as F

from src.cnn import CNN, feature_side
from src.seeding import fit_generator


def functional_cnn(net: CNN, X: torch.Tensor) -> torch.Tensor:
    """The CNN's forward pass with its own weights, through torch's conv2d, relu, max_pool2d and F.linear."""
    h = X.view(-1, 1, 28, 28)
    for conv in net.features[::3]:
        h = F.max_pool2d(F.relu(F.conv2d(h, conv.weight, conv.bias, padding=conv.padding)), 2)
    return F.linear(h.flatten(1), net.head.weight.T, net.head.bias)  # src.layers.Linear keeps its weight (in, out)


@pytest.mark.parametrize("channels, kernel_size, side", [([8, 16], 3, 7), ([16, 32], 5, 7), ([4], 3, 14), ([2, 3, 4, 5], 3, 1), ([4, 8], 4, 7)])
def test_flat_batches_give_logits_as_torch_computes_them(channels, kernel_size, side):
    net = CNN(channels, kernel_size, generator=torch.Generator().manual_seed(0))
    X = torch.randn(5, 784, generator=torch.Generator().manual_seed(1))
    out = net(X)
    assert out.shape == (5, 10) and feature_side(28, kernel_size, len(channels)) == side
    assert net.head.in_dim == channels[-1] * side * side
    torch.testing.assert_close(out, functional_cnn(net, X))


def test_gradients_reach_every_layer():
    net = CNN(generator=torch.Generator().manual_seed(0))
    F.cross_entropy(net(torch.randn(4, 784)), torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_init_is_drawn_from_the_fits_generator():
    """The same (seed, fold) gives the same network; another fold another; torch's global generator is not read."""
    a = CNN(generator=fit_generator(0, 1))
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    b = CNN(generator=fit_generator(0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)
    c = CNN(generator=fit_generator(0, 2))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc), name


def test_default_init_is_torchs_for_conv2d():
    """init=default draws U(+-1/sqrt(fan_in)) as nn.Conv2d's own reset_parameters does; randn draws N(0, 1)."""
    net = CNN([64, 64], 5, generator=torch.Generator().manual_seed(0))
    conv = net.features[3]
    bound = 1 / math.sqrt(64 * 5 * 5)
    reference = torch.nn.Conv2d(64, 64, 5).weight
    assert conv.weight.abs().max() <= bound and reference.abs().max() <= bound
    assert conv.weight.std().item() == pytest.approx(reference.std().item(), rel=0.02)  # U(-b, b): std b / sqrt(3)
    randn = CNN([64, 64], 5, init="randn", generator=torch.Generator().manual_seed(0))
    assert randn.features[3].weight.std().item() == pytest.approx(1, rel=0.02)


def test_four_blocks_halve_the_image_to_one_pixel():
    """The schema allows at most 4 blocks (src.config): the fourth leaves the head 1x1 feature maps, whatever the kernel."""
    assert [feature_side(28, k, 4) for k in (1, 3, 5, 7)] == [1, 1, 1, 1] and feature_side(28, 3, 5) == 0
