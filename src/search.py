"""The cross-validated grid search: scikit-learn's GridSearchCV over the skorch estimator, a Job (a search and the
data it cross-validates on, made once per job by src.job.prepare), and its run.

run_search() computes a job's result (src.results.SearchResult) and raises nothing a grid point can
cause; src.store.record() writes it. Both engines run through it: the GridSearchCV path trains the
estimator, the fused engine hands it fits it trained (src.estimator.PretrainedNet) to score.
"""
import functools
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, StratifiedKFold

from src import fused, results
from src.estimator import Diverged, FitHistories, FittedFolds, PretrainedNet
from src.seeding import split_test_fold


def build_search(
    estimator,
    param_grid: dict[str, list],
    *,
    folds: int = 3,
    repeats: int = 1,
    shuffle: bool = True,
    seed: int = 0,
    scoring: list[str] | tuple[str, ...] = ("accuracy",),
    verbose: int = 0,
) -> GridSearchCV:
    """GridSearchCV with stratified, seeded folds and named metrics (columns like split0_test_accuracy).

    repeats > 1: scikit-learn's RepeatedStratifiedKFold, `folds` x `repeats` splits, each repeat shuffled
    with its own draw from `seed`; its first repeat is StratifiedKFold(shuffle=True, random_state=seed),
    the split of repeats=1. refit=False: a sweep compares candidates; it does not need a model trained on all the data.
    """
    if repeats > 1:
        cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    else:
        cv = StratifiedKFold(n_splits=folds, shuffle=shuffle, random_state=seed if shuffle else None)
    return GridSearchCV(
        estimator,
        param_grid,
        cv=cv,
        scoring=list(scoring),
        refit=False,
        return_train_score=True,
        error_score="raise",
        verbose=verbose,
    )


@dataclass
class Job:
    """One job, made once (src.job.prepare): its search and the data it cross-validates on; what every engine and the
    refit take (src.engine)."""
    settings: dict            # the resolved config, plain Python
    X: np.ndarray             # the cross-validation part of the data set, (n_samples, n_features)
    y: np.ndarray             # (n_samples,)
    search: GridSearchCV      # one candidate: the estimator with this job's params, and the splitter
    extras: dict              # job-level params (seed, dataset.limit, group choices ...): their own cv_results_ columns
    folder: Path | None = None  # where the job writes (its loggers too)

    @functools.cached_property
    def test_fold(self) -> np.ndarray:
        """The fold that tests each row (src.seeding.split_test_fold), computed once, when first needed."""
        return split_test_fold(self.search.cv, self.X, self.y)


def run_search(job: Job, *, fitted: Callable[[], dict] | None = None, engine: str = "gridsearch") -> results.SearchResult:
    """Cross-validate the job's search on its data and return its result; a raising or diverging fit is recorded, not raised.

    Every fit gets the job's `test_fold` for its rows, so that it draws from its own (seed, repeat, fold) generator.
    With `fitted` (a function returning {fold: fit} from the fused engine), the estimator scores those
    fits instead of training (on the data already on its device, by row number), and the fit times
    are the fused engine's.
    """
    search, X, y = job.search, job.X, job.y
    store = FitHistories()
    search.estimator.set_params(callbacks__history__store=store)
    status, error, trace = "ok", None, None
    start = time.perf_counter()
    try:
        fits, rows = None, X
        if fitted is not None:
            fits = fitted()
            on_device = fused.on_device(X, search.estimator.device)
            search.estimator = PretrainedNet(**search.estimator.get_params(deep=False), fitted=FittedFolds(fits, on_device))
            search.verbose, rows = 0, np.arange(len(X))[:, None]  # GridSearchCV's fit times would be the loading's
        search.fit(rows, y, test_fold=job.test_fold)
        row = results.job_results(search.cv_results_, job.extras)
        if fits is not None:  # the fits trained together: each one's share of their training time
            seconds = [fit.seconds for fit in fits.values()]
            row["mean_fit_time"], row["std_fit_time"] = float(np.mean(seconds)), float(np.std(seconds))
    except Diverged as e:
        store.add(e.fold, e.epochs, e.repeat)
        status, error = "diverged", f"{'' if e.repeat is None else f'repeat {e.repeat} '}fold {e.fold}: {e}"
    except Exception as e:  # any failure of this grid point: recorded, and the sweep goes on
        status, error, trace = "failed", f"{type(e).__name__}: {e}".strip().splitlines()[0], traceback.format_exc()
    if status != "ok":
        unscored = results.unscored_results(search.param_grid, search.cv.get_n_splits(), list(search.scoring))
        row = results.job_results(unscored, job.extras, status, error)
    params = results.plain(row["params"][0])
    histories = [{"fold": r["fold"], **({"repeat": r["repeat"]} if "repeat" in r else {}), "params": params, "epochs": r["epochs"]}
                 for r in store.records]
    return results.SearchResult(results.rank(row), histories, status, error, trace, engine, search.estimator.device,
                                time.perf_counter() - start)
