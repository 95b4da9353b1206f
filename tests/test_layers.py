import pytest
import torch
import torch.nn.functional as F

from src.layers import Linear, LinearFunction


def tensors(requires=(True, True, True), bias=True, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 5, generator=g, dtype=dtype).requires_grad_(requires[0])
    w = torch.randn(5, 3, generator=g, dtype=dtype).requires_grad_(requires[1])  # (in_dim, out_dim)
    b = torch.randn(3, generator=g, dtype=dtype).requires_grad_(requires[2]) if bias else None
    return x, w, b


@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(bias):
    assert torch.autograd.gradcheck(LinearFunction.apply, tensors(bias=bias))


def grads_of(fn, x, w, b):
    out = fn(x, w, b)
    out.backward(torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape).cos())
    return out.detach(), [None if t is None else t.grad for t in (x, w, b)]


@pytest.mark.parametrize(
    "requires, bias",
    [
        ((True, True, True), True),
        ((True, False, True), True),   # frozen weight: the tutorial transposed a None here
        ((True, False, False), True),  # frozen weight and bias
        ((False, True, True), True),   # input without grad (the first layer)
        ((True, True, False), False),  # bias None
        ((False, True, False), False),
    ],
)
def test_matches_F_linear(requires, bias):
    ours = grads_of(LinearFunction.apply, *tensors(requires, bias))
    ref = grads_of(lambda x, w, b: F.linear(x, w.t(), b), *tensors(requires, bias))
    torch.testing.assert_close(ours[0], ref[0])
    for got, want in zip(ours[1], ref[1]):
        assert (got is None) == (want is None)
        if want is not None:
            torch.testing.assert_close(got, want)


def test_non_contiguous_input():
    x, w, b = tensors()
    xt = x.detach().t().contiguous().t().requires_grad_()  # same values, transposed strides
    assert not xt.is_contiguous()
    ours = grads_of(LinearFunction.apply, xt, w, b)
    ref = grads_of(lambda x, w, b: F.linear(x, w.t(), b), *tensors())
    torch.testing.assert_close(ours[0], ref[0])
    for got, want in zip(ours[1], ref[1]):
        torch.testing.assert_close(got, want)


def test_unneeded_gradients_are_none():
    x, w, b = tensors(requires=(False, True, False))
    LinearFunction.apply(x, w, b).sum().backward()
    assert x.grad is None and b.grad is None and w.grad is not None


def test_module_default_init_matches_nn_linear_bounds():
    torch.manual_seed(0)
    layer = Linear(400, 300)
    ref = torch.nn.Linear(400, 300)
    assert layer.weight.shape == (400, 300) and layer.bias.shape == (300,)
    for ours, theirs in ((layer.weight, ref.weight), (layer.bias, ref.bias)):
        assert ours.abs().max() <= 1 / 400**0.5
        torch.testing.assert_close(ours.std(), theirs.std(), rtol=0.05, atol=0)


def test_module_randn_init_and_repr():
    torch.manual_seed(0)
    layer = Linear(400, 300, init="randn", bias=False)
    assert layer.bias is None
    torch.testing.assert_close(layer.weight.std(), torch.tensor(1.0), rtol=0.02, atol=0)
    assert "in_dim=400, out_dim=300, bias=False, init=randn" in repr(layer)


def test_module_forward_equals_F_linear():
    layer = Linear(6, 4)
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight.t(), layer.bias))


def test_unknown_init_is_a_clear_error():
    with pytest.raises(ValueError, match="^init='xavier' is not known; choose one of default, randn"):
        Linear(3, 2, init="xavier")


