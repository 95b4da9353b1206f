"""The fused engine: train many (candidate, fold) fits of NeuralNet at once, as one batched program.

Each fit is the one the GridSearchCV path trains (src.estimator): the same initial weights and the
same per-epoch order, drawn from its (seed, repeat, fold) generator (src.seeding); the same batches; the same
loss and optimizer arithmetic. The fits of a group share the data, batch size, epochs, optimizer class
and activation; each has its own layer sizes, init, optimizer hyper-parameters and training rows.

A model is its list of layer sizes, input to output (src.model.layer_sizes, NeuralNet's), of any depth;
its activation is NeuralNet's own module, with the derivative src.layers.ACTIVATIONS gives it. What the
engine cannot train (an optimizer, keyword or activation it does not reproduce, a module keyword it does
not build from) is named by unsupported() and unsupported_module(), so that src.engine sends such a job to
GridSearchCV instead.

Fits are laid out in stacks: M models padded to the stack's widest layers, with all parameters in
one flat buffer. A layer is then one batched matrix product (src.layers.BatchedLinearFunction) and an
optimizer step a few operations over the whole buffer, whatever M. Zero padding stays exactly zero
(padded units have zero weights in and out, so they get zero gradients), except under an activation
with f(0) != 0, which is masked. On the CPU the stacks are one per width (no work is wasted on
padding); on CUDA one stack holds the group (one per depth: padding adds units, not layers) and its
training step is captured in a CUDA graph. Given several GPUs, the group is cut by width into one
share per GPU, and the shares train at the same time, each in its own thread (CUDA kernels run while
Python waits, so the threads overlap).

The training step is written out by hand: the forward pass (Stack.forward, which also scores the
validation split), the softmax cross-entropy gradient, then each layer's receiver passes (straight
into the flat gradient buffer) and intermediate pass, which are BatchedLinearFunction's own. It
computes what autograd through BatchedLinearFunction computes (tests/test_fused.py checks it against
autograd), in fewer operations and without the autograd engine's per-step bookkeeping.

A stack trains in the context of its train.precision (src.precision). Under bf16 (autocast) the step's
matrix products take bfloat16 inputs, as they do under autograd (the receiver passes are copied into the
float32 gradient buffer), the logits come back in float32 for the loss, and theta and the optimizer stay float32.
"""
import contextlib
import functools
import inspect
import logging
import math
import os
import queue
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from src import precision as precisions
from src.estimator import PREDICT_BATCH_SIZE
from src.layers import ACTIVATIONS, BatchedLinearFunction, draw_init
from src.model import NeuralNet, layer_sizes, linear_keys
from src.seeding import fit_generator

log = logging.getLogger(__name__)

