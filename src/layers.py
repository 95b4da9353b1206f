"""A Linear layer written as a torch.autograd.Function, as in the original tutorial.

The weight is stored (in_dim, out_dim) so the forward pass reads ``input @ weight + bias``.
The backward pass has the tutorial's two parts:

* the *intermediate* pass, the gradient sent back to the previous layer: ``grad @ weight.T``;
* the *receiver* passes, the gradients this layer keeps: ``input.T @ grad`` for the weight and
  the column sums of ``grad`` for the bias.

Each is computed only when autograd asks for it (``ctx.needs_input_grad``), so a frozen weight
or an input that needs no gradient costs nothing and returns ``None``.

``BatchedLinearFunction`` is the same layer for M models at once (src/fused.py trains a whole grid
x folds with it): input (M, B, in_dim), weight (M, in_dim, out_dim), bias (M, out_dim), and each
pass is one batched matrix product. Its passes are also static methods (``outputs``, ``intermediate``
and ``receivers``), so that the fused engine's hand-written training step runs the very same code.
``LinearFunction``'s vmap rule is ``BatchedLinearFunction``, so that torch.func.vmap over a stack of any
module's fits (src.vmapped) runs these passes too.

Under autocast (train.precision=bf16, src.precision) the forward pass's products run in bfloat16, and the
backward pass runs under the autocast state its forward pass ran under (forward_autocast), as
torch.amp.custom_fwd/custom_bwd arrange it, so that its products take the same bfloat16 inputs; autograd
hands each parameter its gradient in the parameter's own dtype (float32). (custom_fwd itself is not used:
it serves one device type fixed when the class is written, and a forward pass whose first argument is ctx.)
"""
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

INITS = ("default", "randn")


def forward_autocast(t: torch.Tensor) -> dict | None:
    """The autocast state a forward pass on `t` runs under (the keywords of torch.autocast), or None when autocast is off:
    its backward pass re-enters it (in_autocast), as torch.amp.custom_bwd does, for the device type of `t`."""
    kind = t.device.type
    return {"device_type": kind, "dtype": torch.get_autocast_dtype(kind)} if torch.is_autocast_enabled(kind) else None


def in_autocast(state: dict | None) -> contextlib.AbstractContextManager:
    """Re-enter the autocast state forward_autocast recorded (nothing when it was off)."""
    return contextlib.nullcontext() if state is None else torch.autocast(**state)


