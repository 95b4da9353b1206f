"""The fused engine for any module: the fits that share a module's shape train as one program, through torch.func.

src.fused trains the MLP (NeuralNet) with a training step written out by hand. This module trains any
nn.Module that maps a batch of X to logits, the way PyTorch's model-ensembling tutorial does: the fits'
modules are built one by one (each drawing its initial weights from its own (seed, repeat, fold)
generator, exactly as the GridSearchCV path's estimator builds it), their parameters are stacked
(torch.func.stack_module_state), and one step of every fit is one forward pass, vmap over functional_call, and
autograd's backward pass of the sum of the fits' losses (each fit's parameters get that fit's gradient: the fits are
independent).

A stack (ModuleStack) is src.fused.Stack with the module's forward and gradient in place of the MLP's hand-written
ones: the same epochs, per-fit batch order and row weights, idle steps for a fit whose fold has fewer batches,
validation scoring, divergence and history, and the same optimizer arithmetic over one flat buffer of every
fit's parameters (src.fused.FlatSGD, FlatAdam: torch.optim.SGD's and Adam's). So each fit is the fit the
GridSearchCV path trains, to float rounding.

The fits of a stack share the module class and its keyword arguments but `init` (PER_FIT_MODULE_KEYS); each has
its own init draw, optimizer numbers and training rows. A module that vmap cannot run (a random operation such
as dropout, an in-place update of a tensor it does not batch), batch norm in training mode (its running
statistics are updated in place), or a parameter that needs no gradient is named by unsupported(), and
src.engine sends such a job to GridSearchCV instead.
"""
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from src import fused
from src.precision import full
from src.estimator import PREDICT_BATCH_SIZE
from src.seeding import fit_generator, takes_generator

PER_FIT_MODULE_KEYS = ("init",)  # module keywords that change a fit's initial values, not its shape: fits differing in them stack
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class FitSpec:
    """One fit: a candidate's module keywords and optimizer numbers on one fold's training rows."""
    module: dict             # keyword arguments of the module class (the estimator's module__*), without the generator
    optimizer: dict          # keyword arguments of the optimizer class, e.g. {"lr": 0.01, "momentum": 0.9}
    seed: int
    fold: int
    train_idx: np.ndarray    # rows of X, in the order the estimator sees them (after any internal validation split)
    valid_idx: np.ndarray | None = None  # rows of the internal validation split (train.valid_split), if any
    repeat: int | None = None  # the repeat of repeated cross-validation (None: the search does not repeat)


@dataclass(frozen=True)
class Shared:
    """What every fit of a group shares: the module class, the optimizer class and the training loop's settings."""
    module: type[nn.Module]
    optimizer: str = "torch.optim.SGD"
    max_epochs: int = 25
    batch_size: int = 64
    shuffle: bool = True
    valid_batch_size: int = PREDICT_BATCH_SIZE
    precision: str = "fp32"  # train.precision: src.fused.Stack.train's context


def build(module: type[nn.Module], kwargs: dict, generator: torch.Generator) -> nn.Module:
    """The fit's module, drawing its initial weights from `generator`, as the estimator builds it
    (src.estimator.SeededNeuralNetClassifier.initialize_module): a module that takes no `generator` keyword draws from
    torch's global generator, seeded from the fit's for the length of its construction and then put back."""
    if takes_generator(module):
        return module(**kwargs, generator=generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator.initial_seed())
        return module(**kwargs)


