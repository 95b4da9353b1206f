import contextlib
import io
import os
import runpy
import shutil
import signal
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
# A tiny but real workload: 150 stratified MNIST digits, 2 epochs.
TINY = ["dataset.limit=150", "train.max_epochs=2", "train.verbose=quiet"]
TINY_SWEEP = ["module.num_units=8,16,32", *TINY, "engine=gridsearch"]  # the tiny_sweep fixture's command, less its folder
# +optimizer.fail=true: the first step raises (tests/failing_optimizer.py), as a job that runs out of memory does.
BROKEN = ["optimizer._target_=failing_optimizer.FailingSGD", "+optimizer.fail=false,true", "optimizer.lr=0.01,1e30", *TINY,
          "train.max_epochs=3"]


def run_cli(*args: str, module: str = "src.sweep", env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <module> args...` from the repo root, as a user would; the tests' helper modules
    (failing_optimizer) are importable there."""
    path = os.pathsep.join(p for p in (str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": path, **(env or {})},
    )


def run_here(*args: str, module: str = "src.sweep", env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m <module> args...` run in this process, as run_cli runs it but without a Python start-up and its
    imports (3-5 s each on 2 cores): the same command-line parsing, exit status, and lines on stdout and stderr.

    What a process holds for the command's lifetime is set up and put back: sys.argv, the environment, the signal
    handlers and torch's threads. The config's per-process caches are emptied first, as a fresh process starts
    without them (a data file changed between two commands must be read again). Keep run_cli for what only a
    separate process shows: signals, two commands at once, what a fresh process imports.
    """
    import torch

    from src import config, data

    for cached in (data.parts, config._checked, config._available):
        cached.cache_clear()
    config._passed.clear()
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_env, threads = sys.argv, dict(os.environ), torch.get_num_threads()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    os.environ.update({"HYDRA_FULL_ERROR": "0", **(env or {})})
    sys.argv = [module, *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=f".*'{module}' found in sys.modules", category=RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=True)  # as `python -m`: Hydra finds conf/ from the file
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception:  # as Python ends a process on an uncaught exception: the traceback on stderr, status 1
        err.write(traceback.format_exc())
        code = 1
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        for s, handler in handlers.items():
            signal.signal(s, handler)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def compose_cfg():
    """compose(overrides) -> the config `python -m src.sweep overrides` would run with."""
    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    return _compose


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> Path:
    """A finished three-candidate multirun through the command line (in this process) and the GridSearchCV path (the reference the fused
    engine is compared with: engine=auto would pick the fused engine on CUDA); tests read its folder."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "s"
    proc = run_here(*TINY_SWEEP, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 0, proc.stderr
    sweep_dir.joinpath("stdout.txt").write_text(proc.stdout)
    return sweep_dir


@pytest.fixture(scope="session")
def fused_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """tiny_sweep's grid through the fused engine: (its folder, its command's output)."""
    sweep_dir = tmp_path_factory.mktemp("fused") / "s"
    proc = run_here("module.num_units=8,16,32", *TINY, "engine=fused", f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 0, proc.stderr
    return sweep_dir, proc


@pytest.fixture(scope="session")
def second_sweep(tmp_path_factory) -> Path:
    """Two of tiny_sweep's candidates with seed=1 (other data and other splits), to merge with it."""
    sweep_dir = tmp_path_factory.mktemp("second") / "s"
    proc = run_here("module.num_units=8,16", *TINY, "seed=1", "engine=gridsearch", f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 0, proc.stderr
    return sweep_dir


@pytest.fixture(scope="session")
def broken_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A sweep where +optimizer.fail=true fails at its first step and lr=1e30 diverges: (its folder, the command's result)."""
    sweep_dir = tmp_path_factory.mktemp("broken") / "s"
    return sweep_dir, run_here(*BROKEN, f"hydra.sweep.dir={sweep_dir}", "-m")


def same_aggregate(sweep_dir: Path, reference: Path) -> None:
    """Assert that two aggregates agree in every column, candidate by candidate, except the measured times."""
    import pandas as pd

    from src import store

    ours, theirs = (store.read_cv_results(d).sort_values("param_module__num_units").reset_index(drop=True) for d in (sweep_dir, reference))
    assert list(ours.columns) == list(theirs.columns)
    compared = [c for c in theirs.columns if not c.endswith("_time")]
    pd.testing.assert_frame_equal(ours[compared], theirs[compared])


def write_idx(path: Path, array, gz: bool = False) -> None:
    """An unsigned-byte IDX file (MNIST's raw format): magic 0x0000080<ndim>, big-endian dims, then the bytes."""
    import gzip
    import struct

    import numpy as np

    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = struct.pack(f">I{array.ndim}I", 0x800 + array.ndim, *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def write_mnist_raw(root: Path, folder: str = "MNIST", n_train: int = 60, n_test: int = 30, gz: bool = False, seed: int = 0):
    """Tiny data sets in torchvision's layout root/<folder>/raw/; returns {split: (images, labels)}."""
    import numpy as np

    rng = np.random.default_rng(seed)
    written = {}
    for part, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels, gz)
        written[part] = (images, labels)
    return written


def fake_job(job_dir: Path, config: dict, drop: tuple[str, ...] = (), status: str = "ok", units: int = 8):
    """A finished job folder as src.store.record writes it (one candidate), less the cv_results columns in `drop`."""
    from src import store

    job_dir.mkdir(parents=True, exist_ok=True)
    rows = {"mean_fit_time": [1.0], "param_module__num_units": [units], "params": [{"module__num_units": units}],
            "split0_test_accuracy": [0.5], "mean_test_accuracy": [0.5], "std_test_accuracy": [0.0], "rank_test_accuracy": [1],
            "status": [status], "error": [None]}
    store.write_json(job_dir / "cv_results.json", {k: v for k, v in rows.items() if k not in drop})
    store.write_json(job_dir / store.JOB, {"status": status, "error": None, "overrides": [f"module.num_units={units}"], "config": config})
    return job_dir


def no_cluster() -> str | None:
    """Why the SLURM tests cannot run here, or None when sinfo answers."""
    if shutil.which("sinfo") is None:
        return 'no SLURM here (sinfo is absent); start a local one with: eval "$(.ci/slurm-up)"'
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout.strip():
        why = (proc.stderr.strip().splitlines() or ["no nodes"])[-1]
        return f'sinfo found no SLURM cluster ({why}); start one with: eval "$(.ci/slurm-up)"'
    return None


@pytest.fixture(scope="session")
def cluster():
    """A SLURM cluster to submit to: skipped without one, a failure under CI=true (.ci/run starts one)."""
    reason = no_cluster()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)


def wait_until(found, timeout_s: float = 120, poll_s: float = 0.2):
    """found()'s first truthy value, asked every poll_s seconds."""
    import time

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if value := found():
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"nothing found in {timeout_s} s")


def cancel_a_running_task(command: list[str]) -> tuple[int, str, str]:
    """Start `python -m src.sweep *command` (a sweep through a SLURM launcher), scancel the first of its tasks to run,
    and wait for the command: (its exit status, its stderr, the task cancelled)."""
    proc = subprocess.Popen([sys.executable, "-m", "src.sweep", *command], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    running = wait_until(lambda: subprocess.run(["squeue", "--me", "--array", "-h", "-t", "RUNNING", "-o", "%i"],
                                                capture_output=True, text=True).stdout.split())
    subprocess.run(["scancel", running[0]], check=True)
    _, stderr = proc.communicate(timeout=600)
    return proc.returncode, stderr, running[0]
