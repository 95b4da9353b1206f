"""The skorch estimator the search cross-validates: NeuralNet wrapped in a NeuralNetClassifier."""
import json
import math
import warnings

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, ProgressBar
from skorch.dataset import Dataset as SkorchDataset
from skorch.dataset import ValidSplit, get_len

from src.model import NeuralNet

VERBOSITY = ("quiet", "fold", "epoch", "bar")


class BatchIterator:
    """Iterates a skorch dataset in whole batches: its arrays go to the device once, each batch is one index.

    Used in place of torch's DataLoader, which fetches samples one __getitem__ at a time and stacks
    them. skorch builds the training iterator once per fit, so the data move to the device once per
    fit. Shuffling draws a new permutation from torch's generator on every pass, so seeding torch
    keeps it repeatable. Datasets that are not plain arrays fall back to a DataLoader.
    """

    def __init__(self, dataset, batch_size: int = 64, shuffle: bool = False, device: str = "cpu"):
        self.batch_size, self.shuffle = batch_size, shuffle
        arrays = _arrays(dataset)
        if arrays is None:
            self.X = self.y = None
            self._loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle)
            return
        with warnings.catch_warnings():  # the cached data sets are read-only numpy arrays; nothing writes to them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self.X = torch.as_tensor(arrays[0], device=device)  # (n, n_features), shared with numpy on the CPU
            self.y = None if arrays[1] is None else torch.as_tensor(arrays[1], device=device)

    def __len__(self) -> int:
        return len(self._loader) if self.X is None else math.ceil(len(self.X) / self.batch_size)

    def __iter__(self):
        if self.X is None:
            yield from self._loader
            return
        n, bs = len(self.X), self.batch_size
        order = torch.randperm(n, device=self.X.device) if self.shuffle else None
        for i in range(0, n, bs):
            idx = slice(i, i + bs) if order is None else order[i : i + bs]  # a view when unshuffled
            yield self.X[idx], None if self.y is None else self.y[idx]


def _arrays(dataset) -> tuple | None:
    """(X, y) of a skorch Dataset over arrays, or of a Subset of one (skorch's ValidSplit); else None."""
    if isinstance(dataset, torch.utils.data.Subset):
        inner = _arrays(dataset.dataset)
        if inner is None:
            return None
        idx = np.asarray(dataset.indices)
        return inner[0][idx], None if inner[1] is None else inner[1][idx]
    if isinstance(dataset, SkorchDataset) and isinstance(dataset.X, (np.ndarray, torch.Tensor)):
        return dataset.X, dataset.y  # y is None when predicting
    return None


class SeededNeuralNetClassifier(NeuralNetClassifier):
    """NeuralNetClassifier that seeds torch at the start of every fit, and trains without per-batch host syncs.

    Module init and the per-epoch shuffling both draw from torch's global generator, so seeding in
    initialize() makes each fold, and so the whole search, repeatable.
    """

    def __init__(self, module, *args, seed: int = 0, **kwargs):
        super().__init__(module, *args, **kwargs)
        self.seed = seed

    def initialize(self):
        torch.manual_seed(self.seed)
        return super().initialize()

    def get_default_callbacks(self):
        # run_single_epoch below records train_loss / valid_loss itself; skorch's default callbacks for
        # them rebuild the epoch loss from a per-batch entry that would cost a host sync every batch.
        return [(name, cb) for name, cb in super().get_default_callbacks() if name not in ("train_loss", "valid_loss")]

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        """skorch's epoch loop, but the loss is summed on the device and read once per epoch.

        skorch's own loop calls loss.item() after every batch, which makes the host wait for the GPU.
        """
        if iterator is None:
            return
        total, count, batches = torch.zeros((), device=self.device), 0, 0
        for batch in iterator:
            self.notify("on_batch_begin", batch=batch, training=training)
            step = step_fn(batch, **fit_params)
            n = get_len(batch[0])
            total += step["loss"].detach() * n  # the criterion's mean over the batch, weighted by its size
            count, batches = count + n, batches + 1
            self.notify("on_batch_end", batch=batch, training=training, **step)
        self.history.record(f"{prefix}_batch_count", batches)
        self.history.record(f"{prefix}_loss", (total / max(count, 1)).item())


def epoch_history(net) -> list[dict]:
    """The net's per-epoch history (epoch, train_loss, dur, valid metrics), without the per-batch entries."""
    return [{k: v for k, v in row.items() if k != "batches"} for row in net.history.to_list()]


class HistoryToFile(Callback):
    """Appends each finished fit's per-epoch history as one JSON line to `path`."""

    def __init__(self, path: str):
        self.path = path

    def on_train_end(self, net, X=None, y=None, **kwargs):
        with open(self.path, "a") as f:
            f.write(json.dumps(epoch_history(net)) + "\n")


class Diverged(Exception):
    """A fit's training loss became NaN or infinite; its candidate is a result (status=diverged), not a crash."""

    def __init__(self, message: str, epochs: list[dict]):
        super().__init__(message)
        self.epochs = epochs  # the per-epoch history up to the divergence


class StopOnNonFiniteLoss(Callback):
    """Stops training at the end of the first epoch whose training loss is NaN or infinite, by raising Diverged.

    Checked once per epoch, on the loss the epoch loop already read back, so it adds no device sync;
    once a loss is NaN every later batch is too, so at most one epoch's work is spent on it.
    """

    def on_epoch_end(self, net, **kwargs):
        loss = net.history[-1, "train_loss"]
        if not math.isfinite(loss):
            raise Diverged(f"training loss became {loss} in epoch {len(net.history)}", epoch_history(net))


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; a CUDA device with no GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device}: no CUDA device is available here; use device=auto or device=cpu")
        return device
    if device in ("cpu", "mps"):
        return device
    raise ValueError(f"device={device!r} is not known; choose auto, cpu, cuda or cuda:N")


def build_estimator(
    module_params: dict,
    optimizer: type[torch.optim.Optimizer],
    optimizer_params: dict,
    *,
    max_epochs: int = 25,
    batch_size: int = 64,
    shuffle: bool = True,
    valid_split: float | None = None,
    verbose: str = "fold",
    history_path: str | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> SeededNeuralNetClassifier:
    """A NeuralNetClassifier over NeuralNet, with skorch's `__` routing for module and optimizer params."""
    if verbose not in VERBOSITY:
        raise ValueError(f"train.verbose={verbose!r} is not known; choose one of {', '.join(VERBOSITY)}")
    callbacks = [StopOnNonFiniteLoss()] + ([ProgressBar()] if verbose == "bar" else [])
    if history_path is not None:
        callbacks.append(HistoryToFile(history_path))
    return SeededNeuralNetClassifier(
        NeuralNet,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=optimizer,
        max_epochs=max_epochs,
        batch_size=batch_size,
        # Whole-batch iteration with the data on the device (BatchIterator) instead of a DataLoader.
        iterator_train=BatchIterator,
        iterator_valid=BatchIterator,
        iterator_train__device=device,
        iterator_valid__device=device,
        # skorch does not shuffle by default; on class-sorted data that alone costs ~15 points.
        iterator_train__shuffle=shuffle,
        # GridSearchCV does the splitting; an internal validation split only when asked for.
        train_split=None if not valid_split else ValidSplit(valid_split, stratified=True, random_state=seed),
        callbacks=callbacks,
        verbose=1 if verbose == "epoch" else 0,
        device=device,
        seed=seed,
        **{f"module__{k}": v for k, v in module_params.items()},
        **{f"optimizer__{k}": v for k, v in optimizer_params.items()},
    )
