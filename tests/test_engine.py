"""The two engines through the command line (in process): engine=fused (src/engine.py, hydra_plugins/fused_launcher/_core.py) gives the GridSearchCV path's results."""
import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY, run_here
from src import config, engine, layers, model, store

FUSED = "fused engine: jobs"


def by_units(sweep_dir):
    return store.read_cv_results(sweep_dir).sort_values("param_module__num_units").reset_index(drop=True)


def test_fused_sweep_equals_the_gridsearch_sweep(fused_sweep, tiny_sweep):
    sweep_dir, proc = fused_sweep
    assert f"{FUSED} 0, 1, 2 (9 fits) trained at once" in proc.stderr + proc.stdout
    fused, reference = by_units(sweep_dir), by_units(tiny_sweep)
    assert list(fused.columns) == list(reference.columns)
    scores = [c for c in reference.columns if c.startswith(("split", "mean_test", "std_test", "mean_train", "rank_test"))]
    pd.testing.assert_frame_equal(fused[scores], reference[scores])
    assert fused["params"].tolist() == reference["params"].tolist()


def test_fused_job_folders_have_the_same_files(fused_sweep, tiny_sweep):
    sweep_dir, _ = fused_sweep
    for job in ("0", "1", "2"):
        names = sorted(p.name for p in (sweep_dir / job).iterdir())
        assert names == sorted(p.name for p in (tiny_sweep / job).iterdir())
        history = json.loads((sweep_dir / job / store.HISTORY).read_text())
        reference = json.loads((tiny_sweep / job / store.HISTORY).read_text())
        assert [h["fold"] for h in history] == [0, 1, 2] and [h["params"] for h in history] == [h["params"] for h in reference]
        for mine, theirs in zip(history, reference):
            assert [set(e) for e in mine["epochs"]] == [set(e) for e in theirs["epochs"]]
            np.testing.assert_allclose([e["train_loss"] for e in mine["epochs"]], [e["train_loss"] for e in theirs["epochs"]], rtol=1e-5)
        assert json.loads((sweep_dir / job / store.ENVIRONMENT).read_text())["engine"] == "fused"
        assert json.loads((tiny_sweep / job / store.ENVIRONMENT).read_text())["engine"] == "gridsearch"
    assert (sweep_dir / "hiplot.html").is_file() and (sweep_dir / "multirun.yaml").is_file()


def test_fused_sweep_resumes_without_training(fused_sweep, tmp_path):
    import shutil

    sweep_dir = tmp_path / "s"
    shutil.copytree(fused_sweep[0], sweep_dir)
    again = run_here("module.num_units=8,16,32", *TINY, "engine=fused", f"hydra.sweep.dir={sweep_dir}", "-m")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("not trained again") == 3 and FUSED not in again.stdout + again.stderr


def test_jobs_fuse_in_groups_and_the_rest_run_through_gridsearch(tmp_path):
    proc = run_here("optimizer=sgd,adam", "module.num_units=8,16", *TINY, "engine=fused", "cv.refit=false", f"hydra.sweep.dir={tmp_path / 'a'}", "-m")
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert f"{FUSED} 0, 1 (6 fits)" in log and f"{FUSED} 2, 3 (6 fits)" in log  # SGD and Adam train apart
    assert store.read_cv_results(tmp_path / "a")["status"].tolist() == ["ok"] * 4
    # a job the fused engine cannot train (+optimizer.amsgrad=true) runs alone through GridSearchCV: tests/test_launcher.py


def test_a_diverging_candidate_in_a_fused_group_is_recorded_and_the_others_unchanged(tmp_path, fused_sweep):
    mixed = run_here("module.num_units=8,16", "optimizer.lr=0.01,1e30", *TINY, "engine=fused", "cv.refit=false",
                     f"hydra.sweep.dir={tmp_path / 'm'}", "-m")
    assert mixed.returncode == 0, mixed.stderr
    assert f"{FUSED} 0, 1, 2, 3 (12 fits)" in mixed.stdout + mixed.stderr
    agg = store.read_cv_results(tmp_path / "m")
    diverged = agg[agg["param_optimizer__lr"] == 1e30]
    assert diverged["status"].tolist() == ["diverged"] * 2 and diverged["mean_test_accuracy"].isna().all()
    assert diverged["error"].str.startswith("fold 0: training loss became").all()
    ok = agg[agg["param_optimizer__lr"] == 0.01].sort_values("param_module__num_units")
    clean = by_units(fused_sweep[0])  # the same candidates (lr=0.01 is the default) fused without the diverging ones
    pd.testing.assert_series_equal(ok["mean_test_accuracy"].reset_index(drop=True), clean["mean_test_accuracy"][:2])
    history = json.loads((tmp_path / "m" / "1" / store.HISTORY).read_text())  # lr=1e30, 8 units: fold 0 diverged
    assert [h["fold"] for h in history] == [0] and history[0]["epochs"][-1]["train_loss"] is None