def batched(requires=(True, True, True), bias=True, seed=0):
    """Three models' inputs (3, 6, 5), weights (3, 5, 4) and biases (3, 4), float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 6, 5, generator=g, dtype=torch.float64).requires_grad_(requires[0])
    w = torch.randn(3, 5, 4, generator=g, dtype=torch.float64).requires_grad_(requires[1])
    b = torch.randn(3, 4, generator=g, dtype=torch.float64).requires_grad_(requires[2]) if bias else None
    return x, w, b


@pytest.mark.parametrize("bias", [True, False])
def test_batched_gradcheck(bias):
    from src.layers import BatchedLinearFunction

    assert torch.autograd.gradcheck(BatchedLinearFunction.apply, batched(bias=bias))


@pytest.mark.parametrize("requires, bias", [((True, True, True), True), ((False, True, True), True), ((True, False, False), True),
                                            ((True, True, False), False)])
def test_batched_is_F_linear_per_model(requires, bias):
    """Each model's output and gradients equal F.linear's on that model alone."""
    from src.layers import BatchedLinearFunction

    ours = grads_of(BatchedLinearFunction.apply, *batched(requires, bias))
    x, w, b = batched(requires, bias)
    per_model = lambda x, w, b: torch.stack([F.linear(x[m], w[m].t(), None if b is None else b[m]) for m in range(3)])  # noqa: E731
    ref = grads_of(per_model, x, w, b)
    torch.testing.assert_close(ours[0], ref[0])
    for mine, theirs in zip(ours[1], ref[1]):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            torch.testing.assert_close(mine, theirs)


# ---- torch.func: the hand-written Linear under vmap and grad (src.vmapped trains stacks of models with them) --------


def linear_loss(fn):
    """A scalar loss of (weight, bias, x) through the layer `fn(x, w, b)`, with a nonlinearity so that every gradient matters."""
    return lambda w, b, x: fn(x, w, b).tanh().pow(2).sum()


@pytest.mark.parametrize("bias", [True, False])
def test_vmap_grad_equals_a_loop_and_F_linear(bias):
    """torch.func.vmap(grad(...)) over 3 models gives each model's gradients, as a loop of plain autograd and F.linear do."""
    from torch.func import grad, vmap

    x, w, b = (t.detach() if t is not None else None for t in batched(bias=bias))
    argnums = (0, 1, 2) if bias else (0, 2)
    ours = vmap(grad(linear_loss(LinearFunction.apply), argnums=argnums), in_dims=(0, 0 if bias else None, 0))(w, b, x)
    for m in range(3):
        wm, bm, xm = w[m].clone().requires_grad_(), None if b is None else b[m].clone().requires_grad_(), x[m].clone().requires_grad_()
        loop = torch.autograd.grad(linear_loss(LinearFunction.apply)(wm, bm, xm), [t for t in (wm, bm, xm) if t is not None])
        ref = torch.autograd.grad(linear_loss(lambda x, w, b: F.linear(x, w.t(), b))(wm, bm, xm), [t for t in (wm, bm, xm) if t is not None])
        for mine, looped, theirs in zip(ours, loop, ref):
            torch.testing.assert_close(mine[m], looped)
            torch.testing.assert_close(mine[m], theirs)


def test_vmap_runs_the_hand_written_backward(monkeypatch):
    """Under vmap and grad it is LinearFunction.backward that computes the gradients (not a derivative torch made up)."""
    from torch.func import grad, vmap

    calls = []
    backward = LinearFunction.backward

    def counted(ctx, grad_output):
        calls.append(grad_output.shape)
        return backward(ctx, grad_output)

    monkeypatch.setattr(LinearFunction, "backward", staticmethod(counted))
    x, w, b = (t.detach() for t in batched())
    vmap(grad(linear_loss(LinearFunction.apply)))(w, b, x)
    assert calls == [(6, 4)]  # once, per model's shapes (vmap batches the call itself)


def test_vmap_of_the_module_through_functional_call():
    """A stack of Linear modules (torch.func.stack_module_state) under vmap(functional_call) is each module on its own input."""
    from torch.func import functional_call, stack_module_state, vmap

    layers = [Linear(5, 4, generator=torch.Generator().manual_seed(m)) for m in range(3)]
    params, buffers = stack_module_state(layers)
    x = torch.randn(3, 6, 5)
    out = vmap(lambda p, b, x: functional_call(layers[0], (p, b), (x,)))(params, buffers, x)
    for m, layer in enumerate(layers):
        torch.testing.assert_close(out[m], F.linear(x[m], layer.weight.t(), layer.bias))


@pytest.mark.parametrize("in_dims", [(0, 0, 0), (0, 0, None), (0, None, None), (None, 0, 0), (1, 0, 0)])
def test_gradcheck_under_vmap(in_dims):
    """gradcheck of the vmapped layer (its vmap rule: BatchedLinearFunction) against finite differences, with the
    models' dimension anywhere or absent (one weight for every model's input, one input for every model's weight)."""
    from torch.func import vmap

    x, w, b = batched()
    x = x[0] if in_dims[0] is None else x.detach().movedim(0, in_dims[0]).requires_grad_()
    w = w[0] if in_dims[1] is None else w
    b = None if in_dims[2] is None else b
    assert torch.autograd.gradcheck(vmap(LinearFunction.apply, in_dims=in_dims), (x, w, b))