def draw_init(tensor: torch.Tensor, in_dim: int, init: str = "default", generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill `tensor` in place with a layer's initial values: U(+-1/sqrt(in_dim)) ("default") or N(0, 1) ("randn")."""
    if init == "randn":
        return tensor.normal_(generator=generator)
    bound = 1.0 / math.sqrt(in_dim)
    return tensor.uniform_(-bound, bound, generator=generator)


class LinearFunction(torch.autograd.Function):
    """y = input @ weight + bias, with a hand-written backward.

    forward and setup_context are separate, and it has a vmap rule, so that torch.func transforms it: under vmap over
    a stack of models (src.vmapped) it is BatchedLinearFunction, the same passes batched, and under vmap(grad(...)) its
    own backward runs, batched by vmap.
    """

    @staticmethod
    def vmap(info, in_dims, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
        """M models at once (M = info.batch_size): BatchedLinearFunction on (M, B, in_dim), (M, in_dim, out_dim), (M, out_dim)."""
        def batched(t, dim):
            return t.movedim(dim, 0) if dim is not None else t.expand(info.batch_size, *t.shape)
        input, weight = batched(input, in_dims[0]), batched(weight, in_dims[1])
        bias = None if bias is None else batched(bias, in_dims[2])
        if input.dim() == 2:  # one row per model: (M, in_dim) -> (M, 1, in_dim)
            return BatchedLinearFunction.apply(input.unsqueeze(1), weight, bias).squeeze(1), 0
        return BatchedLinearFunction.apply(input, weight, bias), 0

    @staticmethod
    def forward(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
        # input (B, in_dim), weight (in_dim, out_dim), bias (out_dim,) -> (B, out_dim)
        if bias is None:
            return input @ weight
        return torch.addmm(bias, input, weight)  # bias fused into the matrix product

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias = inputs
        ctx.save_for_backward(input, weight)
        ctx.has_bias = bias is not None
        ctx.autocast = forward_autocast(input)  # setup_context runs where forward ran

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        # grad_output (B, out_dim)
        input, weight = ctx.saved_tensors
        grad_input = grad_weight = grad_bias = None
        with in_autocast(ctx.autocast):
            if ctx.needs_input_grad[0]:
                grad_input = grad_output @ weight.t()  # intermediate pass, (B, in_dim)
            if ctx.needs_input_grad[1]:
                grad_weight = input.t() @ grad_output  # receiver pass, (in_dim, out_dim)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_bias = grad_output.sum(0)  # receiver pass, (out_dim,)
        return grad_input, grad_weight, grad_bias


class BatchedLinearFunction(torch.autograd.Function):
    """y[m] = input[m] @ weight[m] + bias[m] for M models at once, with the same hand-written backward."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
        # input (M, B, in_dim), weight (M, in_dim, out_dim), bias (M, out_dim) -> (M, B, out_dim)
        ctx.save_for_backward(input, weight)
        ctx.has_bias = bias is not None
        ctx.autocast = forward_autocast(input)
        return BatchedLinearFunction.outputs(input, weight, bias)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        # grad_output (M, B, out_dim)
        input, weight = ctx.saved_tensors
        grad_input = None
        with in_autocast(ctx.autocast):
            if ctx.needs_input_grad[0]:
                grad_input = BatchedLinearFunction.intermediate(grad_output, weight)
            grad_weight, grad_bias = BatchedLinearFunction.receivers(
                input, grad_output, weight=ctx.needs_input_grad[1], bias=ctx.has_bias and ctx.needs_input_grad[2])
        return grad_input, grad_weight, grad_bias

    @staticmethod
    def outputs(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The forward pass: input @ weight + bias per model, (M, B, out_dim)."""
        if bias is None:
            return torch.bmm(input, weight)
        return torch.baddbmm(bias.unsqueeze(1), input, weight)  # bias fused into the batched product

    @staticmethod
    def intermediate(grad_output: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The gradient sent back to the previous layer: grad_output @ weight.T, (M, B, in_dim)."""
        return torch.bmm(grad_output, weight.mT)

    @staticmethod
    def receivers(input: torch.Tensor, grad_output: torch.Tensor, *, weight: bool = True, bias: bool = True,
                  out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The gradients this layer keeps, each only if asked for: input.T @ grad_output (M, in_dim, out_dim)
        for the weight and the sum over the batch (M, out_dim) for the bias.

        `out` = (weight's, bias's) lets the caller receive them in place (the fused engine's flat gradient buffer).
        Autocast does not cast a product given out=: under autocast the product is made in its dtype, then copied into `out`.
        """
        out_w, out_b = out if out is not None else (None, None)
        if out_w is not None and torch.is_autocast_enabled(input.device.type):
            grad_weight = out_w.copy_(torch.bmm(input.mT, grad_output)) if weight else None
        else:
            grad_weight = torch.bmm(input.mT, grad_output, out=out_w) if weight else None
        grad_bias = torch.sum(grad_output, 1, out=out_b) if bias else None
        return grad_weight, grad_bias


class Linear(nn.Module):
    """Fully connected layer over LinearFunction; weight is (in_dim, out_dim).

    init="default" matches torch.nn.Linear (uniform in +-1/sqrt(in_dim) for weight and bias);
    init="randn" is the tutorial's standard-normal init, kept so its results can be reproduced.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, init: str = "default",
                 generator: torch.Generator | None = None):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init={init!r} is not known; choose one of {', '.join(INITS)}")
        self.in_dim, self.out_dim, self.init = in_dim, out_dim, init
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(out_dim)) if bias else None
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw the weights again with this layer's init: weight, then bias, from `generator` (torch's global one if None)."""
        with torch.no_grad():
            for p in (self.weight, self.bias):
                if p is not None:
                    draw_init(p, self.in_dim, self.init, generator)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return LinearFunction.apply(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, bias={self.bias is not None}, init={self.init}"


# ---- Activations: the modules between layers, and their derivatives for the fused engine's hand-written step

@dataclass(frozen=True)
class Activation:
    """An activation function: the module a network puts between its layers (NeuralNet, CNN), and its derivative for the fused engine."""
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
