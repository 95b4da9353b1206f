"""Search results in scikit-learn's cv_results_ form: one job's rows, the sweep's aggregate, and their files.

A job folder holds its own rows (cv_results.json), its folds' training histories (history.json)
and what makes it reproducible (environment.json). The results folder (the sweep folder, or the
run folder of a single run) holds the aggregate of every finished job, with ranks recomputed over
all of them, as cv_results.{csv,json,pt}. The aggregate is rebuilt from the job files (src.refresh
says when, and how concurrent writers stay correct without a lock), and each file is written to a
temporary name and then renamed, so a reader or a crash never sees half a file.
"""
import contextlib
import errno
import functools
import importlib.metadata
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

CV_RESULTS = "cv_results"
JOB = "job.json"  # written last: a job folder holds a finished job only once this file is there
ERROR_LOG = "error.log"
HISTORY = "history.json"
ENVIRONMENT = "environment.json"
STALE_TMP_S = 600  # a temporary file this old was left by a killed writer (a live one renames it within seconds)
_UMASK = os.umask(0)
os.umask(_UMASK)
PACKAGES = ("torch", "skorch", "scikit-learn", "hydra-core", "numpy", "pandas", "hiplot", "mlxtend")


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


def record(job_dir: Path, result: SearchResult, overrides: list[str], identity: dict) -> None:
    """Write a job folder: cv_results.*, history.json, environment.json, error.log if it failed, job.json last.

    Every file is written atomically and job.json last, so a killed job leaves no finished-looking folder.
    """
    job_dir = Path(job_dir)
    for stale in [job_dir / ERROR_LOG, *job_dir.glob(".*.tmp")]:  # left by an earlier, killed try
        stale.unlink(missing_ok=True)
    if result.traceback:
        atomic_write(job_dir / ERROR_LOG, result.traceback)
    write_cv_results(result.cv_results, job_dir)
    write_json(job_dir / HISTORY, result.histories)
    write_json(job_dir / ENVIRONMENT, environment(result.device, identity["seed"], result.engine))
    write_json(job_dir / JOB, {"status": result.status, "error": result.error, "overrides": overrides, "config": identity})


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


@contextlib.contextmanager
def disk_errors():
    """A full disk (or quota) ends the command with one line and exit status 1. Every file is written whole
    or not at all (atomic_write), so what was written before stays intact, and a rerun resumes from it."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {e.filename or 'a results file'}: {e.strerror}. The files written before are intact; free some space "
              "and run the same command again to resume.", file=sys.stderr)
        sys.exit(1)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a failed write names no file; say which one
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_json(path: Path, obj) -> None:
    """Atomically write `obj` as indented, standard JSON: NaN and infinities become null."""
    def finite(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: finite(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [finite(v) for v in o]
        return o
    atomic_write(path, json.dumps(finite(obj), indent=2, allow_nan=False) + "\n")


def write_cv_results(df: pd.DataFrame, directory: Path) -> None:
    """cv_results.json (null for NaN), cv_results.csv (params as JSON) and cv_results.pt (torch.save)."""
    directory = Path(directory)
    write_json(directory / f"{CV_RESULTS}.json", to_columns(df))  # NaN -> null
    csv = df.assign(params=[json.dumps(p, sort_keys=True) for p in df["params"]])
    atomic_write(directory / f"{CV_RESULTS}.csv", csv.to_csv(index=False))
    buffer = io.BytesIO()
    torch.save(to_columns(df), buffer)  # plain lists, dicts and floats: loads with weights_only=True
    atomic_write(directory / f"{CV_RESULTS}.pt", buffer.getvalue())


def read_cv_results(directory: Path) -> pd.DataFrame:
    """The cv_results.json in `directory` as a DataFrame (null -> NaN in score columns)."""
    with open(Path(directory) / f"{CV_RESULTS}.json") as f:
        df = pd.DataFrame(json.load(f))
    numeric = [c for c in df.columns if c.startswith(("split", "mean_", "std_"))]
    return df.astype({c: float for c in numeric})


def job_folders(results_dir: Path) -> list[Path]:
    """The folders under a sweep folder that hold a job.json, at any depth (hydra.sweep.subdir may nest
    them, as in n/${hydra.job.num}), in job-number order; damaged ones included. A folder holding its own
    multirun.yaml is another sweep's, and so is everything under it: a sweep owns only its own jobs."""
    found, todo = [], [Path(results_dir)]
    while todo:
        for d in todo.pop().iterdir():
            if not d.is_dir() or (d / "multirun.yaml").is_file():
                continue
            if (d / JOB).is_file():
                found.append(d)
            elif not d.name.startswith("."):  # .hydra and the like hold no jobs
                todo.append(d)

    def number_order(d: Path) -> list[tuple]:
        return [(not part.isdigit(), int(part) if part.isdigit() else 0, part) for part in d.relative_to(results_dir).parts]
    return sorted(found, key=number_order)


