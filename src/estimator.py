"""The skorch estimator the search cross-validates: a module (NeuralNet, or the module._target_ class) wrapped in a
NeuralNetClassifier."""
import math
import warnings

import numpy as np
import torch
from hydra.utils import get_class
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, ProgressBar
from skorch.dataset import Dataset as SkorchDataset
from skorch.dataset import ValidSplit, get_len
from skorch.history import History
from skorch.utils import to_tensor

from src import precision as precisions
from src.model import NeuralNet, module_sizes, parameter_count
from src.seeding import fit_generator, split_of, takes_generator

# Rows per batch when the net predicts or scores (the validation split, GridSearchCV's scoring): each row's
# prediction is independent of the others, so this only trades memory for speed (1,100 batches of 64
# to score one fold of 70,000 images on a GPU are most of a fold's time).
PREDICT_BATCH_SIZE = 4096


class BatchIterator:
    """Iterates a skorch dataset in whole batches: its arrays go to the device once, each batch is one index.

    Used in place of torch's DataLoader, which fetches samples one __getitem__ at a time and stacks
    them. skorch builds the training iterator once per fit, so the data move to the device once per
    fit. Shuffling draws a new permutation on the CPU on every pass, from `generator` (the fit's own,
    which SeededNeuralNetClassifier hands it) or else torch's global one. Datasets that are not plain
    arrays fall back to a DataLoader.
    """

    def __init__(self, dataset, batch_size: int = 64, shuffle: bool = False, device: str = "cpu",
                 generator: torch.Generator | None = None):
        self.batch_size, self.shuffle, self.generator = batch_size, shuffle, generator
        arrays = _arrays(dataset)
        if arrays is None:
            self.X = self.y = None
            self._dataset = dataset
            return
        with warnings.catch_warnings():  # the cached data sets are read-only numpy arrays; nothing writes to them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self.X = torch.as_tensor(arrays[0], device=device)  # (n, n_features), shared with numpy on the CPU
            self.y = None if arrays[1] is None else torch.as_tensor(arrays[1], device=device)

    def __len__(self) -> int:
        return math.ceil(len(self._dataset if self.X is None else self.X) / self.batch_size)

    def __iter__(self):
        if self.X is None:
            yield from torch.utils.data.DataLoader(self._dataset, batch_size=self.batch_size, shuffle=self.shuffle, generator=self.generator)
            return
        n, bs = len(self.X), self.batch_size
        # drawn on the CPU, so that a fit's order does not depend on the device it trains on
        order = torch.randperm(n, generator=self.generator).to(self.X.device) if self.shuffle else None
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
    """NeuralNetClassifier whose every fit draws from its own generator, and trains without per-batch host syncs.

    A fit's initial weights and then its per-epoch shuffling come from a torch.Generator seeded from
    (seed, repeat, fold) (src.seeding). The split is found from the `test_fold` fit parameter that the
    search passes (GridSearchCV hands each fit the slice of it for its training rows); without it, from seed alone.

    `precision` (src.precision): skorch's three steps (a training batch's forward, loss and backward pass; a
    validation batch; a prediction batch) run in its context, and infer hands the loss and the scores float32 logits.
    """

    def __init__(self, module, *args, seed: int = 0, precision: str = "fp32", **kwargs):
        super().__init__(module, *args, **kwargs)
        self.seed, self.precision = seed, precision

    def train_step_single(self, batch, **fit_params):
        with precisions.context(self.precision, self.device):
            return super().train_step_single(batch, **fit_params)

    def validation_step(self, batch, **fit_params):
        with precisions.context(self.precision, self.device):
            return super().validation_step(batch, **fit_params)

    def evaluation_step(self, batch, training=False):
        with precisions.context(self.precision, self.device):
            return super().evaluation_step(batch, training=training)

    def infer(self, x, **fit_params):
        return precisions.full(super().infer(x, **fit_params))

    def fit(self, X, y, test_fold=None, **fit_params):
        """Fit on (X, y); `test_fold` (per row, as scikit-learn's PredefinedSplit has it; a column per repeat) names the split."""
        self.repeat_, self.fold_ = (None, None) if test_fold is None else split_of(test_fold)
        return super().fit(X, y, **fit_params)

    def initialize(self):
        self.generator_ = fit_generator(self.seed, getattr(self, "fold_", None), getattr(self, "repeat_", None))
        return super().initialize()

    def initialize_module(self):
        kwargs = self.get_params_for("module")
        if takes_generator(self.module):
            self.module_ = self.initialized_instance(self.module, {**kwargs, "generator": self.generator_})
            return self
        # A module that takes no generator draws its init from torch's global one: seeded from the fit's own
        # generator for the length of its construction, and then put back, so that the fit is reproducible.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.generator_.initial_seed())
            self.module_ = self.initialized_instance(self.module, kwargs)
        return self

    def get_iterator(self, dataset, training=False):
        iterator = super().get_iterator(dataset, training=training)
        if training and isinstance(iterator, BatchIterator):
            iterator.generator = self.generator_  # the per-epoch permutations follow the initial weights
        return iterator

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


