"""An optimizer for the tests of a grid point that fails: `+optimizer.fail=true` makes its first step raise, as
an allocation that runs out of memory does. (A width too large for memory is now refused before anything runs.)"""
import torch


class FailingSGD(torch.optim.SGD):
    """torch.optim.SGD, whose step raises when built with fail=True."""

    def __init__(self, params, lr: float = 0.01, fail: bool = False, **kwargs):
        super().__init__(params, lr=lr, **kwargs)
        self.fail = fail

    def step(self, closure=None):
        if self.fail:
            raise RuntimeError("can't allocate memory (tests/failing_optimizer.py: this grid point fails on purpose)")
        return super().step(closure)