def job_dirs(results_dir: Path) -> list[Path]:
    """The job folders under a sweep folder that hold a complete job record (job_record), in job-number order."""
    complete = []
    for d in job_folders(results_dir):
        with contextlib.suppress(DamagedJob):  # a damaged record counts as unfinished: its job runs again
            if job_record(d) is not None:
                complete.append(d)
    return complete


def aggregate(results_dir: Path) -> pd.DataFrame | None:
    """Rebuild a sweep folder's aggregate from every finished job's rows (src.refresh.refresh checks it is current);
    None, writing nothing, when no job folder holds a complete record."""
    results_dir = Path(results_dir)
    for tmp in results_dir.glob(".*.tmp"):  # another writer's, still in use, unless it is old
        with contextlib.suppress(FileNotFoundError):
            if time.time() - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
    dirs = job_dirs(results_dir)
    if not dirs:
        return None
    df = rank(pd.concat([read_cv_results(d) for d in dirs], ignore_index=True))
    write_cv_results(df, results_dir)
    return df


# Keys that change what a run prints or logs and whether it resumes (train.verbose, logger, resume), how it
# computes (engine, train.threads: both engines train the same fits), and what the sweep does after its jobs
# (cv.refit, and how the candidates are compared: compare); none changes what a job computes.
NOT_IDENTITY = ("train.verbose", "train.threads", "cv.refit", "resume", "engine", "logger", "compare")


def without(settings: dict, keys) -> dict:
    """`settings` less the dotted `keys` (a copy; the nodes on the way are copied, the rest shared)."""
    out = dict(settings)
    for key in keys:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            if not isinstance(node.get(part), dict):
                break
            node[part] = node = dict(node[part])
        else:
            node.pop(leaf, None)
    return out


def flat(config: dict, prefix: str = "") -> dict:
    """A nested config as {"module.num_units": 64, ...}."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def job_key(identity: dict) -> str:
    """A job's resolved configuration (its identity) as a dictionary key; values compare as the config means them
    (momentum 0 and 0.0 are one value)."""
    return json.dumps(canonical(identity), sort_keys=True, default=str)


def same_job(a: dict, b: dict) -> bool:
    """Whether two identities are one configuration (job_key)."""
    return job_key(a) == job_key(b)


def canonical(value):
    """`value` with every integral float as an int (YAML's `momentum: 0` and the command line's 0.0 are one number)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


class DamagedJob(Exception):
    """A job folder whose record cannot be read whole; the message names the file and what is wrong."""


# job.json's keys and their types; status is one of STATUSES
RECORD = {"status": str, "error": (str, type(None)), "overrides": list, "config": dict}
STATUSES = ("ok", "diverged", "failed")


def job_record(job_dir: Path) -> dict | None:
    """job_dir's job.json record, or None where there is none (a job that never finished writing).

    Raises DamagedJob, naming the file, when job.json or a file it vouches for (cv_results.json, and
    history.json where it is) is missing, unreadable or incomplete: such a folder counts as unfinished.
    """
    job_dir = Path(job_dir)
    path = job_dir / JOB
    if not path.is_file():
        return None
    record = _read_json(path)
    if not isinstance(record, dict):
        raise DamagedJob(f"{path} is incomplete (not a JSON object)")
    wrong = [k for k, kind in RECORD.items() if k not in record or not isinstance(record[k], kind)]
    if wrong:
        raise DamagedJob(f"{path} is incomplete (no valid {', '.join(wrong)})")
    if record["status"] not in STATUSES:
        raise DamagedJob(f"{path} is incomplete (status {record['status']!r} is none of {', '.join(STATUSES)})")
    rows = _read_json(job_dir / f"{CV_RESULTS}.json")
    if not isinstance(rows, dict) or not rows.get("params") or len({len(v) if isinstance(v, list) else -1 for v in rows.values()}) != 1:
        raise DamagedJob(f"{job_dir / CV_RESULTS}.json is incomplete (not one row per candidate in cv_results_ form)")
    scoring = (record["config"].get("cv") or {}).get("scoring") or []
    needed = ["status", "error", *(f"mean_test_{m}" for m in scoring)]  # the aggregate, the report and the refit read these
    missing = [c for c in needed if c not in rows] or ([] if any(c.startswith("mean_test_") for c in rows) else ["mean_test_<metric>"])
    if missing:
        raise DamagedJob(f"{job_dir / CV_RESULTS}.json is incomplete (no {', '.join(missing)} column)")
    if (job_dir / HISTORY).exists() and not isinstance(_read_json(job_dir / HISTORY), list):  # the report reads it where it is
        raise DamagedJob(f"{job_dir / HISTORY} is incomplete (not a list of fold histories)")
    return record


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DamagedJob(f"{path} is missing") from None
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        raise DamagedJob(f"{path} cannot be read ({type(e).__name__}: {e})") from None