# The optimizer classes the engine reproduces, with the keyword arguments it supports and their defaults.
OPTIMIZERS = {
    "torch.optim.SGD": {"lr": None, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False},
    "torch.optim.Adam": {"lr": None, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
}
LAYOUTS = ("auto", "width", "padded")
_CAPTURE = threading.Lock()  # CUDA-graph captures of stacks trained in several threads (train(device=[...]))
WARMUP_STEPS = 3  # eager steps before a CUDA graph is captured (cuBLAS workspaces, the first momentum step)
CPU_STACK_BYTES = 1 << 28  # the largest stack on the CPU (stack_budget): 256 MiB; a job 4,096 wide trains its folds in two stacks, 8,192 one by one


@dataclass(frozen=True)
class FitSpec:
    """One fit: a candidate's hyper-parameters on one fold's training rows."""
    num_units: int
    init: str
    optimizer: dict          # keyword arguments of the optimizer class, e.g. {"lr": 0.01, "momentum": 0.9}
    seed: int
    fold: int
    train_idx: np.ndarray    # rows of X, in the order the estimator sees them (the fold's, after any validation split)
    valid_idx: np.ndarray | None = None  # rows of the internal validation split (train.valid_split), if any
    repeat: int | None = None  # the repeat of repeated cross-validation (None: the search does not repeat)
    hidden_sizes: tuple[int, ...] | None = None  # the hidden widths; None: NeuralNet's [num_units, num_units // 2]


@dataclass(frozen=True)
class Shared:
    """What every fit of a group shares."""
    optimizer: str = "torch.optim.SGD"
    activation: str = "relu"
    input_dim: int = 784
    num_classes: int = 10
    max_epochs: int = 25
    batch_size: int = 64
    shuffle: bool = True
    valid_batch_size: int = PREDICT_BATCH_SIZE  # the estimator's batches for the validation split (only their count is recorded)
    precision: str = "fp32"  # train.precision: a stack trains in src.precision.context (bf16: its products in bfloat16, theta float32)


@dataclass
class FitOutcome:
    """A trained fit: NeuralNet's state_dict, its per-epoch history as skorch records it, and divergence.

    A fit whose job waits for a later stack (its other folds) waits on disk (spill), and the job's scoring reads
    it back (take), so that a job trained fold by fold holds the stack it trains, not its earlier folds' fits too."""
    state_dict: dict | None
    epochs: list[dict]
    diverged: str | None     # "training loss became nan in epoch 3", as src.estimator.StopOnNonFiniteLoss says
    seconds: float           # its share of its stack's training time
    spilled: str | None = None  # the file its state_dict waits in (spill), removed once read back, or with the outcome

    def spill(self) -> None:
        """Move the state_dict to a temporary file (torch.save; the system's temporary folder)."""
        handle, path = tempfile.mkstemp(prefix="fit-", suffix=".pt")
        with os.fdopen(handle, "wb") as f:
            torch.save(self.state_dict, f)
        self.state_dict, self.spilled = None, path
        self._removal = weakref.finalize(self, Path(path).unlink, missing_ok=True)  # nor a job that never scores it, nor the process's end, leaves it behind

    def take(self) -> dict:
        """The state_dict, which the outcome then no longer holds (read back from its file if spilled)."""
        if self.spilled is not None:
            self.state_dict, self.spilled = torch.load(self.spilled, weights_only=True), None
            self._removal()
        state_dict, self.state_dict = self.state_dict, None
        return state_dict


# The NeuralNet keywords the engine builds its models from: those a fit (FitSpec) or its group (Shared) carries.
# A keyword NeuralNet gains (a new module.* key) is then one the engine does not reproduce until it carries it too.
MODULE_KEYS = tuple(k for k in inspect.signature(NeuralNet).parameters if k in {f.name for f in (*fields(FitSpec), *fields(Shared))})


def unsupported(optimizer: str, kwargs: dict) -> str | None:
    """Why fits with this optimizer cannot be fused, or None if they can."""
    if optimizer not in OPTIMIZERS:
        return f"optimizer {optimizer} (the fused engine reproduces {', '.join(OPTIMIZERS)})"
    defaults = {name: p.default for name, p in inspect.signature(getattr(torch.optim, optimizer.rsplit(".", 1)[-1])).parameters.items()}
    # a keyword the engine does not reproduce is harmless at the value torch takes without it (amsgrad=false written out)
    extra = sorted(k for k in set(kwargs) - set(OPTIMIZERS[optimizer]) if k not in defaults or kwargs[k] != defaults[k])
    if extra:
        return f"optimizer keyword {extra[0]} (the fused engine supports {', '.join(OPTIMIZERS[optimizer])})"
    return None


def unsupported_module(module: dict) -> str | None:
    """Why fits of NeuralNet with these keyword arguments (the job's module.*) cannot be fused, or None if they can."""
    extra = sorted(set(module) - set(MODULE_KEYS))
    if extra:
        return f"module.{extra[0]} (the fused engine builds NeuralNet from {', '.join(MODULE_KEYS)})"
    activation = ACTIVATIONS.get(module["activation"])
    if activation is None or activation.derivative is None:  # its backward pass is written by hand
        trained = [name for name, a in ACTIVATIONS.items() if a.derivative is not None]
        return f"activation {module['activation']} (the fused engine has the derivatives of {', '.join(trained)})"
    return None


def fit_sizes(spec: FitSpec, shared: Shared) -> list[int]:
    """The fit's layer sizes, input to output: NeuralNet's (src.model.layer_sizes)."""
    return layer_sizes(spec.num_units, shared.input_dim, shared.num_classes, spec.hidden_sizes)


def train(X: np.ndarray, y: np.ndarray, specs: list[FitSpec], shared: Shared, **options) -> list[FitOutcome]:
    """Train every fit (train_stacks, with its `options`); returns one outcome per spec, in order."""
    outcomes: list[FitOutcome | None] = [None] * len(specs)
    for indices, trained in train_stacks(X, y, specs, shared, **options):
        for i, outcome in zip(indices, trained):
            outcomes[i] = outcome
    return outcomes


def train_stacks(X: np.ndarray, y: np.ndarray, specs: list[FitSpec], shared: Shared, *, device: str | Sequence[str] = "cpu",
                 layout: str = "auto", graph: bool | None = None,
                 memory_budget: int | None = None) -> Iterator[tuple[list[int], list[FitOutcome]]]:
    """Train every fit, stack by stack; the data go to each device once. Yields (indices into specs, their
    outcomes) as each stack finishes, in the calling thread, so that the caller can score, record and free
    them before more are trained: a sweep's memory is then its largest stack's, not the sum of its fits.

    device: one device, or several (the GPUs of a machine): the fits are then split into one share per
    device (spread) and the shares train at the same time, each in its own thread.
    layout: "width" (a stack per width), "padded" (one stack per device and depth), "auto" (padded on CUDA, width on the CPU).
    graph: capture the step in a CUDA graph (default: on CUDA). memory_budget: bytes a stack may use
    (default: stack_budget(device)); a stack that would need more is split.
    """
    devices = [device] if isinstance(device, str) else list(device)
    shares = [(d, members) for d, members in zip(devices, spread(specs, shared, len(devices))) if members]

    def share_stacks(device: str, members: list[int]) -> Iterator[tuple[list[int], list[FitOutcome]]]:
        Xd, yd = on_device(X, device), on_device(y, device)
        use_graph = device.startswith("cuda") if graph is None else graph
        budget = memory_budget if memory_budget is not None else stack_budget(device)
        mine = [specs[i] for i in members]
        with torch.cuda.device(device) if device.startswith("cuda") else contextlib.nullcontext():  # this thread's GPU
            for stack_members in plan(mine, shared, layout=layout, device=device, budget=budget, n_rows=len(X)):
                trained = Stack([mine[i] for i in stack_members], shared, Xd, yd).train(graph=use_graph)  # the stack is freed here
                yield [members[i] for i in stack_members], trained

    if len(shares) == 1:
        yield from share_stacks(*shares[0])
        return
    for device, _ in shares:  # copy the data in this thread, before the shares start
        on_device(X, device), on_device(y, device)
    finished: queue.Queue = queue.Queue()

    def run_share(device: str, members: list[int]) -> None:
        try:
            for item in share_stacks(device, members):
                finished.put(item)
        finally:
            finished.put(None)  # this share is done (or failed: its future re-raises below)

    with ThreadPoolExecutor(len(shares), thread_name_prefix="fused") as pool:
        futures = [pool.submit(run_share, d, members) for d, members in shares]
        running = len(shares)
        while running:
            item = finished.get()
            if item is None:
                running -= 1
            else:
                yield item
        for done in futures:
            done.result()  # re-raises a share's error (out of memory ...)


def spread(specs: list[FitSpec], shared: Shared, n: int) -> list[list[int]]:
    """Indices into specs for each of n devices: the fits in order of layer sizes, cut into n runs of about equal work
    (fits of one width stay together where the cut allows, so that stacks on a device waste little on padding)."""
    order = sorted(range(len(specs)), key=lambda i: fit_sizes(specs[i], shared))
    cost = [fit_cost(specs[i], shared) for i in order]
    total, done = sum(cost) or 1.0, 0.0
    shares: list[list[int]] = [[] for _ in range(n)]
    for i, c in zip(order, cost):
        shares[min(n - 1, int((done + c / 2) / total * n))].append(i)  # the share its middle falls in
        done += c
    return [sorted(share) for share in shares]


def fit_cost(spec: FitSpec, shared: Shared) -> float:
    """A fit's work per epoch, in multiply-adds: its weights times the rows it trains on."""
    sizes = fit_sizes(spec, shared)
    return sum(a * b for a, b in zip(sizes, sizes[1:])) * len(spec.train_idx)


_on_device: dict[tuple[int, str], torch.Tensor] = {}


def on_device(array: np.ndarray, device: str) -> torch.Tensor:
    """`array` as a tensor on `device`: copied once while the array lives (the data sets are read-only and
    cached, so the fits of every group and their scoring share one copy); on the CPU, no copy at all."""
    place = torch.device(device)
    if place.type == "cuda" and place.index is None:  # "cuda" and "cuda:<current>" are one copy
        place = torch.device("cuda", torch.cuda.current_device())
    key = (id(array), str(place))
    if key not in _on_device:
        with warnings.catch_warnings():  # nothing writes to the cached, read-only arrays
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            _on_device[key] = torch.as_tensor(array, device=device)
        weakref.finalize(array, _on_device.pop, key, None)
    return _on_device[key]


def plan(specs: list[FitSpec], shared: Shared, *, layout: str = "auto", device: str = "cpu",
         budget: float = math.inf, n_rows: int = 0) -> list[list[int]]:
    """Which fits train together: lists of indices into specs, each list one stack that fits in `budget` bytes."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not known; choose one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = "padded" if device.startswith("cuda") else "width"
    # a stack pads its fits to its widest layers, so they must have as many layers: "padded" is a stack per depth
    stack_of = tuple if layout == "width" else len
    by_shape: dict[object, list[int]] = {}
    for i, spec in enumerate(specs):
        by_shape.setdefault(stack_of(fit_sizes(spec, shared)), []).append(i)
    groups = list(by_shape.values())
    budget = budget - n_rows * (shared.input_dim * 4 + 8)  # X (float32) and y (int64) live on the device once
    stacks = []
    while groups:
        members = groups.pop(0)
        if len(members) > 1 and stack_bytes([specs[i] for i in members], shared, device) > budget:
            half = len(members) // 2
            log.info(f"fused: {len(members)} fits would not fit in {budget / 2**30:.1f} GiB; training them in two stacks")
            groups[:0] = [members[:half], members[half:]]
        else:
            stacks.append(members)
    return stacks


def batch_rows(specs: list[FitSpec], shared: Shared) -> int:
    """The rows of a stack's batch: train.batch_size, or fewer where no fit has that many rows (a batch_size of
    10**7 on 400-row folds is one batch of 400, as skorch's DataLoader makes it, not buffers for 10**7 rows)."""
    return max(1, min(shared.batch_size, max(len(s.train_idx) for s in specs)))


def stack_bytes(specs: list[FitSpec], shared: Shared, device: str = "cpu") -> int:
    """An estimate of the memory (bytes, on `device`) one stack of these fits needs, besides the data: the most of
    - training: theta, its gradient and the optimizer's flat buffers (optimizer_buffers), activations, the
      epoch's batch tables and validation batches;
    - handing back: theta, once the rest is freed (Stack.free_training_buffers), and a copy of each fit on the CPU;
    - scoring, after the stack is freed: the fits not scored yet, on the CPU, and one fit's net and prediction
      batch (src.estimator.PretrainedNet: each fit's weights are freed once its net is scored).
    On CUDA the copies of the fits are on the host, not the device."""
    M, B = len(specs), batch_rows(specs, shared)
    widths = [max(col) for col in zip(*(fit_sizes(s, shared) for s in specs))]
    numel = M * sum(a * b + b for a, b in zip(widths, widths[1:]))
    activations = 3 * M * B * sum(widths) * 4                      # inputs, outputs and gradients of each layer
    steps = max(math.ceil(len(s.train_idx) / B) for s in specs)
    tables = 2 * steps * M * B * (8 + 4)                            # each epoch's row order and row weights, host and device
    evaluation = M * min(shared.valid_batch_size, max((len(s.valid_idx) for s in specs if s.valid_idx is not None), default=0)) * sum(widths) * 4
    training = (2 + optimizer_buffers(specs, shared)) * numel * 4 + activations + tables + evaluation
    kept = sum(params_bytes(s, shared) for s in specs) if not device.startswith("cuda") else 0  # the trained fits, copied out
    rows = max(len(s.train_idx) + (0 if s.valid_idx is None else len(s.valid_idx)) for s in specs)  # the most a fit scores
    scoring = max(params_bytes(s, shared) for s in specs) + 2 * min(shared.valid_batch_size, rows) * sum(widths) * 4
    return max(training, numel * 4 + kept, kept + scoring)


def optimizer_buffers(specs: list[FitSpec], shared: Shared) -> int:
    """How many flat buffers the size of theta (float32) a stack's optimizer takes at most (FlatSGD, FlatAdam): its
    state, its per-element hyper-parameters (where the fits' values differ) with Stack.model_of (int64: two) that
    spreads them, and the temporaries of a step."""
    adam = shared.optimizer.endswith("Adam")
    options = [{**OPTIMIZERS.get(shared.optimizer, {}), **s.optimizer} for s in specs]  # (the preflight asks of any optimizer)
    differ = {k for k in set().union(*options) if any(o.get(k) != options[0].get(k) for o in options)}
    if adam:  # exp_avg, exp_avg_sq; per element: beta1 and beta2 (three), eps, weight_decay; the step's denominators
        state, per_element, temporaries = 2, len(differ - {"lr"}) + 2 * ("betas" in differ), 6
    else:  # the momentum buffer; per element: lr, momentum, weight_decay, and the dampening and Nesterov factors
        state, per_element = int(any(o.get("momentum") for o in options)), len(differ) + 2 * ("momentum" in differ)
        temporaries = int(bool(differ & {"lr", "momentum", "dampening"}) or any(o.get("dampening") for o in options))
        temporaries += 3 * any(o.get("nesterov") for o in options)
    temporaries += 2 * any(o.get("weight_decay") for o in options)
    spread = 2 if adam or per_element else 0
    return state + per_element + spread + temporaries


def params_bytes(spec: FitSpec, shared: Shared) -> int:
    """The bytes of one fit's parameters, at its own widths (a trained fit, as a state_dict)."""
    sizes = fit_sizes(spec, shared)
    return 4 * sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def free_memory(device: str) -> int:
    """Bytes the fits may take: 90% of the GPU's free memory, or 90% of the machine's available memory."""
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0] * 0.9)
    try:  # MemAvailable: free memory plus the page cache the kernel would give back
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return int(kib * 1024 * 0.9)
    except (OSError, StopIteration, ValueError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 0.9)
    except (ValueError, OSError, AttributeError):
        return 2**62


