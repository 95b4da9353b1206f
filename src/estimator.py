"""The skorch estimator the search cross-validates: NeuralNet wrapped in a NeuralNetClassifier."""
import json
import math

import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, ProgressBar
from skorch.dataset import ValidSplit

from src.model import NeuralNet

VERBOSITY = ("quiet", "fold", "epoch", "bar")


class SeededNeuralNetClassifier(NeuralNetClassifier):
    """NeuralNetClassifier that seeds torch at the start of every fit.

    Module init and the DataLoader's per-epoch shuffling both draw from torch's global generator,
    so seeding in initialize() makes each fold, and so the whole search, repeatable.
    """

    def __init__(self, module, *args, seed: int = 0, **kwargs):
        super().__init__(module, *args, **kwargs)
        self.seed = seed

    def initialize(self):
        torch.manual_seed(self.seed)
        return super().initialize()


class HistoryToFile(Callback):
    """Appends each finished fit's per-epoch history as one JSON line to `path`."""

    def __init__(self, path: str):
        self.path = path

    def on_train_end(self, net, X=None, y=None, **kwargs):
        epochs = [{k: v for k, v in row.items() if k != "batches"} for row in net.history.to_list()]
        with open(self.path, "a") as f:
            f.write(json.dumps(epochs) + "\n")


class Diverged(Exception):
    """A fit's training loss became NaN or infinite; its candidate is a result (status=diverged), not a crash."""

    def __init__(self, message: str, epochs: list[dict]):
        super().__init__(message)
        self.epochs = epochs  # the per-epoch history up to the divergence


class StopOnNonFiniteLoss(Callback):
    """Stops training at the first batch whose loss is NaN or infinite, by raising Diverged.

    It reads the loss skorch has already recorded as a Python float, so it adds no device sync.
    """

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if not training:
            return
        loss = net.history[-1, "batches", -1, "train_loss"]
        if not math.isfinite(loss):
            epochs = [{k: v for k, v in row.items() if k != "batches"} for row in net.history.to_list()]
            raise Diverged(f"training loss became {loss} at epoch {len(net.history)}, batch {len(net.history[-1, 'batches'])}", epochs)


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