def unsupported(module: type[nn.Module], kwargs: dict, X: np.ndarray) -> str | None:
    """Why fits of `module(**kwargs)` cannot be trained as one vmapped program, or None if they can; the module runs
    one probe step of two fits on two rows of X."""
    name = f"{module.__module__}.{module.__qualname__}"
    try:
        net = build(module, kwargs, torch.Generator().manual_seed(0))
    except Exception as e:
        return f"{name}: building it failed ({type(e).__name__}: {e})"
    norms = [n for n, m in net.named_modules() if isinstance(m, BATCH_NORMS)]
    if norms:
        return f"{name}: batch norm in training mode ({norms[0]}: its running statistics are updated in place)"
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    if frozen:
        return f"{name}: parameter {frozen[0]} needs no gradient (torch.optim skips it; a stacked step would not)"
    if not any(True for _ in net.parameters()):
        return f"{name}: it has no parameters"
    params, buffers = stack_module_state([net, build(module, kwargs, torch.Generator().manual_seed(1))])
    rows = torch.tensor(np.array(X[:2]))  # a copy: the cached data sets are read-only
    x, y, w = rows.expand(2, *rows.shape), torch.zeros(2, len(rows), dtype=torch.long), torch.full((2, len(rows)), 0.5)
    try:  # one step, as ModuleStack.gradients takes it
        loss, _ = fit_losses(logits_of(net)(params, buffers, x), y, w)
        torch.autograd.grad(loss, list(params.values()))
    except Exception as e:
        return f"{name}: torch.func.vmap cannot run it ({type(e).__name__}: {str(e).strip().splitlines()[0]})"
    return None


def logits_of(net: nn.Module):
    """Every fit's logits (M, B, classes) on its rows x (M, B, ...), from the stacked parameters and buffers, through
    `net`'s code: torch.func.vmap over functional_call."""
    return vmap(lambda params, buffers, x: functional_call(net, (params, buffers), (x,)))


def fit_losses(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the sum over fits of each one's cross-entropy weighted by w (1/rows, 0 on padding): its gradient with respect to
    a fit's parameters is that fit's gradient, the fits being independent; each fit's summed cross-entropy over its real
    rows (M,), for the epoch's train_loss). logits (M, B, classes), y and w (M, B)."""
    nll = -torch.log_softmax(full(logits), -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (M, B), float32 under autocast too
    return (nll * w).sum(), (nll.detach() * (w > 0)).sum(1)


def stack_key(spec: FitSpec) -> str:
    """Fits with equal keys stack: the same module keywords but those that only change initial values."""
    return repr(sorted((k, v) for k, v in spec.module.items() if k not in PER_FIT_MODULE_KEYS))


def train(X: np.ndarray, y: np.ndarray, specs: list[FitSpec], shared: Shared, **options) -> list[fused.FitOutcome]:
    """Train every fit (train_stacks, with its `options`); returns one outcome per spec, in order."""
    outcomes: list[fused.FitOutcome | None] = [None] * len(specs)
    for indices, trained in train_stacks(X, y, specs, shared, **options):
        for i, outcome in zip(indices, trained):
            outcomes[i] = outcome
    return outcomes


def train_stacks(X: np.ndarray, y: np.ndarray, specs: list[FitSpec], shared: Shared, *, device: str = "cpu",
                 memory_budget: int | None = None) -> Iterator[tuple[list[int], list[fused.FitOutcome]]]:
    """Train every fit, stack by stack (a stack per stack_key, split where it would need more than `memory_budget`
    bytes; default src.fused.stack_budget); yields (indices into specs, their outcomes) as each stack finishes."""
    Xd, yd = fused.on_device(X, device), fused.on_device(y, device)
    budget = (memory_budget if memory_budget is not None else fused.stack_budget(device)) - X.nbytes - y.nbytes
    groups: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(stack_key(spec), []).append(i)
    todo = list(groups.values())
    while todo:
        members = todo.pop(0)
        if len(members) > 1 and stack_bytes([specs[i] for i in members], shared, X) > budget:
            half = len(members) // 2
            fused.log.info(f"fused: {len(members)} fits would not fit in {budget / 2**30:.1f} GiB; training them in two stacks")
            todo[:0] = [members[:half], members[half:]]
            continue
        yield members, ModuleStack([specs[i] for i in members], shared, Xd, yd).train()


def stack_bytes(specs: list[FitSpec], shared: Shared, X: np.ndarray) -> int:
    """An estimate of the memory a stack of these fits needs (bytes): per fit, its parameters four or five times over
    (parameters, gradients, per-element hyper-parameters, optimizer state, the trained copy handed back), and three
    times the outputs of its modules on one batch (outputs, their gradients, saved inputs), measured on one module."""
    net = build(shared.module, specs[0].module, torch.Generator().manual_seed(0))
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.numel() if isinstance(o, torch.Tensor) else 0))
             for m in net.modules()]
    B = fused.batch_rows(specs, shared)
    with torch.no_grad():
        net(torch.zeros(B, *np.asarray(X).shape[1:]))
    for h in hooks:
        h.remove()
    numel = sum(p.numel() for p in net.parameters())
    buffers = 5 + (1 if shared.optimizer.endswith("Adam") else 0)
    return len(specs) * (buffers * numel * 4 + 3 * sum(outputs) * 4)