def stack_budget(device: str) -> int:
    """Bytes one stack may take: free_memory on CUDA (one big stack fills the GPU); on the CPU at most
    CPU_STACK_BYTES, since there the work is arithmetic, a larger stack is no faster, and a sweep's peak
    memory should not grow with its number of candidates."""
    return free_memory(device) if device.startswith("cuda") else min(free_memory(device), CPU_STACK_BYTES)


def _views(flat: torch.Tensor, shapes: list[tuple]) -> list[torch.Tensor]:
    """Consecutive views of a flat buffer, one per shape."""
    out, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append(flat[start : start + n].view(shape))
        start += n
    return out


class Stack:
    """M fits padded to the widest, with parameters, gradients and optimizer state in flat buffers."""

    def __init__(self, specs: list[FitSpec], shared: Shared, X: torch.Tensor, y: torch.Tensor):
        shared = replace(shared, batch_size=batch_rows(specs, shared))  # the same batches, buffers no larger than the rows
        self.specs, self.shared, self.X, self.y = specs, shared, X, y
        device, M, B = X.device, len(specs), shared.batch_size
        sizes = [fit_sizes(s, shared) for s in specs]
        if len({len(s) for s in sizes}) > 1:
            raise ValueError(f"the fits of a stack must have as many layers (plan() stacks them so), not {sorted({len(s) - 1 for s in sizes})}")
        pad = [max(col) for col in zip(*sizes)]  # input_dim, each hidden layer's width, num_classes
        self.shapes = [shape for n_in, n_out in zip(pad, pad[1:]) for shape in ((M, n_in, n_out), (M, n_out))]
        numels = [math.prod(s) for s in self.shapes]
        self.theta = torch.zeros(sum(numels), device=device)   # W1, b1, W2, b2, ... of every model
        self.grad = torch.zeros_like(self.theta)
        self.params, self.grads = _views(self.theta, self.shapes), _views(self.grad, self.shapes)
        self.layers = list(zip(self.params[0::2], self.params[1::2]))      # (weight (M, in, out), bias (M, out)) of each layer
        self.layer_grads = list(zip(self.grads[0::2], self.grads[1::2]))  # their gradients, in the same shapes
        self.sizes, self.generators = sizes, []
        for m, spec in enumerate(specs):  # NeuralNet's init, drawn in its order from the fit's own generator
            g = fit_generator(spec.seed, spec.fold, spec.repeat)
            for (weight, bias), n_in, n_out in zip(self.layers, sizes[m], sizes[m][1:]):
                for part in (weight[m, :n_in, :n_out], bias[m, :n_out]):
                    if part.is_contiguous() and part.device.type == "cpu":  # drawn in place: no copy of a layer's size
                        draw_init(part, n_in, spec.init, g)
                    else:  # padded, or on a GPU: drawn on the CPU, as NeuralNet draws it, then copied in
                        part.copy_(draw_init(torch.empty(part.shape), n_in, spec.init, g))
            self.generators.append(g)
        activation = ACTIVATIONS[shared.activation]
        self.act, self.dact = activation.module(), activation.derivative  # NeuralNet's own activation module
        self.masks = None  # padded units stay zero without a mask where f(0) = 0
        if self.act(torch.zeros(())).item() != 0 and any(s != pad for s in sizes):
            self.masks = [(torch.arange(pad[i], device=device) < torch.tensor([s[i] for s in sizes], device=device)[:, None])
                          .unsqueeze(1).float() for i in range(1, len(pad) - 1)]  # (M, 1, width): 1 on a model's real units
        self.optimizer = (FlatAdam if shared.optimizer.endswith("Adam") else FlatSGD)(self, [s.optimizer for s in specs])
        self.batch_tables(specs, B, device)
        self.batch_idx = torch.zeros(M, B, dtype=torch.long, device=device)   # the step's inputs (static for a CUDA graph)
        self.batch_w = torch.zeros(M, B, device=device)
        self.minus_one = torch.full((M, B, 1), -1.0, device=device)
        self.loss_sum = torch.zeros(M, device=device)
        self.graph, self.warm_steps = None, 0

    def batch_tables(self, specs: list, B: int, device) -> None:
        """The epoch's batch tables: n_train (each fit's training rows), steps (batches of the longest fit), idle (the
        fits a step has no rows for) and weights (S, M, B): 1/rows on each batch's rows, 0 on padding."""
        M = len(specs)
        self.n_train = [len(s.train_idx) for s in specs]
        self.steps = max(math.ceil(n / B) for n in self.n_train)
        counts = np.clip(np.array(self.n_train)[None, :] - np.arange(self.steps)[:, None] * B, 0, B)  # (S, M) rows per batch
        self.idle = {s: [m for m in range(M) if counts[s, m] == 0] for s in range(self.steps) if (counts[s] == 0).any()}
        weights = (np.arange(B)[None, None, :] < counts[:, :, None]) / np.maximum(counts, 1)[:, :, None]
        self.weights = torch.tensor(weights, dtype=torch.float32, device=device)

    @functools.cached_property
    def model_of(self) -> torch.Tensor:
        """The model each element of theta belongs to (int64: twice theta's memory), made only where it is used:
        for per-model hyper-parameters (FlatOptimizer.per_element) and Adam's per-model step sizes."""
        out = torch.empty(self.theta.numel(), dtype=torch.long, device=self.theta.device)
        models = torch.arange(len(self.specs), device=out.device)
        for segment, shape in zip(_views(out, self.shapes), self.shapes):
            segment.copy_(models.view(-1, *[1] * (len(shape) - 1)))  # (M, ...): model m's block is m
        return out

    # ---- one step ---------------------------------------------------------------------------------

    def forward(self, h: torch.Tensor, hidden: list | None = None) -> torch.Tensor:
        """Every model's logits (M, B, num_classes) on its rows h (M, B, input_dim), as NeuralNet.forward computes
        them; appends each hidden layer's (pre-activation, output) to `hidden`, if given, for the backward pass."""
        *inner, (weight, bias) = self.layers
        for i, (w, b) in enumerate(inner):
            z = BatchedLinearFunction.outputs(h, w, b)  # (M, B, width)
            h = self.act(z)
            if self.masks is not None:
                h = h * self.masks[i]
            if hidden is not None:
                hidden.append((z, h))
        return BatchedLinearFunction.outputs(h, weight, bias)

    def step(self) -> None:
        """One optimizer step of every model on its batch (batch_idx, batch_w); adds the batch's loss to loss_sum."""
        self.gradients()
        self.optimizer.step()

    def gradients(self) -> None:
        """Each model's gradient of its mean cross-entropy over its batch's real rows, into the flat buffer `grad`."""
        xb = self.X[self.batch_idx]                       # (M, B, input_dim)
        yb = self.y[self.batch_idx].unsqueeze(-1)         # (M, B, 1)
        w = self.batch_w                                  # (M, B): 1/rows of the model's batch, 0 on padding
        hidden: list[tuple[torch.Tensor, torch.Tensor]] = []
        logp = torch.log_softmax(precisions.full(self.forward(xb, hidden)), -1)  # (M, B, num_classes), float32
        pre, inputs = [z for z, _ in hidden], [xb, *(h for _, h in hidden)]  # hidden layer i's pre-activation; layer i's input
        self.loss_sum -= (logp.gather(-1, yb).squeeze(-1) * (w > 0)).sum(1)
        grad = logp.exp_().scatter_add_(-1, yb, self.minus_one).mul_(w.unsqueeze(-1))  # (softmax - onehot) / rows
        for i in reversed(range(len(self.layers))):
            BatchedLinearFunction.receivers(inputs[i], grad, out=self.layer_grads[i])
            if i:
                grad = BatchedLinearFunction.intermediate(grad, self.layers[i][0])
                grad = grad.mul_(self.dact(pre[i - 1], inputs[i]))

    def run_step(self, s: int, graph: bool) -> None:
        """Step s of the epoch: eager, or a replay of the step captured in a CUDA graph."""
        self.batch_idx.copy_(self.order[s], non_blocking=True)
        self.batch_w.copy_(self.weights[s], non_blocking=True)
        idle = self.idle.get(s)
        if idle:  # a model whose fold has fewer batches sits this step out, optimizer state and all
            saved = self.optimizer.snapshot(idle)
            self.step()
            self.optimizer.restore(idle, saved)
        elif self.graph is not None:
            self.graph.replay()
        elif graph:
            self._warm_up_or_capture()
        else:
            self.step()

    def _warm_up_or_capture(self) -> None:
        """Eager steps on a side stream first (lazy cuBLAS set-up, the first momentum step), as PyTorch's
        CUDA-graph docs do; then this step is recorded in a graph and replayed."""
        current = torch.cuda.current_stream(self.X.device)
        if self.warm_steps < WARMUP_STEPS:
            side = torch.cuda.Stream(self.X.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):
                self.step()
            current.wait_stream(side)
            self.warm_steps += 1
            return
        self.graph = torch.cuda.CUDAGraph()
        # One capture at a time: capturing begins with a device-wide sync, which another thread's capture forbids.
        # thread_local: stacks in other threads keep working (and allocating) while this one captures.
        with _CAPTURE, torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.step()  # recorded, not run
        self.graph.replay()

    # ---- epochs -----------------------------------------------------------------------------------

    def epoch_order(self) -> torch.Tensor:
        """(S, M, B) rows of X for each step of this epoch: each model's training rows, permuted by its generator."""
        M, B = len(self.specs), self.shared.batch_size
        order = np.zeros((M, self.steps * B), dtype=np.int64)
        for m, spec in enumerate(self.specs):
            n = len(spec.train_idx)
            pos = torch.randperm(n, generator=self.generators[m]).numpy() if self.shared.shuffle else np.arange(n)
            order[m, :n] = spec.train_idx[pos]
        cuda = self.X.device.type == "cuda"  # pinned, so that the copy does not wait for the epoch still running
        staged = torch.empty((self.steps, M, B), dtype=torch.long, pin_memory=cuda)
        staged.numpy()[:] = order.reshape(M, self.steps, B).transpose(1, 0, 2)
        return staged.to(self.X.device, non_blocking=True)

    @torch.no_grad()
    def evaluate(self, rows: list[np.ndarray]) -> tuple[list[float], list[float]]:
        """Mean loss and accuracy of each model on its own rows (the validation split), in chunks."""
        M, device = len(self.specs), self.X.device
        longest = max(len(r) for r in rows)
        loss, correct = torch.zeros(M, device=device), torch.zeros(M, device=device)
        chunk = self.shared.valid_batch_size
        for start in range(0, longest, chunk):
            idx = np.zeros((M, min(chunk, longest - start)), dtype=np.int64)
            real = np.zeros(idx.shape, dtype=np.float32)
            for m, r in enumerate(rows):
                part = r[start : start + idx.shape[1]]
                idx[m, : len(part)], real[m, : len(part)] = part, 1
            idx, real = torch.from_numpy(idx).to(device), torch.from_numpy(real).to(device)
            logp, yb = torch.log_softmax(precisions.full(self.forward(self.X[idx])), -1), self.y[idx]
            loss -= (logp.gather(-1, yb.unsqueeze(-1)).squeeze(-1) * real).sum(1)
            correct += ((logp.argmax(-1) == yb) * real).sum(1)
        n = torch.tensor([len(r) for r in rows], device=device, dtype=torch.float32)
        return (loss / n).tolist(), [c / len(r) for c, r in zip(correct.tolist(), rows)]  # accuracy as scikit-learn computes it

    @torch.no_grad()
    def train(self, graph: bool = False) -> list[FitOutcome]:
        """Train every model for max_epochs (in the context of train.precision); a model whose training loss turns
        non-finite stops being recorded."""
        with precisions.context(self.shared.precision, self.X.device):
            return self._train(graph)

    def _train(self, graph: bool) -> list[FitOutcome]:
        M, B = len(self.specs), self.shared.batch_size
        histories: list[list[dict]] = [[] for _ in range(M)]
        diverged: list[str | None] = [None] * M
        valid = [s.valid_idx for s in self.specs]
        has_valid = all(v is not None and len(v) for v in valid)
        best_acc = [-math.inf] * M
        start = time.perf_counter()
        n_train = torch.tensor(self.n_train, device=self.X.device)
        next_order = self.epoch_order()
        for epoch in range(1, self.shared.max_epochs + 1):
            tick = time.perf_counter()
            self.order = next_order
            self.loss_sum.zero_()
            for s in range(self.steps):
                self.run_step(s, graph)
            # the next epoch's order is drawn while the device still works on this one
            next_order = self.epoch_order() if epoch < self.shared.max_epochs else None
            train_loss = (self.loss_sum / n_train).tolist()  # the one host sync of the epoch
            valid_loss, valid_acc = self.evaluate(valid) if has_valid else (None, None)
            dur = time.perf_counter() - tick
            for m in range(M):
                if diverged[m] is not None:
                    continue
                row = {"epoch": epoch, "train_batch_count": math.ceil(self.n_train[m] / B)}
                if has_valid:
                    row["valid_batch_count"] = math.ceil(len(valid[m]) / self.shared.valid_batch_size)
                row["train_loss"] = train_loss[m]
                if has_valid:
                    row["valid_loss"], row["valid_acc"] = valid_loss[m], valid_acc[m]
                    row["valid_acc_best"] = valid_acc[m] > best_acc[m]
                    best_acc[m] = max(best_acc[m], valid_acc[m])
                row["dur"] = dur
                histories[m].append(row)
                if not math.isfinite(train_loss[m]):
                    diverged[m] = f"training loss became {train_loss[m]} in epoch {epoch}"
            if all(d is not None for d in diverged):
                break
        seconds = time.perf_counter() - start
        log.info(f"fused: {M} fits, {self.steps} steps of {B} rows per epoch, {epoch} epochs on {self.X.device}: {seconds:.2f} s "
                 f"({seconds / epoch / self.steps * 1e6:.0f} us per step of all {M})")
        seconds /= M
        self.free_training_buffers()  # before the fits are copied out: the copies take their place
        return [FitOutcome(self.state_dict(m), histories[m], diverged[m], seconds) for m in range(M)]

    def free_training_buffers(self) -> None:
        """Drop all but the parameters: gradients, optimizer state, per-element tensors, the CUDA graph (and its
        memory pool), the epoch's tables. The stack is then done training; its fits can be read (state_dict)."""
        self.grad = self.grads = self.layer_grads = self.optimizer = self.graph = self.masks = None
        self.order = self.weights = self.batch_idx = self.batch_w = self.minus_one = None
        self.__dict__.pop("model_of", None)

    def state_dict(self, m: int) -> dict:
        """Model m as NeuralNet's state_dict (its true widths): one copy, on the CPU (off the GPU), of its part of theta."""
        sizes, out = self.sizes[m], {}
        for (weight_key, bias_key), (weight, bias), n_in, n_out in zip(linear_keys(sizes), self.layers, sizes, sizes[1:]):
            out[weight_key] = weight[m, :n_in, :n_out].to("cpu", copy=True)
            out[bias_key] = bias[m, :n_out].to("cpu", copy=True)
        return out


