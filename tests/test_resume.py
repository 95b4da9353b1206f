"""Resuming into a results folder (src/resume.py): what a folder is, which jobs it owns, what a rerun may reuse,
move or refuse; in-process, on job folders written as src.results writes them."""
import pytest

from conftest import TINY, fake_job
from src import results, resume
from src.config import ConfigError, preflight


def checked(tmp_path, *overrides, multirun=True):
    """preflight() of a tiny command into tmp_path/s."""
    out = f"hydra.sweep.dir={tmp_path / 's'}" if multirun else f"hydra.run.dir={tmp_path / 's'}"
    return preflight([*overrides, *TINY, out, *(["-m"] if multirun else [])])


def test_momentum_0_and_0_0_are_one_configuration(tmp_path):
    """Issue 18 item 3: the identity compares values as the config means them (the default SGD's momentum: 0)."""
    zero, zero_float = checked(tmp_path, "optimizer.momentum=0", multirun=False), checked(tmp_path, "optimizer.momentum=0.0", multirun=False)
    assert results.job_key(zero.identities[0]) == results.job_key(zero_float.identities[0])
    fake_job(tmp_path / "s", zero.identities[0])
    assert resume.prepare_folder(zero_float) == []  # the finished run is this run: not refused as another configuration
