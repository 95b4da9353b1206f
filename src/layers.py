"""A Linear layer written as a torch.autograd.Function, as in the original tutorial.

The weight is stored (in_dim, out_dim) so the forward pass reads ``input @ weight + bias``.
The backward pass has the tutorial's two parts:

* the *intermediate* pass, the gradient sent back to the previous layer: ``grad @ weight.T``;
* the *receiver* passes, the gradients this layer keeps: ``input.T @ grad`` for the weight and
  the column sums of ``grad`` for the bias.

Each is computed only when autograd asks for it (``ctx.needs_input_grad``), so a frozen weight
or an input that needs no gradient costs nothing and returns ``None``.
"""
import math

import torch
from torch import nn

INITS = ("default", "randn")


class LinearFunction(torch.autograd.Function):
    """y = input @ weight + bias, with a hand-written backward."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
        # input (B, in_dim), weight (in_dim, out_dim), bias (out_dim,) -> (B, out_dim)
        ctx.save_for_backward(input, weight)
        ctx.has_bias = bias is not None
        if bias is None:
            return input @ weight
        return torch.addmm(bias, input, weight)  # bias fused into the matrix product

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        # grad_output (B, out_dim)
        input, weight = ctx.saved_tensors
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = grad_output @ weight.t()  # intermediate pass, (B, in_dim)
        if ctx.needs_input_grad[1]:
            grad_weight = input.t() @ grad_output  # receiver pass, (in_dim, out_dim)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum(0)  # receiver pass, (out_dim,)
        return grad_input, grad_weight, grad_bias


class Linear(nn.Module):
    """Fully connected layer over LinearFunction; weight is (in_dim, out_dim).

    init="default" matches torch.nn.Linear (uniform in +-1/sqrt(in_dim) for weight and bias);
    init="randn" is the tutorial's standard-normal init, kept so its results can be reproduced.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, init: str = "default"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"module.init={init!r} is not known; choose one of {', '.join(INITS)}")
        self.in_dim, self.out_dim, self.init = in_dim, out_dim, init
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(out_dim)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the weights again with this layer's init."""
        with torch.no_grad():
            for p in (self.weight, self.bias):
                if p is None:
                    continue
                if self.init == "randn":
                    p.normal_()
                else:
                    bound = 1.0 / math.sqrt(self.in_dim)
                    p.uniform_(-bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return LinearFunction.apply(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, bias={self.bias is not None}, init={self.init}"