class FlatOptimizer:
    """An optimizer over a stack's flat buffers; per-model hyper-parameters become per-element ones."""

    def __init__(self, stack: Stack, kwargs: list[dict], defaults: dict):
        # a weak reference: the stack owns its optimizer, and a cycle between them would keep the stack's buffers
        # (gigabytes for a wide fit) alive after training until the garbage collector happened to run
        self.stack = weakref.proxy(stack)
        self.hyper = {k: [kw.get(k, default) for kw in kwargs] for k, default in defaults.items()}
        self.state: list[torch.Tensor] = []   # flat buffers shaped like theta

    def per_element(self, values: list, neutral: float | None = None) -> float | torch.Tensor | None:
        """None when every model has the neutral value (the term drops out), a Python float when every
        model has the same value (cheapest), else a flat tensor like theta."""
        if all(v == values[0] for v in values):
            return None if values[0] == neutral else float(values[0])
        return torch.tensor(values, dtype=torch.float32, device=self.stack.theta.device)[self.stack.model_of]

    def snapshot(self, models: list[int]) -> list[torch.Tensor]:
        """The parameters and optimizer state of some models, to put back after a step they sit out."""
        return [seg[m].clone() for flat in [self.stack.theta, *self.state] for seg in _views(flat, self.stack.shapes) for m in models]

    def restore(self, models: list[int], saved: list[torch.Tensor]) -> None:
        """Put back what snapshot() took."""
        it = iter(saved)
        for flat in [self.stack.theta, *self.state]:
            for seg in _views(flat, self.stack.shapes):
                for m in models:
                    seg[m].copy_(next(it))