def test_a_fused_sweep_builds_no_torch_optimizer(tmp_path):
    """Nothing in a fused sweep steps a torch.optim optimizer (the fused engine updates its stacks itself), so none is
    built, in the preflight's check, the scoring or the refit: the first one's add_param_group imports torch._dynamo
    (about 1 s)."""
    import subprocess
    import sys

    from conftest import ROOT

    argv = ["module.num_units=8,16", *TINY, "engine=fused", f"hydra.sweep.dir={tmp_path / 's'}", "-m"]
    code = (f"import runpy, sys; sys.argv = ['src.sweep', *{argv!r}]; runpy.run_module('src.sweep', run_name='__main__'); "
            "print('torch._dynamo' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s" / "best_model.pt").exists() and proc.stdout.rstrip("\n").rsplit("\n", 1)[-1] == "False"


def test_single_run_with_the_fused_engine(tmp_path):
    proc = run_here(*TINY, "module.num_units=8", "engine=fused", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert "trained by the fused engine" in proc.stdout + proc.stderr
    assert store.read_cv_results(tmp_path)["status"].tolist() == ["ok"]


@pytest.mark.slow
def test_default_sweep_through_both_engines_agrees(tmp_path):
    """The main command's sweep (5,000 digits, 25 epochs, 4 widths x 3 folds): every mean score within 0.002."""
    args = ["module.num_units=32,64,128,256", "train.verbose=quiet"]
    for name in ("fused", "gridsearch"):
        proc = run_here(*args, f"engine={name}", f"hydra.sweep.dir={tmp_path / name}", "-m")
        assert proc.returncode == 0, proc.stderr
    fused, reference = by_units(tmp_path / "fused"), by_units(tmp_path / "gridsearch")
    np.testing.assert_allclose(fused["mean_test_accuracy"], reference["mean_test_accuracy"], atol=0.002)
    assert (fused["mean_test_accuracy"] > 0.85).all()


def peak_rss_mb(*args: str) -> float:
    """The peak resident memory (MB) of a sweep command, from the kernel's accounting of its finished process."""
    import resource
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import resource, runpy, sys; sys.argv = ['src.sweep', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('src.sweep', run_name='__main__')\n"
            "finally:\n    print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
    return int(proc.stderr.rsplit("PEAK_KB", 1)[1].split()[0]) / 1024


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_candidates(tmp_path):
    """16 and 64 candidates of one width (1024: 48 and 192 fits of 1.3 M weights, more than one CPU stack holds):
    each job is recorded and its fits freed as soon as its stack is trained, so the peaks agree."""
    common = ["module.init=default,randn", "module.num_units=1024", "dataset.limit=300", "train.max_epochs=1", "engine=fused",
              "cv.refit=false", "train.verbose=quiet"]
    peaks = {}
    for n in (16, 64):
        lrs = ",".join(f"{0.001 * (k + 1):g}" for k in range(n // 2))
        peaks[n] = peak_rss_mb(f"optimizer.lr={lrs}", *common, f"hydra.sweep.dir={tmp_path / str(n)}", "-m")
        assert len(store.read_cv_results(tmp_path / str(n))) == n
    assert peaks[64] < 1.25 * peaks[16], peaks


def test_a_job_the_fused_engine_cannot_train_goes_to_gridsearch_with_the_reason(compose_cfg, monkeypatch, caplog):
    """What NeuralNet builds but the hand-written step does not reproduce (an activation without a derivative in
    src.layers.ACTIVATIONS) fuses through src.vmapped (tests/test_vmapped.py); a module keyword NeuralNet does not take
    is sent to GridSearchCV, saying why."""
    settings = config.settings_of(compose_cfg("engine=fused"))
    assert engine.choose(settings) == "fused"
    monkeypatch.setitem(layers.ACTIVATIONS, "silu", layers.Activation(torch.nn.SiLU))  # NeuralNet can build it
    silu = {**settings, "module": {**settings["module"], "activation": "silu"}}
    dropout = {**settings, "module": {**settings["module"], "dropout": 0.5}}  # a keyword NeuralNet does not take
    assert engine.choose(silu) == "fused" and not engine.by_hand(silu)
    with caplog.at_level(logging.INFO, logger=engine.log.name):
        assert engine.choose(dropout, say_why=True) == "gridsearch"
    assert ("engine=fused: the fused engine cannot train src.model.NeuralNet: building it failed (TypeError: "
            "NeuralNet.__init__() got an unexpected keyword argument 'dropout')") in caplog.text
    deeper = {**settings, "module": {**settings["module"], "hidden_sizes": [64, 32, 16]}}
    assert engine.choose(deeper) == "fused" and engine.by_hand(deeper)  # any depth, by the hand-written step


@pytest.mark.parametrize("module", ["module=cnn", "module=custom"])
def test_a_module_other_than_the_mlp_fuses_through_torch_func(compose_cfg, caplog, module):
    """module=cnn and your own (here torch.nn.Linear, which takes no generator) are trained by the fused engine's
    torch.func path (src.vmapped), under engine=fused without a line about GridSearchCV."""
    own = ["module._target_=torch.nn.Linear", "+module.in_features=784", "+module.out_features=10"] if module == "module=custom" else []
    settings = config.settings_of(compose_cfg(module, *own, "engine=fused"))
    with caplog.at_level(logging.INFO, logger=engine.log.name):
        assert engine.choose(settings, say_why=True) == "fused" and not engine.by_hand(settings)
    assert caplog.messages == []


# slow: the CNN's fused weights are checked against the GridSearchCV path's, in process, in tests/test_vmapped.py
@pytest.mark.slow
def test_a_cnn_sweep_fuses_and_scores_as_the_gridsearch_sweep(tmp_path):
    """module=cnn over three learning rates from the command line: the fused launcher trains the 9 fits as one program
    (src.vmapped), and every split's score agrees with the GridSearchCV path's sweep within 0.002."""
    common = ["module=cnn", "module.channels=[4,8]", "optimizer.lr=0.01,0.03,0.1", *TINY]
    fused = run_here(*common, "engine=fused", f"hydra.sweep.dir={tmp_path / 'fused'}", "-m")
    assert fused.returncode == 0, fused.stderr
    assert f"{FUSED} 0, 1, 2 (9 fits) trained at once" in fused.stderr + fused.stdout
    reference = run_here(*common, "engine=gridsearch", f"hydra.sweep.dir={tmp_path / 'grid'}", "-m")
    assert reference.returncode == 0, reference.stderr
    mine, theirs = (store.read_cv_results(tmp_path / d).sort_values("param_optimizer__lr").reset_index(drop=True) for d in ("fused", "grid"))
    splits = [c for c in theirs.columns if c.startswith("split") and c.endswith("_test_accuracy")]
    assert len(splits) == 3 and (mine[splits] - theirs[splits]).abs().to_numpy().max() <= 0.002


def test_a_depth_sweep_through_both_engines_agrees_and_counts_its_parameters(tmp_path):
    """module.hidden_sizes of 1, 2 and 3 hidden layers: the fused engine trains the three jobs as one group, to the
    GridSearchCV path's scores (within 0.002 per candidate), and each job.json counts what torch counts on its net."""
    depth = "module.hidden_sizes=[16],[16,8],[16,8,8]"
    procs = {name: run_here(depth, *TINY, f"engine={name}", "cv.refit=false", f"hydra.sweep.dir={tmp_path / name}", "-m")
             for name in ("fused", "gridsearch")}
    assert all(p.returncode == 0 for p in procs.values()), procs["fused"].stderr + procs["gridsearch"].stderr
    assert f"{FUSED} 0, 1, 2 (9 fits) trained at once" in procs["fused"].stdout + procs["fused"].stderr
    fused, reference = (store.read_cv_results(tmp_path / name) for name in ("fused", "gridsearch"))
    assert fused["params"].tolist() == reference["params"].tolist() == [{"module__hidden_sizes": h} for h in ([16], [16, 8], [16, 8, 8])]
    np.testing.assert_allclose(fused["mean_test_accuracy"], reference["mean_test_accuracy"], atol=0.002)
    for job, hidden in enumerate(([16], [16, 8], [16, 8, 8])):
        record = json.loads((tmp_path / "fused" / str(job) / store.JOB).read_text())
        net = model.NeuralNet(hidden_sizes=hidden)
        assert record["n_parameters"] == sum(p.numel() for p in net.parameters() if p.requires_grad)
        assert "num_units" not in record["config"]["module"]  # only what built the net
    table = procs["fused"].stdout
    assert "architecture" in table and "784-16-8-8-10" in table and "n_parameters" in table and "[16, 8, 8]" not in table


# slow: the same net weight for weight is checked fast in tests/test_model.py
@pytest.mark.slow
def test_hidden_sizes_n_and_half_gives_num_units_ns_numbers(tiny_sweep, tmp_path):
    """hidden_sizes=[N, N//2] is num_units=N: the same scores and histories; the files differ only in the key that says so,
    and the num_units sweep's job.json has no hidden_sizes (the main command writes what it wrote before)."""
    proc = run_here("module.hidden_sizes=[8,4],[16,8],[32,16]", *TINY, "engine=gridsearch", f"hydra.sweep.dir={tmp_path}", "-m")
    assert proc.returncode == 0, proc.stderr
    ours, theirs = store.read_cv_results(tmp_path), store.read_cv_results(tiny_sweep)
    scores = [c for c in theirs.columns if c.startswith(("split", "mean_test", "std_test", "mean_train", "rank_test"))]
    pd.testing.assert_frame_equal(ours[scores], theirs[scores])
    for job in ("0", "1", "2"):
        mine, reference = (json.loads((d / job / store.HISTORY).read_text()) for d in (tmp_path, tiny_sweep))
        assert [[e["train_loss"] for e in h["epochs"]] for h in mine] == [[e["train_loss"] for e in h["epochs"]] for h in reference]
        a, b = (json.loads((d / job / store.JOB).read_text()) for d in (tmp_path, tiny_sweep))
        assert a["n_parameters"] == b["n_parameters"] and "hidden_sizes" not in b["config"]["module"]
        assert {k: v for k, v in a["config"]["module"].items() if k != "hidden_sizes"} == \
               {k: v for k, v in b["config"]["module"].items() if k != "num_units"}