class PredictingNet(SeededNeuralNetClassifier):
    """A net whose weights were trained elsewhere (the fused engine): it predicts and scores, never steps, so it builds
    no optimizer. A torch.optim optimizer's first add_param_group imports torch._dynamo (about 1 s, more on a loaded
    machine), which a fused sweep otherwise needs nowhere. skorch adds the `optimizer` prefix to `prefixes_` when it
    builds one; it is declared here, so that optimizer__lr and the like stay valid parameters (get_params, clone)."""

    prefixes_ = [*SeededNeuralNetClassifier.prefixes_, "optimizer"]

    def initialize_optimizer(self, *args, **kwargs):
        self.optimizer_ = None  # as skorch's trim_for_prediction leaves it
        return self


class PretrainedNet(PredictingNet):
    """The estimator whose fits were trained elsewhere (the fused engine): fit() loads the fit of its fold.

    GridSearchCV then scores and records it exactly as it does a net it trained itself, and a fit
    that diverged raises Diverged here as it did in training, so both engines share one search path.
    Its X is row numbers (n, 1) into the data already on the device (FittedFolds.X), so that neither
    GridSearchCV's fold slicing nor scoring copies the data again.
    """

    def __init__(self, module, *args, fitted: "FittedFolds | None" = None, **kwargs):
        super().__init__(module, *args, **kwargs)
        self.fitted = fitted

    def fit(self, X, y, test_fold=None, **fit_params):
        self.repeat_, self.fold_ = split_of(test_fold)
        fit = self.fitted.fits[self.repeat_ or 0, self.fold_]
        self.check_data(X, y)  # as NeuralNetClassifier.fit does: learns classes_ from y
        self.initialize()
        loggers = [cb for _, cb in self.callbacks_ if getattr(cb, "replays_history", False)]  # src.loggers
        for cb in loggers:
            cb.on_train_begin(self, X=X, y=y)
        for epoch in range(1, len(fit.epochs) + 1):  # the loggers see the epochs as they would have during training
            self.history_ = History(fit.epochs[:epoch])
            for cb in loggers:
                cb.on_epoch_end(self)
        self.history_ = History(fit.epochs)
        if fit.diverged is not None:
            raise Diverged(fit.diverged, fit.epochs, self.fold_, self.repeat_)
        self.notify("on_train_end", X=X, y=y)  # as a fit ends: RecordHistory stores its history, loggers close
        return self

    def initialize_module(self):
        """The module of this fold's fit, holding its trained weights: built on the meta device (no init drawn, no
        memory) and given the fit's tensors (load_state_dict with assign=True), so that one copy of the fit is in
        memory, not two. A module that cannot be built there (its constructor reads a tensor's values), or is left
        with a tensor the state_dict does not hold (a non-persistent buffer), is built as usual, and the weights are
        copied into it."""
        weights = self.fitted.hand_over(self.repeat_ or 0, self.fold_)
        try:
            with torch.device("meta"):
                super().initialize_module()
            self.module_.load_state_dict(weights, assign=True)
            assigned = not any(t.is_meta for t in (*self.module_.parameters(), *self.module_.buffers()))
        except Exception:  # built as usual below, where a real error raises again
            assigned = False
        if not assigned:
            super().initialize_module()
            self.module_.load_state_dict(weights)
        return self

    def infer(self, x, **fit_params):
        rows = to_tensor(x, device=self.device)[:, 0]  # (B,) row numbers
        return super().infer(self.fitted.X[rows], **fit_params)


def module_class(module_params: dict) -> type[torch.nn.Module]:
    """The module a job trains: the class its module._target_ names (module=cnn, your own), else NeuralNet (module=mlp)."""
    target = module_params.get("_target_")
    return NeuralNet if target is None else get_class(target)


def n_parameters(net: NeuralNetClassifier) -> int | None:
    """The number of trainable parameters of the estimator's module: from its layer sizes where it is NeuralNet,
    else counted on one built from its keyword arguments (None where that raises: the job's fits failed the same way)."""
    kwargs = net.get_params_for("module")
    if net.module is NeuralNet:
        return parameter_count(module_sizes(kwargs))
    try:
        module = net.module(**kwargs)
    except Exception:
        return None
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def epoch_history(net) -> list[dict]:
    """The net's per-epoch history (epoch, train_loss, dur, valid metrics), without the per-batch entries."""
    return [{k: v for k, v in row.items() if k != "batches"} for row in net.history.to_list()]


