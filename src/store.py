"""A results folder's files, and the one rule for what a finished job is.

A job folder holds its own rows (cv_results.json), its folds' training histories (history.json),
what makes it reproducible (environment.json), error.log if it failed, and job.json, written last:
a job folder holds a finished job only once job.json is there and every file it vouches for is whole
(read_job). The results folder (the sweep folder, or the run folder of a single run) holds the
aggregate of every finished job, with ranks recomputed over all of them, as cv_results.{csv,json,pt}.
The aggregate is rebuilt from the job files (src.refresh says when, and how concurrent writers stay
correct without a lock), and each file is written to a temporary name and then renamed, so a reader or
a crash never sees half a file. Every other module reads and writes these files through this one.
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

import pandas as pd
import torch

from src import results
from src.identity import same_job

CV_RESULTS = "cv_results"  # cv_results.{json,csv,pt}: a job's rows, or the results folder's aggregate
JOB = "job.json"  # written last: a job folder holds a finished job only once this file is there
ERROR_LOG = "error.log"
HISTORY = "history.json"
ENVIRONMENT = "environment.json"
COMPARISON = "comparison"  # comparison.csv / comparison.json (src.compare) beside a results folder's report
STALE_TMP_S = 600  # a temporary file this old was left by a killed writer (a live one renames it within seconds)
_UMASK = os.umask(0)
os.umask(_UMASK)
PACKAGES = ("torch", "skorch", "scikit-learn", "hydra-core", "numpy", "pandas", "hiplot", "mlxtend")  # environment.json's versions


def record(job_dir: Path, result: results.SearchResult, overrides: list[str], identity: dict, n_parameters: int | None = None) -> None:
    """Write a job folder: cv_results.*, history.json, environment.json, error.log if it failed, job.json last
    (with the candidate's number of trainable parameters, `n_parameters`, where given).

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
    cost = {} if n_parameters is None else {"n_parameters": n_parameters}
    write_json(job_dir / JOB, {"status": result.status, "error": result.error, "overrides": overrides, "config": identity, **cost})


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
    _write_table(df, directory / f"{CV_RESULTS}.json", directory / f"{CV_RESULTS}.csv")
    buffer = io.BytesIO()
    torch.save(results.to_columns(df), buffer)  # plain lists, dicts and floats: loads with weights_only=True
    atomic_write(directory / f"{CV_RESULTS}.pt", buffer.getvalue())


def _write_table(df: pd.DataFrame, json_path: Path, csv_path: Path) -> None:
    """A frame with a params column as JSON (cv_results_'s dict of columns, null for NaN) and as CSV (params as JSON)."""
    write_json(json_path, results.to_columns(df))
    csv = df.assign(params=[json.dumps(p, sort_keys=True) for p in df["params"]])
    atomic_write(csv_path, csv.to_csv(index=False))


def comparison_paths(out: Path) -> tuple[Path, Path]:
    """comparison.csv and .json beside report `out` (<stem>_comparison.* when it is not hiplot.html)."""
    stem = COMPARISON if out.name == "hiplot.html" else f"{out.stem}_{COMPARISON}"
    return out.with_name(f"{stem}.csv"), out.with_name(f"{stem}.json")


def write_comparison(comparison: pd.DataFrame, out: Path) -> None:
    """Write comparison.csv (params as JSON) and comparison.json (columns, as cv_results.json) beside report `out`."""
    csv_path, json_path = comparison_paths(out)
    _write_table(comparison, json_path, csv_path)


def read_comparison(results_dir: Path) -> pd.DataFrame | None:
    """A results folder's comparison.json as a DataFrame, or None where there is none (or it cannot be read)."""
    try:
        return pd.DataFrame(json.loads((Path(results_dir) / f"{COMPARISON}.json").read_text()))
    except (OSError, ValueError):
        return None


def read_cv_results(directory: Path) -> pd.DataFrame:
    """The cv_results.json in `directory` as a DataFrame (null -> NaN in score columns)."""
    with open(Path(directory) / f"{CV_RESULTS}.json") as f:
        return rows_frame(json.load(f))


def rows_frame(columns: dict) -> pd.DataFrame:
    """cv_results.json's columns (JobFiles.rows) as a DataFrame, null -> NaN in the score columns."""
    df = pd.DataFrame(columns)
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


def read_jobs(results_dir: Path) -> list["JobFiles"]:
    """The complete jobs of a results folder (read_job), in job-number order: the folder itself for a single run's,
    else its job folders. Damaged ones count as unfinished and are left out: their jobs run again."""
    results_dir = Path(results_dir)
    found = []
    for d in [results_dir] if (results_dir / JOB).is_file() else job_folders(results_dir):
        with contextlib.suppress(DamagedJob):
            if (job := read_job(d)) is not None:
                found.append(job)
    return found


def job_dirs(results_dir: Path) -> list[Path]:
    """The job folders under a sweep folder that hold a complete job record (read_job), in job-number order."""
    return [job.dir for job in read_jobs(results_dir)]


def aggregate(results_dir: Path, jobs: list["JobFiles"] | None = None) -> pd.DataFrame | None:
    """Rebuild a sweep folder's aggregate from every finished job's rows (src.refresh.refresh checks it is current);
    None, writing nothing, when no job folder holds a complete record. `jobs`: read_jobs(results_dir), if read already."""
    results_dir = Path(results_dir)
    for tmp in results_dir.glob(".*.tmp"):  # another writer's, still in use, unless it is old
        with contextlib.suppress(FileNotFoundError):
            if time.time() - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
    jobs = read_jobs(results_dir) if jobs is None else jobs
    if not jobs:
        return None
    df = results.rank(pd.concat([rows_frame(job.rows) for job in jobs], ignore_index=True))
    write_cv_results(df, results_dir)
    return df


class DamagedJob(Exception):
    """A job folder whose record cannot be read whole; the message names the file and what is wrong."""


# job.json's keys and their types; status is one of STATUSES (and n_parameters, an int, where the job recorded it)
RECORD = {"status": str, "error": (str, type(None)), "overrides": list, "config": dict}


STATUSES = ("ok", "diverged", "failed")


@dataclass(frozen=True)
class JobFiles:
    """A complete job folder's files, each read once: job.json, cv_results.json (its columns), history.json."""
    dir: Path
    record: dict             # job.json: status, error, overrides, config (the job's identity)
    rows: dict               # cv_results.json: cv_results_'s columns, one row per candidate
    histories: list | None   # history.json, where there is one


def read_job(job_dir: Path) -> JobFiles | None:
    """job_dir's files, or None where there is no job.json (a job that never finished writing).

    Raises DamagedJob, naming the file, when job.json or a file it vouches for (cv_results.json, and
    history.json where it is) is missing, unreadable or incomplete: such a folder counts as unfinished.
    """
    job_dir = Path(job_dir)
    path = job_dir / JOB
    if not path.is_file():
        return None
    record = read_json(path)
    if not isinstance(record, dict):
        raise DamagedJob(f"{path} is incomplete (not a JSON object)")
    wrong = [k for k, kind in RECORD.items() if k not in record or not isinstance(record[k], kind)]
    if wrong:
        raise DamagedJob(f"{path} is incomplete (no valid {', '.join(wrong)})")
    if record["status"] not in STATUSES:
        raise DamagedJob(f"{path} is incomplete (status {record['status']!r} is none of {', '.join(STATUSES)})")
    rows = read_json(job_dir / f"{CV_RESULTS}.json")
    if not isinstance(rows, dict) or not rows.get("params") or len({len(v) if isinstance(v, list) else -1 for v in rows.values()}) != 1:
        raise DamagedJob(f"{job_dir / CV_RESULTS}.json is incomplete (not one row per candidate in cv_results_ form)")
    scoring = (record["config"].get("cv") or {}).get("scoring") or []
    needed = ["status", "error", *(f"mean_test_{m}" for m in scoring)]  # the aggregate, the report and the refit read these
    missing = [c for c in needed if c not in rows] or ([] if any(c.startswith("mean_test_") for c in rows) else ["mean_test_<metric>"])
    if missing:
        raise DamagedJob(f"{job_dir / CV_RESULTS}.json is incomplete (no {', '.join(missing)} column)")
    histories = read_json(job_dir / HISTORY) if (job_dir / HISTORY).exists() else None
    if histories is not None and not isinstance(histories, list):  # the report reads it where it is
        raise DamagedJob(f"{job_dir / HISTORY} is incomplete (not a list of fold histories)")
    return JobFiles(job_dir, record, rows, histories)


def job_record(job_dir: Path) -> dict | None:
    """job_dir's job.json record (read_job), or None where there is none; raises DamagedJob as read_job does."""
    job = read_job(job_dir)
    return None if job is None else job.record


def read_json(path: Path):
    """A results file's JSON content; a missing, unreadable or invalid file is a DamagedJob naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DamagedJob(f"{path} is missing") from None
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        raise DamagedJob(f"{path} cannot be read ({type(e).__name__}: {e})") from None


class OtherJob(ValueError):
    """A folder holds a finished job of another configuration, which a job of this one would overwrite."""

    def __init__(self, job_dir: Path, record: dict):
        self.job_dir, self.record = Path(job_dir), record
        super().__init__(f"{job_dir} holds a finished job with another configuration ({' '.join(record['overrides']) or 'defaults'}), "
                         "which this job would overwrite; use another output folder, or resume=false to overwrite it")


def finished_job(job_dir: Path, identity: dict | None = None, *, damaged_ok: bool = True) -> dict | None:
    """The job.json record of job_dir if it holds a finished job: complete (job_record), with a result (ok or
    diverged; a failed job runs again). The one rule for "finished", wherever a job is skipped, resumed or refit.

    With `identity`, the finished job must be that configuration: another one raises OtherJob. A damaged folder
    counts as unfinished (None), or raises DamagedJob with `damaged_ok=False`, for a caller that says so.
    """
    try:
        record = job_record(job_dir)
    except DamagedJob:
        if damaged_ok:
            return None
        raise
    if record is None or record["status"] == "failed":
        return None
    if identity is not None and not same_job(record["config"], identity):
        raise OtherJob(job_dir, record)
    return record


def failure_summary(results_dir: Path) -> str | None:
    """One paragraph naming the failed jobs of a results folder and where their logs are (None if none failed)."""
    results_dir = Path(results_dir)
    jobs = read_jobs(results_dir)
    failed = [job for job in jobs if job.record["status"] == "failed"]
    if not failed:
        return None
    named = "; ".join(f"job {job.dir.name} ({' '.join(job.record['overrides']) or 'defaults'}): {job.record['error']} "
                      f"[traceback: {job.dir / ERROR_LOG}]" for job in failed)
    return (f"{len(failed)} of {len(jobs)} jobs failed: {named}. Their rows are in {results_dir / CV_RESULTS}.csv "
            "with status=failed and NaN scores; rerun the same command to retry them (finished jobs are not trained again).")


def progress(sweep_dir: Path, total: int | None, trained: int = 0) -> str:
    """"3 of 12 jobs done, about 0:01:05 left": job folders holding a job.json, and the time this run took so far
    (since Hydra wrote multirun.yaml) per job it trained, times the jobs still to train.

    `trained`: jobs still to record whose fits are already trained (the fused launcher trains a group's jobs
    at once, before the first of them records): the time so far trained them too, and they need none more.
    """
    sweep_dir = Path(sweep_dir)
    started = (sweep_dir / "multirun.yaml").stat().st_mtime if (sweep_dir / "multirun.yaml").is_file() else None
    finished = []
    for d in job_folders(sweep_dir):  # stat() only: each job's line reading every job's files would make a sweep O(N^2)
        with contextlib.suppress(FileNotFoundError):  # moved since the listing (a rerun arranging the folder)
            finished.append((d / JOB).stat().st_mtime)
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


def environment(device: str, seed: int, engine: str = "gridsearch") -> dict:
    """What makes a job reproducible: package versions, Python, device (the GPU that ran it), engine, threads, seed, git commit."""
    python, machine, versions, processor = _process_facts()
    return {
        "python": python,
        "platform": machine,
        "packages": dict(versions),
        "device": f"cuda:{torch.cuda.current_device()}" if device == "cuda" else device,  # the GPU's number among the visible ones
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else processor,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),  # which physical GPUs those are (None: all)
        "engine": engine,
        "torch_threads": torch.get_num_threads(),
        "seed": seed,
        "git": _git_state(),
    }


@functools.lru_cache(maxsize=1)
def _process_facts() -> tuple[str, str, tuple[tuple[str, str | None], ...], str]:
    """Python's version, the platform, the versions of PACKAGES and the processor's name: read once per process, as
    _git_state is (reading the eight versions from the installed packages' metadata took 10-30 ms a job)."""
    versions = []
    for name in PACKAGES:
        try:
            versions.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            versions.append((name, None))
    return platform.python_version(), platform.platform(), tuple(versions), platform.processor() or platform.machine()


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