class FlatSGD(FlatOptimizer):
    """torch.optim.SGD's arithmetic (momentum, dampening, weight decay, Nesterov) over flat buffers."""

    def __init__(self, stack: Stack, kwargs: list[dict]):
        super().__init__(stack, kwargs, OPTIMIZERS["torch.optim.SGD"])
        h = self.hyper
        # torch.optim.SGD uses no dampening and no Nesterov term without momentum
        keep = [1.0 - d if m else 1.0 for d, m in zip(h["dampening"], h["momentum"])]
        nesterov = [float(bool(n and m)) for n, m in zip(h["nesterov"], h["momentum"])]
        self.lr = self.per_element(h["lr"])
        self.momentum = self.per_element(h["momentum"], neutral=0.0)
        self.weight_decay = self.per_element(h["weight_decay"], neutral=0.0)
        self.keep, self.nesterov = self.per_element(keep, neutral=1.0), self.per_element(nesterov, neutral=0.0)
        self.buf = None if self.momentum is None else torch.zeros_like(stack.theta)
        self.state = [] if self.buf is None else [self.buf]
        self.started = False

    def step(self) -> None:
        theta, grad = self.stack.theta, self.stack.grad
        if self.weight_decay is not None:
            grad = grad + self.weight_decay * theta
        if self.buf is not None:
            if not self.started:  # the first step copies the gradient into the buffer, as torch does
                self.buf.copy_(grad)
            else:
                self.buf.mul_(self.momentum).add_(grad if self.keep is None else grad * self.keep)
            if self.nesterov is None:
                grad = self.buf
            elif isinstance(self.nesterov, float):
                grad = grad + self.momentum * self.buf
            else:
                grad = torch.where(self.nesterov > 0, grad + self.momentum * self.buf, self.buf)
        self.started = True
        if isinstance(self.lr, float):
            theta.sub_(grad, alpha=self.lr)
        else:
            theta.sub_(grad * self.lr)


