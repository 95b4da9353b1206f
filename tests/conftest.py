import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
# A tiny but real workload: 150 stratified MNIST digits, 2 epochs.
TINY = ["dataset.limit=150", "train.max_epochs=2", "train.verbose=quiet"]


def run_cli(*args: str, module: str = "src.sweep", env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <module> args...` from the repo root, as a user would; the tests' helper modules
    (failing_optimizer) are importable there."""
    path = os.pathsep.join(p for p in (str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": path, **(env or {})},
    )


@pytest.fixture
def compose_cfg():
    """compose(overrides) -> the config `python -m src.sweep overrides` would run with."""
    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    return _compose


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> Path:
    """A finished three-candidate multirun through the real CLI and the GridSearchCV path (the reference the fused
    engine is compared with: engine=auto would pick the fused engine on CUDA); tests read its folder."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "s"
    proc = run_cli("module.num_units=8,16,32", *TINY, "engine=gridsearch", f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 0, proc.stderr
    sweep_dir.joinpath("stdout.txt").write_text(proc.stdout)
    return sweep_dir


@pytest.fixture(scope="session")
def grid4_sweep(tmp_path_factory) -> Path:
    """A finished four-candidate multirun (module.num_units=8,16,32,64), one job after another."""
    sweep_dir = tmp_path_factory.mktemp("grid4") / "s"
    proc = run_cli("module.num_units=8,16,32,64", *TINY, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 0, proc.stderr
    return sweep_dir


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
