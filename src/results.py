"""Search results in scikit-learn's cv_results_ form: one job's rows as a DataFrame, ranks over many, the table.

The files that hold them (a job's rows, the sweep's aggregate) are src.store's.
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from src.identity import job_key

def plain(value):
    """A JSON- and weights_only-safe Python value: numpy scalars unboxed, classes named, masked -> None."""
    if value is np.ma.masked:
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def job_results(cv_results: dict, extra_params: dict | None = None, status: str = "ok", error: str | None = None) -> pd.DataFrame:
    """A GridSearchCV's cv_results_ as a DataFrame of plain values, one row per candidate.

    extra_params are job-level settings that vary across a sweep but are not estimator params
    (seed, dataset.limit, a config-group choice ...): they get param_<name> columns and join `params`.
    Two columns follow scikit-learn's: `status` (ok, diverged or failed) and `error` (the message).
    """
    columns = {k: [plain(v) for v in vals] for k, vals in cv_results.items()}
    for name, value in (extra_params or {}).items():
        columns[f"param_{name}"] = [plain(value)] * len(columns["params"])
        columns["params"] = [{**p, name: plain(value)} for p in columns["params"]]
    columns["status"] = [status] * len(columns["params"])
    columns["error"] = [error] * len(columns["params"])
    return pd.DataFrame(columns)


@dataclass
class SearchResult:
    """What a job's search computed (src.search.run_search), ready for record() to write."""
    cv_results: pd.DataFrame   # one row per candidate in cv_results_ form, with status and error, ranked
    histories: list[dict]      # {"fold", "params", "epochs"} for every fit that ended or diverged
    status: str = "ok"         # ok | diverged | failed
    error: str | None = None   # one line
    traceback: str | None = None
    engine: str = "gridsearch"
    device: str = "cpu"
    seconds: float = 0.0


def unscored_results(param_grid: dict[str, list], n_splits: int, metrics: list[str]) -> dict:
    """cv_results_ for one candidate that has no scores (it failed or diverged): GridSearchCV's keys, NaN values."""
    params = {k: values[0] for k, values in param_grid.items()}
    nan = [float("nan")]
    out = {k: nan for k in ("mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time")}
    out |= {f"param_{k}": [v] for k, v in params.items()} | {"params": [params]}
    for metric in metrics:  # scikit-learn's order: per metric, test columns then train columns
        for split in ("test", "train"):
            out |= {f"split{k}_{split}_{metric}": nan for k in range(n_splits)}
            out |= {f"mean_{split}_{metric}": nan, f"std_{split}_{metric}": nan}
            if split == "test":
                out[f"rank_test_{metric}"] = [1]
    return out


def metric_names(df: pd.DataFrame) -> list[str]:
    """The scoring names, from the mean_test_<metric> columns, in column order."""
    return [c.removeprefix("mean_test_") for c in df.columns if c.startswith("mean_test_")]


def rank(df: pd.DataFrame) -> pd.DataFrame:
    """Recompute rank_test_<metric> over all rows exactly as GridSearchCV does (min rank, NaN last)."""
    df = df.copy()
    for metric in metric_names(df):
        means = df[f"mean_test_{metric}"].to_numpy(dtype=float)
        if np.isnan(means).all():
            ranks = np.ones(len(means), dtype=np.int32)
        else:
            means = np.nan_to_num(means, nan=np.nanmin(means) - 1)
            ranks = rankdata(-means, method="min").astype(np.int32)
        df[f"rank_test_{metric}"] = ranks
    return _order_columns(df)


def _order_columns(df: pd.DataFrame) -> pd.DataFrame:
    """scikit-learn's order: times, param_* (sorted), params, then the scores as they came."""
    times = [c for c in ("mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time") if c in df]
    params = sorted(c for c in df.columns if c.startswith("param_"))
    rest = [c for c in df.columns if c not in times and c not in params and c != "params"]
    return df[times + params + ["params"] + rest]


def to_columns(df: pd.DataFrame) -> dict[str, list]:
    """The DataFrame as cv_results_'s dict of columns, with plain Python values."""
    return {c: [plain(v) for v in df[c].tolist()] for c in df.columns}


# the params that set a module's layers: NeuralNet's sizes, the CNN's channels and kernel; the x axis prefers them
ARCHITECTURE_PARAMS = ("param_module__num_units", "param_module__hidden_sizes", "param_module__channels", "param_module__kernel_size")
NAMED_BY_ARCHITECTURE = (*ARCHITECTURE_PARAMS, "param_module")  # what an architecture label can stand for: those, and the module


def named_by_architecture(df: pd.DataFrame, architectures: list[str | None]) -> list[str]:
    """The columns of NAMED_BY_ARCHITECTURE that the rows' architecture labels stand for: the rows of one label (where
    a row has one) share the column's value. Your own module's label (its class name) names neither its `channels` nor
    its `kernel_size` keyword: a sweep of them keeps their own columns."""
    labels = pd.Series(architectures, index=df.index, dtype=object)
    has = labels.notna().to_numpy()
    if not has.any():
        return []
    return [c for c in NAMED_BY_ARCHITECTURE if c in df and pd.DataFrame(
        {"label": labels[has], "value": [job_key(plain(v)) for v in df[c][has]]}).groupby("label")["value"].nunique().max() == 1]


MOST_PRINTED_SPLITS = 5  # a table with more splits (cv.repeats > 1) prints their mean and std only


def ranked_table(df: pd.DataFrame, metric: str | None = None, verdicts: list[str | None] | None = None) -> str:
    """The candidates best first, like the tutorial's results.head(): the architecture (where df has that column, in
    place of the params it names: num_units, hidden_sizes, channels, kernel_size, module), params, split scores (up to
    MOST_PRINTED_SPLITS of them) and their mean, the verdict against the best (src.compare) where given, the trainable parameters (n_parameters), fit time."""
    metric = metric or metric_names(df)[0]
    if verdicts is not None:
        df = df.assign(verdict=[v or "-" for v in verdicts])
    shown = "architecture" in df and df["architecture"].notna().all()
    cols = ["architecture"] if shown else []
    named = named_by_architecture(df, list(df["architecture"])) if shown else []
    cols += sorted(c for c in df.columns if c.startswith("param_") and c not in named)
    splits = [c for c in df.columns if c.startswith("split") and c.endswith(f"_test_{metric}")]
    cols += splits if len(splits) <= MOST_PRINTED_SPLITS else []  # repeated CV's 15 splits are in cv_results.csv
    cols += [f"mean_test_{metric}", f"std_test_{metric}", f"rank_test_{metric}"] + (["verdict"] if verdicts is not None else [])
    cols += ["n_parameters"] if "n_parameters" in df and df["n_parameters"].notna().any() else []
    cols += ["mean_fit_time"]
    cols += ["status"] if "status" in df else []
    table = df.sort_values(f"rank_test_{metric}", kind="stable")[cols]
    table.columns = [c.removeprefix("param_") for c in cols]

    def param(v) -> str:  # %g: 1e-05 and 1e+30 stay readable, 0.01 stays 0.01
        return f"{v:g}" if isinstance(v, float) else str(v)

    formats = {c.removeprefix("param_"): param for c in cols if c.startswith("param_")}
    formats |= {c: "{:.4f}".format for c in cols if c.startswith(("split", "mean_", "std_"))}
    formats |= {"n_parameters": lambda n: "-" if pd.isna(n) else f"{int(n):,}"}
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        return table.to_string(index=False, formatters=formats)