class SharedByClones:
    """An object every clone of an estimator shares: scikit-learn's clone() deep-copies parameters, and
    a deep copy of this is itself (a search's store of histories, or of fits trained elsewhere)."""

    def __deepcopy__(self, memo):
        return self


class FitHistories(SharedByClones):
    """The per-epoch histories of a search's fits, as {"fold", "epochs"} records in the order the fits ended
    ({"fold", "repeat", "epochs"} under repeated cross-validation)."""

    def __init__(self):
        self.records: list[dict] = []

    def add(self, fold: int | None, epochs: list[dict], repeat: int | None = None) -> None:
        self.records.append({"fold": fold, "epochs": epochs} | ({} if repeat is None else {"repeat": repeat}))


class RecordHistory(Callback):
    """Adds each finished fit's per-epoch history to a FitHistories store."""

    def __init__(self, store: FitHistories):
        self.store = store

    def on_train_end(self, net, X=None, y=None, **kwargs):
        self.store.add(getattr(net, "fold_", None), epoch_history(net), getattr(net, "repeat_", None))


class FittedFolds(SharedByClones):
    """Fits trained elsewhere (src.fused), by (repeat, fold): each has a state_dict, its per-epoch history
    (`epochs`) and `diverged` (None, or the message of its non-finite training loss); and the data
    they trained on, as a tensor on their device, which PretrainedNet scores by row number."""

    def __init__(self, fits: dict, X: torch.Tensor):
        self.fits, self.X = fits, X

    def hand_over(self, repeat: int, fold: int) -> dict:
        """The fit's state_dict, which the fit then no longer holds: once loaded into the net that scores it, its
        weights are freed with that net, one fold at a time, rather than when the job is recorded."""
        return self.fits[repeat, fold].take()  # src.fused.FitOutcome: read back from disk where it waited there


class Diverged(Exception):
    """A fit's training loss became NaN or infinite; its candidate is a result (status=diverged), not a crash."""

    def __init__(self, message: str, epochs: list[dict], fold: int | None = None, repeat: int | None = None):
        super().__init__(message)
        self.epochs = epochs  # the per-epoch history up to the divergence
        self.fold, self.repeat = fold, repeat


class StopOnNonFiniteLoss(Callback):
    """Stops training at the end of the first epoch whose training loss is NaN or infinite, by raising Diverged.

    Checked once per epoch, on the loss the epoch loop already read back, so it adds no device sync;
    once a loss is NaN every later batch is too, so at most one epoch's work is spent on it.
    """

    def on_epoch_end(self, net, **kwargs):
        loss = net.history[-1, "train_loss"]
        if not math.isfinite(loss):
            raise Diverged(f"training loss became {loss} in epoch {len(net.history)}", epoch_history(net), getattr(net, "fold_", None),
                           getattr(net, "repeat_", None))


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
    device: str = "cpu",
    seed: int = 0,
    precision: str = "fp32",
    loggers: list[tuple[str, Callback]] | None = None,
) -> SeededNeuralNetClassifier:
    """A NeuralNetClassifier over the module (module_class: module_params' _target_, else NeuralNet), with skorch's `__`
    routing for module and optimizer params;
    `verbose`: quiet | fold | epoch (skorch's per-epoch table) | bar (and a progress bar); `loggers` are (name,
    callback) pairs of src.loggers; `precision`: src.precision's."""
    # run_search hands the "history" callback the store its fits' histories go to
    callbacks = [("diverged", StopOnNonFiniteLoss()), ("history", RecordHistory(FitHistories()))]
    callbacks += [("progress", ProgressBar())] if verbose == "bar" else []
    callbacks += loggers or []
    return SeededNeuralNetClassifier(
        module_class(module_params),
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=optimizer,
        max_epochs=max_epochs,
        batch_size=batch_size,
        # Whole-batch iteration with the data on the device (BatchIterator) instead of a DataLoader.
        iterator_train=BatchIterator,
        iterator_valid=BatchIterator,
        iterator_train__device=device,
        iterator_valid__device=device,
        iterator_valid__batch_size=PREDICT_BATCH_SIZE,
        # skorch does not shuffle by default; on class-sorted data that alone costs ~15 points.
        iterator_train__shuffle=shuffle,
        # GridSearchCV does the splitting; an internal validation split only when asked for.
        train_split=None if not valid_split else ValidSplit(valid_split, stratified=True, random_state=seed),
        callbacks=callbacks,
        verbose=1 if verbose == "epoch" else 0,
        device=device,
        seed=seed,
        precision=precision,
        **{f"module__{k}": v for k, v in module_params.items() if k != "_target_"},
        **{f"optimizer__{k}": v for k, v in optimizer_params.items()},
    )