def test_autograd_through_vmap_is_the_batched_layers_backward(monkeypatch):
    """Autograd through vmap of the layer (src.vmapped's step) runs BatchedLinearFunction's hand-written passes, and
    gives each model the gradients of a loop over F.linear."""
    from torch.func import vmap

    from src.layers import BatchedLinearFunction

    calls = []
    receivers = BatchedLinearFunction.receivers
    monkeypatch.setattr(BatchedLinearFunction, "receivers", staticmethod(lambda *a, **k: calls.append(1) or receivers(*a, **k)))
    x, w, b = batched()
    vmap(linear_loss(LinearFunction.apply))(w, b, x).sum().backward()
    assert calls == [1]
    for m in range(3):
        wm, bm, xm = (t[m].detach().clone().requires_grad_() for t in (w, b, x))
        linear_loss(lambda x, w, b: F.linear(x, w.t(), b))(wm, bm, xm).backward()
        for mine, theirs in ((w, wm), (b, bm), (x, xm)):
            torch.testing.assert_close(mine.grad[m], theirs.grad)


# ---- autocast (train.precision=bf16, src.precision): bfloat16 products, float32 parameters and gradients --------------


def under_autocast(fn, x, w, b):
    """fn's output under CPU autocast to bfloat16, and the gradients of a float32 loss of it, taken after the
    autocast region (as torch's AMP docs advise) so that the backward pass must bring its own autocast state."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(x, w, b)
    out.float().tanh().sum().backward()
    return out.detach(), [None if t is None else t.grad for t in (x, w, b)]


@pytest.mark.parametrize("bias", [True, False])
def test_under_autocast_the_outputs_are_bfloat16_and_the_gradients_float32_as_F_linear_gives_them(bias):
    ours = under_autocast(LinearFunction.apply, *tensors(bias=bias, dtype=torch.float32))
    ref = under_autocast(lambda x, w, b: F.linear(x, w.t(), b), *tensors(bias=bias, dtype=torch.float32))
    assert ours[0].dtype == ref[0].dtype == torch.bfloat16
    torch.testing.assert_close(ours[0], ref[0])
    for mine, theirs in zip(ours[1], ref[1]):
        assert (mine is None) == (theirs is None)
        if mine is not None:  # each gradient in its tensor's own dtype, made from the same bfloat16 products
            assert mine.dtype == theirs.dtype == torch.float32
            torch.testing.assert_close(mine, theirs)


def test_under_autocast_the_batched_layer_and_its_passes_into_a_float32_buffer_are_torchs_bmm():
    """BatchedLinearFunction under autocast as torch.baddbmm under autocast; and its receiver pass into float32 buffers
    (the fused engine's flat gradient, out=, which autocast does not cast) is autocast's product, stored in float32."""
    from src.layers import BatchedLinearFunction

    x, w, b = (t.detach().float().requires_grad_() for t in batched())
    ours = under_autocast(BatchedLinearFunction.apply, x, w, b)
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
    ref = under_autocast(lambda x, w, b: torch.baddbmm(b.unsqueeze(1), x, w), x2, w2, b2)
    assert ours[0].dtype == torch.bfloat16
    torch.testing.assert_close(ours[0], ref[0])
    for mine, theirs in zip(ours[1], ref[1]):
        assert mine.dtype == torch.float32
        torch.testing.assert_close(mine, theirs)
    grad_output = torch.randn(3, 6, 4)  # float32, as the fused engine's softmax gradient is
    out = (torch.full((3, 5, 4), float("nan")), torch.full((3, 4), float("nan")))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        into = BatchedLinearFunction.receivers(x.detach().bfloat16(), grad_output, out=out)
        made = BatchedLinearFunction.receivers(x.detach().bfloat16(), grad_output)
    assert into[0] is out[0] and into[1] is out[1] and out[0].dtype == torch.float32
    torch.testing.assert_close(out[0], made[0].float(), rtol=0, atol=0)
    torch.testing.assert_close(out[1], made[1].float(), rtol=0, atol=0)
