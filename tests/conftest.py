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
    """Run `python -m <module> args...` from the repo root, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})},
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
    """A finished three-candidate multirun through the real CLI; tests read its folder."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "s"
    proc = run_cli("module.num_units=8,16,32", *TINY, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 0, proc.stderr
    sweep_dir.joinpath("stdout.txt").write_text(proc.stdout)
    return sweep_dir
