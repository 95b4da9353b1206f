"""src/precision.py: train.precision's one context, and bf16 through both engines and the refit on the CPU (in process)."""
import json
import shutil
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_here
from src import precision, refit, store

# Two widths, 600 digits, 5 epochs at lr=0.1: fits that have learnt something (accuracy 0.4-0.7), so that rounding
# shows in the scores, in about 10 s for the four sweeps.
SWEEP = ["module.num_units=16,64", "dataset.limit=600", "train.max_epochs=5", "optimizer.lr=0.1", "train.verbose=quiet", "cv.refit=false"]


def test_fp32_enters_nothing_bf16_autocasts_and_tf32_sets_cudas_flags_for_its_context_only():
    with precision.context("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with precision.context("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with precision.context("tf32", "cpu"):  # the CPU has no TF32: nothing changes
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == saved
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:  # the flags only: no GPU is needed to set them
        with precision.context("tf32", "cuda:0"):
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_tf32_stays_on_until_the_last_of_a_groups_threads_is_done():
    """The fused engine trains a group's shares in threads, each in its own context: the first to finish must not
    switch TF32 off under the others."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    first_in, first_out, seen = threading.Event(), threading.Event(), []

    def first():
        with precision.context("tf32", "cuda"):
            first_in.set()
            first_out.wait(5)

    try:
        thread = threading.Thread(target=first)
        thread.start()
        first_in.wait(5)
        with precision.context("tf32", "cuda"):
            first_out.set()
            thread.join(5)
            seen.append(torch.backends.cuda.matmul.allow_tf32)  # the first thread's context has closed
        assert seen == [True] and torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def test_full_brings_autocast_outputs_back_to_float32_and_leaves_the_rest():
    x64, x32 = torch.ones(2, dtype=torch.float64), torch.ones(2)
    assert precision.full(x32) is x32 and precision.full(x64) is x64  # fp32 (and a float64 module) untouched
    assert precision.full(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict:
    """SWEEP in fp32 and bf16 through each engine: {(precision, engine): (folder, cv_results by width)}."""
    out = {}
    for wanted in ("fp32", "bf16"):
        for name in ("gridsearch", "fused"):
            folder = tmp_path_factory.mktemp(f"{wanted}-{name}") / "s"
            proc = run_here(*SWEEP, f"train.precision={wanted}", f"engine={name}", f"hydra.sweep.dir={folder}", "-m")
            assert proc.returncode == 0, proc.stderr
            rows = store.read_cv_results(folder).sort_values("param_module__num_units").reset_index(drop=True)
            out[wanted, name] = folder, rows
    return out


def final_losses(folder) -> np.ndarray:
    """Each job's folds' last training loss, by job then fold."""
    return np.array([[h["epochs"][-1]["train_loss"] for h in json.loads((folder / job / store.HISTORY).read_text())] for job in ("0", "1")])


def test_bf16_trains_through_both_engines_to_scores_close_to_fp32(sweeps):
    # bfloat16 keeps 8 significant bits: every product's inputs are rounded by up to 2^-9 (0.2%) of their size, and
    # after 35 SGD steps the weights differ from fp32's by about that much. A test row near a decision boundary then
    # flips; each flips one 480th of the mean accuracy. Measured here: at most 0.0167 (8 rows) over 4 seeds x 2 widths
    # x 2 engines; 0.03 (14 rows) allows for other BLAS builds, and is far below what a broken step would cost
    # (a fit that learns nothing scores 0.1, these 0.4 to 0.7).
    for name in ("gridsearch", "fused"):
        (folder, bf16), (_, fp32) = sweeps["bf16", name], sweeps["fp32", name]
        assert bf16["status"].tolist() == ["ok", "ok"] and (bf16["mean_test_accuracy"] > 0.3).all()
        np.testing.assert_allclose(bf16["mean_test_accuracy"], fp32["mean_test_accuracy"], atol=0.03)
        assert not np.array_equal(final_losses(folder), final_losses(sweeps["fp32", name][0]))  # bf16 did run in bfloat16
        assert store.finished_job(folder / "0")["config"]["train"]["precision"] == "bf16"


def test_fp32_engines_stay_equal_and_bf16_engines_agree_within_bf16_rounding(sweeps):
    scores = [c for c in sweeps["fp32", "fused"][1].columns if c.startswith(("split", "mean_test"))]
    pd.testing.assert_frame_equal(sweeps["fp32", "fused"][1][scores], sweeps["fp32", "gridsearch"][1][scores])
    # Under bf16 the engines round different fp32 numbers: skorch's mm and the fused engine's bmm add in another
    # order, and where fp32 leaves them 1e-5 apart, a value on either side of a bfloat16 rounding step lands 2^-9
    # apart. The engines then drift apart as two bf16 runs do. Measured: at most 0.0104 (5 rows of 480) in mean
    # accuracy over 4 seeds x 2 widths, and the last training losses within 3% (fp32: 1e-5).
    bf16_fused, bf16_grid = sweeps["bf16", "fused"], sweeps["bf16", "gridsearch"]
    np.testing.assert_allclose(bf16_fused[1]["mean_test_accuracy"], bf16_grid[1]["mean_test_accuracy"], atol=0.025)
    np.testing.assert_allclose(final_losses(bf16_fused[0]), final_losses(bf16_grid[0]), rtol=0.05)


@pytest.mark.parametrize("name", ["fused", "gridsearch"])
def test_the_refit_trains_and_scores_in_the_jobs_precision(sweeps, monkeypatch, name):
    seen = []
    context = precision.context
    monkeypatch.setattr(precision, "context", lambda wanted, device: seen.append(wanted) or context(wanted, device))
    out = refit.refit_best(sweeps["bf16", name][0], name)
    assert out["refit"]["status"] == "ok" and out["refit"]["engine"] == name
    assert seen and set(seen) == {"bf16"}  # the refit's training, and its scoring of the held-out set


def test_a_finished_fp32_job_is_not_taken_for_a_bf16_one(sweeps, tmp_path):
    folder = tmp_path / "s"
    shutil.copytree(sweeps["fp32", "fused"][0], folder)  # finished fp32 jobs, recorded as before the key existed
    both = run_here(*SWEEP, "engine=fused", f"hydra.sweep.dir={folder}", "train.precision=fp32,bf16", "-m")
    assert both.returncode == 0, both.stderr
    assert (both.stdout + both.stderr).count("not trained again") == 2  # the fp32 jobs; the bf16 ones train
    rows = store.read_cv_results(folder)
    assert rows["status"].tolist() == ["ok"] * 4 and rows["param_train__precision"].tolist().count("bf16") == 2