class FlatAdam(FlatOptimizer):
    """torch.optim.Adam's arithmetic (betas, eps, weight decay; no amsgrad) over flat buffers, with per-model step counts."""

    def __init__(self, stack: Stack, kwargs: list[dict]):
        super().__init__(stack, kwargs, OPTIMIZERS["torch.optim.Adam"])
        h, device = self.hyper, stack.theta.device
        beta1, beta2 = [b[0] for b in h["betas"]], [b[1] for b in h["betas"]]
        self.one_minus_beta1 = self.per_element([1 - b for b in beta1])
        self.beta2, self.one_minus_beta2 = self.per_element(beta2), self.per_element([1 - b for b in beta2])
        self.eps, self.weight_decay = self.per_element(h["eps"]), self.per_element(h["weight_decay"], neutral=0.0)
        # The step-dependent factors are computed per model in float64, as torch computes them in Python floats.
        f64 = dict(dtype=torch.float64, device=device)
        self.lr64, self.beta1_64, self.beta2_64 = (torch.tensor(v, **f64) for v in (h["lr"], beta1, beta2))
        self.count = torch.zeros(len(kwargs), **f64)  # steps taken, per model
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(stack.theta), torch.zeros_like(stack.theta)
        self.state = [self.exp_avg, self.exp_avg_sq]

    def snapshot(self, models: list[int]) -> list[torch.Tensor]:
        return super().snapshot(models) + [self.count[models].clone()]

    def restore(self, models: list[int], saved: list[torch.Tensor]) -> None:
        super().restore(models, saved[:-1])
        self.count[models] = saved[-1]

    def step(self) -> None:
        theta, grad, model_of = self.stack.theta, self.stack.grad, self.stack.model_of
        if self.weight_decay is not None:
            grad = grad + self.weight_decay * theta
        self.count += 1
        self.exp_avg.lerp_(grad, self.one_minus_beta1)
        if isinstance(self.one_minus_beta2, float):
            self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=self.one_minus_beta2)
        else:
            self.exp_avg_sq.mul_(self.beta2).add_(grad * grad * self.one_minus_beta2)
        step_size = (self.lr64 / (1 - self.beta1_64 ** self.count)).float()[model_of]
        bias_correction2_sqrt = (1 - self.beta2_64 ** self.count).sqrt().float()[model_of]
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
        theta.sub_(self.exp_avg / denom * step_size)