class ModuleStack(fused.Stack):
    """M fits of one module's shape: their parameters stacked in one flat buffer (views shaped (M, ...) per parameter),
    a step autograd through vmap of functional_call of the module; the rest is src.fused.Stack's."""

    def __init__(self, specs: list[FitSpec], shared: Shared, X: torch.Tensor, y: torch.Tensor):
        shared = replace(shared, batch_size=fused.batch_rows(specs, shared))  # as fused.Stack: buffers no larger than the rows
        self.specs, self.shared, self.X, self.y = specs, shared, X, y
        device, M, B = X.device, len(specs), shared.batch_size
        self.generators = [fit_generator(s.seed, s.fold, s.repeat) for s in specs]
        nets = [build(shared.module, s.module, g) for s, g in zip(specs, self.generators)]  # each fit's init, then its shuffles
        params, buffers = stack_module_state(nets)  # {name: (M, ...)}, on the CPU
        self.keys = list(nets[0].state_dict())  # what the estimator's module loads (persistent buffers, no others)
        self.net = nets[0].to(device)  # the code functional_call runs; the values are the stack's
        self.names = list(params)
        self.shapes = [tuple(params[n].shape) for n in self.names]
        numels = [math.prod(s) for s in self.shapes]
        self.theta = torch.zeros(sum(numels), device=device)  # every parameter of every fit, one flat buffer
        self.grad = torch.zeros_like(self.theta)
        self.params = dict(zip(self.names, fused._views(self.theta, self.shapes)))
        self.grads = dict(zip(self.names, fused._views(self.grad, self.shapes)))
        with torch.no_grad():
            for n in self.names:
                self.params[n].copy_(params[n])
        self.buffers = {n: b.to(device) for n, b in buffers.items()}
        self.optimizer = (fused.FlatAdam if shared.optimizer.endswith("Adam") else fused.FlatSGD)(self, [s.optimizer for s in specs])
        self.logits = logits_of(self.net)
        self.batch_tables(specs, B, device)  # fused.Stack's
        self.batch_idx = torch.zeros(M, B, dtype=torch.long, device=device)
        self.batch_w = torch.zeros(M, B, device=device)
        self.loss_sum = torch.zeros(M, device=device)
        self.graph, self.warm_steps = None, 0

    def forward(self, h: torch.Tensor, hidden: list | None = None) -> torch.Tensor:
        """Every fit's logits (M, B, classes) on its rows h (M, B, ...), the module in eval mode (as skorch scores)."""
        self.net.eval()
        try:
            return self.logits(self.params, self.buffers, h)
        finally:
            self.net.train()

    def gradients(self) -> None:
        """Each fit's gradient of its mean cross-entropy over its batch's real rows, into the flat buffer `grad`: autograd
        through the vmapped forward pass (measured faster on the CPU than vmap of torch.func.grad, to the same values)."""
        params = {n: p.detach().requires_grad_() for n, p in self.params.items()}  # leaves sharing the stack's storage
        with torch.enable_grad():
            loss, nll = fit_losses(self.logits(params, self.buffers, self.X[self.batch_idx]), self.y[self.batch_idx], self.batch_w)
            grads = torch.autograd.grad(loss, [params[n] for n in self.names])
        for n, g in zip(self.names, grads):
            self.grads[n].copy_(g)
        self.loss_sum += nll

    def train(self, graph: bool = False) -> list[fused.FitOutcome]:
        """fused.Stack.train, eager (a CUDA graph of a vmapped step is not attempted)."""
        self.net.train()
        return super().train(graph=False)

    def state_dict(self, m: int) -> dict:
        """Fit m as its module's state_dict (CPU tensors)."""
        values = {**self.params, **self.buffers}
        return {k: values[k][m].detach().cpu().clone() for k in self.keys}