def finished_job(job_dir: Path) -> dict | None:
    """The job.json record of job_dir if it holds a complete job that finished with a result (ok or diverged)."""
    try:
        record = job_record(job_dir)
    except DamagedJob:
        return None
    return record if record is not None and record["status"] != "failed" else None


def failure_summary(results_dir: Path) -> str | None:
    """One paragraph naming the failed jobs of a results folder and where their logs are (None if none failed)."""
    results_dir = Path(results_dir)
    dirs = [results_dir] if (results_dir / JOB).is_file() else job_dirs(results_dir)
    records = []
    for d in dirs:
        with contextlib.suppress(DamagedJob):
            if (record := job_record(d)) is not None:
                records.append((d, record))
    failed = [(d, r) for d, r in records if r["status"] == "failed"]
    if not failed:
        return None
    named = "; ".join(f"job {d.name} ({' '.join(r['overrides']) or 'defaults'}): {r['error']} [traceback: {d / ERROR_LOG}]" for d, r in failed)
    return (f"{len(failed)} of {len(records)} jobs failed: {named}. Their rows are in {results_dir / CV_RESULTS}.csv "
            "with status=failed and NaN scores; rerun the same command to retry them (finished jobs are not trained again).")


def progress(sweep_dir: Path, total: int | None, trained: int = 0) -> str:
    """"3 of 12 jobs done, about 0:01:05 left": finished job folders, and the time this run took so far (since
    Hydra wrote multirun.yaml) per job it trained, times the jobs still to train.

    `trained`: jobs still to record whose fits are already trained (the fused launcher trains a group's jobs
    at once, before the first of them records): the time so far trained them too, and they need none more.
    """
    sweep_dir = Path(sweep_dir)
    started = (sweep_dir / "multirun.yaml").stat().st_mtime if (sweep_dir / "multirun.yaml").is_file() else None
    finished = [(d / JOB).stat().st_mtime for d in job_dirs(sweep_dir)]
    done = len(finished) if total is None else min(len(finished), total)
    if total is None:
        return f"{done} jobs done"
    line = f"{done} of {total} jobs done"
    this_run = [t for t in finished if started is not None and t >= started]
    to_train = max(total - done - trained, 0)
    if done < total and to_train == 0:
        line += f", the other {total - done} already trained"
    elif this_run and done < total:
        left = (max(this_run) - started) / (len(this_run) + trained) * to_train
        line += f", about {int(left) // 3600}:{int(left) % 3600 // 60:02d}:{int(left) % 60:02d} left"
    return line


MOST_PRINTED_SPLITS = 5  # a table with more splits (cv.repeats > 1) prints their mean and std only


def ranked_table(df: pd.DataFrame, metric: str | None = None, verdicts: list[str | None] | None = None) -> str:
    """The candidates best first, like the tutorial's results.head(): params, split scores (up to
    MOST_PRINTED_SPLITS of them) and their mean, the verdict against the best (src.compare) where given, fit time."""
    metric = metric or metric_names(df)[0]
    if verdicts is not None:
        df = df.assign(verdict=[v or "-" for v in verdicts])
    cols = sorted(c for c in df.columns if c.startswith("param_"))
    splits = [c for c in df.columns if c.startswith("split") and c.endswith(f"_test_{metric}")]
    cols += splits if len(splits) <= MOST_PRINTED_SPLITS else []  # repeated CV's 15 splits are in cv_results.csv
    cols += [f"mean_test_{metric}", f"std_test_{metric}", f"rank_test_{metric}"] + (["verdict"] if verdicts is not None else [])
    cols += ["mean_fit_time"]
    cols += ["status"] if "status" in df else []
    table = df.sort_values(f"rank_test_{metric}", kind="stable")[cols]
    table.columns = [c.removeprefix("param_") for c in cols]

    def param(v) -> str:  # %g: 1e-05 and 1e+30 stay readable, 0.01 stays 0.01
        return f"{v:g}" if isinstance(v, float) else str(v)

    formats = {c.removeprefix("param_"): param for c in cols if c.startswith("param_")}
    formats |= {c: "{:.4f}".format for c in cols if c.startswith(("split", "mean_", "std_"))}
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        return table.to_string(index=False, formatters=formats)


def environment(device: str, seed: int, engine: str = "gridsearch") -> dict:
    """What makes a job reproducible: package versions, Python, device (the GPU that ran it), engine, threads, seed, git commit."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": f"cuda:{torch.cuda.current_device()}" if device == "cuda" else device,  # the GPU's number among the visible ones
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or platform.machine(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),  # which physical GPUs those are (None: all)
        "engine": engine,
        "torch_threads": torch.get_num_threads(),
        "seed": seed,
        "git": _git_state(),
    }


@functools.lru_cache(maxsize=1)
def _git_state() -> dict:
    """The commit of the code that ran and whether the work tree had uncommitted changes: read once per process
    (the code that runs is what the process imported; two git calls per job cost a sweep of 500 jobs 20 s)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
