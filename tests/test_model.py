import pytest
import torch

from src.layers import Linear
from src.model import NeuralNet, layer_sizes, linear_keys, module_sizes, parameter_count


@pytest.mark.parametrize("num_units", [2, 32, 64, 128, 256])
def test_shapes(num_units):
    net = NeuralNet(num_units)
    linears = [m for m in net.modules() if isinstance(m, Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(784, num_units), (num_units, num_units // 2), (num_units // 2, 10)]
    assert net(torch.randn(5, 784)).shape == (5, 10)


def test_parameter_count_matches_torch_mlp():
    ref = torch.nn.Sequential(torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    assert sum(p.numel() for p in NeuralNet(64).parameters()) == sum(p.numel() for p in ref.parameters())


def test_options():
    net = NeuralNet(16, input_dim=20, num_classes=3, activation="tanh", init="randn")
    assert isinstance(net.layers[1], torch.nn.Tanh)
    assert net(torch.randn(4, 20)).shape == (4, 3)


@pytest.mark.parametrize("num_units", [2, 64])
def test_layer_sizes_and_linear_keys_describe_the_module(num_units):
    """The fused engine builds its models from layer_sizes and names their weights by linear_keys: both say what NeuralNet has."""
    net, sizes = NeuralNet(num_units), layer_sizes(num_units)
    assert [(m.in_dim, m.out_dim) for m in net.modules() if isinstance(m, Linear)] == list(zip(sizes, sizes[1:]))
    assert [key for pair in linear_keys(sizes) for key in pair] == list(net.state_dict())


@pytest.mark.parametrize("hidden", [[512], [256, 128], [128, 64, 32], [7, 5, 3, 2]])
def test_hidden_sizes_build_that_mlp(hidden):
    net = NeuralNet(hidden_sizes=hidden)
    sizes = layer_sizes(hidden_sizes=hidden)
    assert sizes == [784, *hidden, 10]
    assert [(m.in_dim, m.out_dim) for m in net.modules() if isinstance(m, Linear)] == list(zip(sizes, sizes[1:]))
    assert [key for pair in linear_keys(sizes) for key in pair] == list(net.state_dict())
    assert net(torch.randn(5, 784)).shape == (5, 10)


@pytest.mark.parametrize("kwargs", [{"num_units": 64}, {"num_units": 2}, {"hidden_sizes": [128, 64, 32]},
                                    {"hidden_sizes": [30], "input_dim": 20, "num_classes": 3}])
def test_parameter_count_is_the_built_nets(kwargs):
    """Counted from the layer sizes, without a net: what torch counts on the built one."""
    net = NeuralNet(**kwargs)
    assert parameter_count(module_sizes(kwargs)) == sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_hidden_sizes_n_and_half_is_num_units_n():
    """hidden_sizes=[N, N//2] is the net num_units=N builds, weight for weight from one generator."""
    a, b = (NeuralNet(generator=torch.Generator().manual_seed(3), **kw) for kw in ({"num_units": 40}, {"hidden_sizes": [40, 20]}))
    assert a.state_dict().keys() == b.state_dict().keys()
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value, rtol=0, atol=0)

