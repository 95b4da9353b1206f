"""Which engine trains a job, the one dispatch between them (run, fit_all), and the fused engine's side of a
job: its fits, grouped with other jobs'.

Two engines compute the same search (src.search.run_search):
- "gridsearch": GridSearchCV trains the skorch estimator, one fold after another;
- "fused": src.fused trains every fold of a job, or of a group of jobs, at once; GridSearchCV then
  scores those fits (src.estimator.PretrainedNet), so the job's files are the same either way.

The fused engine has two ways to train a module: NeuralNet (the MLP) by src.fused's hand-written step, and
any other module, or NeuralNet where that step lacks something (an activation without a hand-written
derivative), by src.vmapped (torch.func: vmap over a stack of the module's fits); by_hand says which.
engine=auto picks the fused engine wherever it can train the job, on the CPU too (it trains the default
grid 3x faster there, and 50x on a GPU, to the same numbers), and gridsearch where it cannot (another
optimizer; a module vmap cannot run, or batch norm in training mode: src.fused and src.vmapped say which,
cannot_fuse asks them). Jobs can be fused together when they differ only in the per-fit keys (the
optimizer's numbers; module.num_units, module.hidden_sizes and module.init for the MLP, any module key but _target_ for the
others); a launcher (hydra_plugins/fused_launcher) trains each such group once, and hands each job its fits
(run's `trained`) instead of the job training them.
"""
import collections
import logging
from collections.abc import Iterator

import numpy as np

from src import data, estimator, fused, vmapped
from src.estimator import PREDICT_BATCH_SIZE, Diverged, PredictingNet
from src.identity import NOT_IDENTITY, job_key, without
from src.model import NeuralNet
from src.results import SearchResult
from src.search import Job, run_search
from src.seeding import n_repeats, split_of

log = logging.getLogger(__name__)

PER_FIT = ("num_units", "hidden_sizes", "init")  # the module keys each fit of a group has its own of, beside every optimizer key but _target_


def choose(settings: dict, say_why: bool = False) -> str:
    """The engine that trains this job: `engine`, with auto resolved (fused wherever it can) and a job the fused
    engine cannot train sent to gridsearch (with a log line saying why when `say_why`: the job itself says it once)."""
    wanted = settings.get("engine", "auto")
    if wanted == "gridsearch":
        return "gridsearch"
    reason = cannot_fuse(settings)
    if reason:
        if say_why:
            log.info(f"engine={wanted}: the fused engine cannot train {reason}; this job runs through GridSearchCV")
        return "gridsearch"
    return "fused"


def cannot_fuse(settings: dict) -> str | None:
    """Why the fused engine cannot train this job (its optimizer, or a module neither of its ways trains), or None."""
    opt = dict(settings["optimizer"])
    reason = fused.unsupported(opt.pop("_target_"), opt)
    if reason or by_hand(settings):
        return reason
    return cannot_vmap(module_class(settings), module_kwargs(settings), settings)


def by_hand(settings: dict) -> bool:
    """True where src.fused's hand-written step trains the job's module (NeuralNet with what it reproduces), False
    where src.vmapped does."""
    return module_class(settings) is NeuralNet and fused.unsupported_module(module_kwargs(settings)) is None


def module_class(settings: dict) -> type:
    """The job's module class, as the estimator builds it (src.estimator.module_class: module._target_, else NeuralNet)."""
    return estimator.module_class(settings["module"])


def module_kwargs(settings: dict) -> dict:
    """The module's keyword arguments (module.* but _target_)."""
    return {k: v for k, v in settings["module"].items() if k != "_target_"}


def cannot_vmap(module: type, kwargs: dict, settings: dict) -> str | None:
    """src.vmapped.unsupported, on two rows of the job's data; asked once per module, keywords and data set in a process."""
    key = (module, job_key(kwargs), job_key(settings["dataset"]))
    if key not in _vmap_reasons:
        _vmap_reasons[key] = vmapped.unsupported(module, kwargs, data.load(settings)[0][:2])
    return _vmap_reasons[key]


_vmap_reasons: dict[tuple, str | None] = {}


def group_key(settings: dict) -> str:
    """Jobs with equal group keys can train as one fused program: all but the per-fit keys agree (and the way that trains them)."""
    per_fit = PER_FIT if by_hand(settings) else [k for k in settings["module"] if k != "_target_"]
    shared = without(settings, [*NOT_IDENTITY, *(f"module.{k}" for k in per_fit)])
    shared["optimizer"] = settings["optimizer"]["_target_"]
    shared["fused_by"] = "hand" if by_hand(settings) else "vmap"
    return job_key(shared)


def shared_settings(settings: dict) -> fused.Shared:
    """What the fits of a job's group share, in the fused engine's terms."""
    m, t = settings["module"], settings["train"]
    return fused.Shared(optimizer=settings["optimizer"]["_target_"], activation=m["activation"], input_dim=m["input_dim"],
                        num_classes=m["num_classes"], max_epochs=t["max_epochs"], batch_size=t["batch_size"], shuffle=t["shuffle"],
                        valid_batch_size=PREDICT_BATCH_SIZE, precision=t.get("precision", "fp32"))


def vmapped_shared(job: Job) -> vmapped.Shared:
    """What the fits of a job's group share, in src.vmapped's terms: the estimator's module class among them."""
    t = job.settings["train"]
    return vmapped.Shared(module=job.search.estimator.module, optimizer=job.settings["optimizer"]["_target_"],
                          max_epochs=t["max_epochs"], batch_size=t["batch_size"], shuffle=t["shuffle"], valid_batch_size=PREDICT_BATCH_SIZE,
                          precision=t.get("precision", "fp32"))


def fit_bytes(settings: dict, n_rows: int, device: str = "cpu") -> int:
    """An estimate of the memory (bytes, on `device`) the fused engine needs for this job's candidate, trained one
    fit at a time: a stack of one (src.fused.stack_bytes, or src.vmapped.stack_bytes) on a fold's share of `n_rows`
    cross-validation rows. The trained fits of its other folds and repeats wait on disk (train_jobs), and the job
    scores one fit at a time."""
    folds, split = settings["cv"]["folds"], settings["train"]["valid_split"]
    n_train = n_rows * (folds - 1) // folds
    n_valid = int(n_train * split) if split else 0
    opt = {k: v for k, v in settings["optimizer"].items() if k != "_target_"}
    if not by_hand(settings):
        t = settings["train"]
        spec = vmapped.FitSpec(module_kwargs(settings), opt, settings["seed"], 0, np.empty(n_train - n_valid, dtype=np.int64))
        shared = vmapped.Shared(module_class(settings), settings["optimizer"]["_target_"], batch_size=t["batch_size"])
        return vmapped.stack_bytes([spec], shared, data.load(settings)[0][:1])
    spec = _spec(settings, 0, np.empty(n_train - n_valid, dtype=np.int64), np.empty(n_valid, dtype=np.int64) if n_valid else None)
    return fused.stack_bytes([spec], shared_settings(settings), device)


def fit_specs(job: Job) -> list[fused.FitSpec | vmapped.FitSpec]:
    """The job's fits, one per split (repeat, fold), with the training (and internal validation) rows the estimator
    would see; each names its split as the estimator does (src.seeding.split_of), so both engines train the same fit."""
    columns = job.test_fold.reshape(len(job.y), -1)  # a column per repeat
    folds = job.search.cv.get_n_splits() // n_repeats(job.search.cv)
    specs = []
    for r in range(columns.shape[1]):
        for k in range(folds):
            train = np.flatnonzero(columns[:, r] != k)
            repeat, fold = split_of(job.test_fold[train])
            specs.append(fit_spec(job, train, fold, repeat))
    return specs


def fit_spec(job: Job, train: np.ndarray, fold: int, repeat: int | None = None) -> fused.FitSpec | vmapped.FitSpec:
    """One fit of the job on rows `train`, as the estimator would see them (after its internal validation split, if any),
    for src.fused (the MLP by hand) or src.vmapped (by_hand)."""
    valid, train_split = None, job.search.estimator.train_split  # skorch's ValidSplit when train.valid_split is set
    if train_split is not None:  # the same split skorch makes of the fit's training rows
        inner_train, inner_valid = train_split(train, job.y[train])
        train, valid = train[np.asarray(inner_train.indices)], train[np.asarray(inner_valid.indices)]
    settings = job.settings
    opt = {k: v for k, v in settings["optimizer"].items() if k != "_target_"}
    if not by_hand(settings):  # the module's keywords as the estimator builds it
        return vmapped.FitSpec(job.search.estimator.get_params_for("module"), opt, settings["seed"], fold, train, valid, repeat)
    return _spec(settings, fold, train, valid, repeat)


def _spec(settings: dict, fold: int, train: np.ndarray, valid: np.ndarray | None, repeat: int | None = None) -> fused.FitSpec:
    """The FitSpec of the MLP job's candidate on these rows."""
    m, opt = settings["module"], {k: v for k, v in settings["optimizer"].items() if k != "_target_"}
    hidden = None if m.get("hidden_sizes") is None else tuple(m["hidden_sizes"])
    return fused.FitSpec(m.get("num_units", 128), m["init"], opt, settings["seed"], fold, train, valid, repeat, hidden)


def train_jobs(jobs: list[Job], devices: list[str] | None = None, **options) -> Iterator[dict[int, dict]]:
    """Train the fits of several jobs that share a group key (and so their data), as one program, stack by stack
    (src.fused.train_stacks, or src.vmapped.train_stacks for a module src.fused does not train by hand); after each stack, yields the jobs it completed, {job's place in `jobs`: its
    {(repeat, fold): FitOutcome}}, so that they can be scored and recorded, and their fits freed, before the
    next stack trains.

    `devices`: where the fits train, spread over them (default: the first job's estimator's device).
    `options` go to src.fused.train_stacks (layout, graph, memory_budget); src.vmapped takes memory_budget, and trains
    on the first device.
    """
    specs, owners = [], []
    for j, job in enumerate(jobs):
        for spec in fit_specs(job):
            specs.append(spec)
            owners.append(j)
    devices = devices or [jobs[0].search.estimator.device]
    waiting = collections.Counter(owners)
    fits: dict[int, dict] = {}
    X, y = jobs[0].X, jobs[0].y
    if by_hand(jobs[0].settings):
        stacks = fused.train_stacks(X, y, specs, shared_settings(jobs[0].settings), device=devices, **options)
    else:
        budget = {k: v for k, v in options.items() if k == "memory_budget"}
        stacks = vmapped.train_stacks(X, y, specs, vmapped_shared(jobs[0]), device=devices[0], **budget)
    for indices, outcomes in stacks:
        done = {}
        for i, outcome in zip(indices, outcomes):
            owner, spec = owners[i], specs[i]
            fits.setdefault(owner, {})[spec.repeat or 0, spec.fold] = outcome
            waiting[owner] -= 1
            if not waiting[owner]:
                done[owner] = fits.pop(owner)
        for i, outcome in zip(indices, outcomes):
            if owners[i] in fits:  # its job waits for a later stack: the fit waits on disk, not in memory
                outcome.spill()
        if done:
            yield done


def train_group(jobs: list[Job], devices: list[str] | None = None, **options) -> list[dict]:
    """train_jobs, all at once: each job's fits, in the order of `jobs`, as {(repeat, fold): FitOutcome} (repeat 0
    without repeats)."""
    trained = {j: fits for done in train_jobs(jobs, devices, **options) for j, fits in done.items()}
    return [trained[j] for j in range(len(jobs))]


def run(job: Job, trained: dict | BaseException | None = None, name: str | None = None) -> SearchResult:
    """Cross-validate a job's candidate with its engine (`name`, else choose's) and score it: the one dispatch
    between the engines. Both use the job's one split (Job.test_fold).

    `trained`: the job's fits, when a launcher trained them with its group (or the error that stopped that);
    else the fused engine trains the job's folds now.
    """
    name = name or choose(job.settings, say_why=True)
    if name == "gridsearch":
        return run_search(job)

    def fits() -> dict:
        if isinstance(trained, BaseException):
            raise trained
        return trained if trained is not None else train_group([job])[0]
    return run_search(job, fitted=fits, engine=name)


def fit_all(job: Job, name: str) -> None:
    """Fit a job's estimator on all its rows with engine `name`, as GridSearchCV's refit does: fit number K, after
    the K folds (src.seeding); raises src.estimator.Diverged. The fused engine's fit replaces job.search.estimator
    with a net that only predicts (src.estimator.PredictingNet: no optimizer is built)."""
    net, folds, X, y = job.search.estimator, job.settings["cv"]["folds"], job.X, job.y
    if name == "fused":
        spec = fit_spec(job, np.arange(len(y)), fold=folds)
        if by_hand(job.settings):
            outcome = fused.train(X, y, [spec], shared_settings(job.settings), device=net.device)[0]
        else:
            outcome = vmapped.train(X, y, [spec], vmapped_shared(job), device=net.device)[0]
        if outcome.diverged:
            raise Diverged(outcome.diverged, outcome.epochs)
        job.search.estimator = net = PredictingNet(**net.get_params(deep=False))
        net.check_data(X, y)  # as fit() does: learns classes_ from y
        net.initialize().module_.load_state_dict(outcome.state_dict)
    else:
        net.fit(X, y, test_fold=np.arange(len(y)) % folds)  # every fold present: the refit is fit number K
