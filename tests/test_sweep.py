"""The main job end to end, through the command line: in this process (conftest.run_here), and in a process of its own
where only that shows it (the printed table of a single run, what --help imports)."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from conftest import ROOT, TINY, run_cli, run_here
from src import data, store
from src.job import prepare
from src.seeding import split_test_fold

SIZES = [8, 16, 32]


@pytest.fixture(scope="module")
def reference(compose_cfg_module):
    """scikit-learn's own GridSearchCV over the whole grid, on the same data and estimator."""
    cfg = compose_cfg_module(*TINY)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    j = prepare(OmegaConf.to_container(cfg, resolve=True), ["module.num_units=8", *TINY], choices)
    X, y, search = j.X, j.y, j.search
    search.param_grid = {"module__num_units": SIZES}
    # each fit gets the test_fold of its rows, which names its fold and so its (seed, fold) generator
    return search.fit(X, y, test_fold=split_test_fold(search.cv, X, y)).cv_results_


@pytest.fixture(scope="module")
def compose_cfg_module():
    from hydra import compose, initialize_config_dir
    from conftest import ROOT

    def _compose(*overrides):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    return _compose


def test_aggregate_equals_gridsearchcv_over_the_whole_grid(tiny_sweep, reference):
    agg = store.read_cv_results(tiny_sweep)
    assert set(agg.columns) == set(reference) | {"status", "error"}  # dataset.limit=150 is fixed: no param column
    assert agg["status"].tolist() == ["ok"] * len(SIZES)
    order = np.argsort(reference["param_module__num_units"].data.astype(int))
    agg = agg.sort_values("param_module__num_units").reset_index(drop=True)
    assert agg["param_module__num_units"].tolist() == SIZES
    for key in reference:
        if key.startswith(("split", "mean_test", "std_test", "mean_train", "std_train")):
            np.testing.assert_allclose(agg[key], reference[key][order], err_msg=key)
    assert agg["rank_test_accuracy"].tolist() == reference["rank_test_accuracy"][order].tolist()
    assert agg["params"].tolist() == [reference["params"][i] for i in order]


def test_aggregate_files_agree(tiny_sweep):
    as_json = json.loads((tiny_sweep / "cv_results.json").read_text())
    as_pt = torch.load(tiny_sweep / "cv_results.pt", weights_only=True)
    csv = (tiny_sweep / "cv_results.csv").read_text().splitlines()
    assert as_json.keys() == as_pt.keys() and csv[0].split(",") == list(as_json)
    assert len(csv) == 1 + len(SIZES) and len(as_json["params"]) == len(SIZES)
    np.testing.assert_allclose(as_pt["mean_test_accuracy"], as_json["mean_test_accuracy"])
    assert as_pt["rank_test_accuracy"] == as_json["rank_test_accuracy"] and as_pt["params"] == as_json["params"]
    assert not list(tiny_sweep.rglob("*.tmp")) and not list(tiny_sweep.rglob("history.jsonl"))


def test_job_folders_record_rows_history_and_environment(tiny_sweep):
    for job, size in enumerate(SIZES):
        job_dir = tiny_sweep / str(job)
        assert store.read_cv_results(job_dir)["param_module__num_units"].tolist() == [size]
        history = json.loads((job_dir / "history.json").read_text())
        assert [h["fold"] for h in history] == [0, 1, 2]
        assert [e["epoch"] for e in history[0]["epochs"]] == [1, 2]
        assert all(np.isfinite(e["train_loss"]) and e["dur"] > 0 for h in history for e in h["epochs"])
        env = json.loads((job_dir / "environment.json").read_text())
        assert env["device"] == "cpu" and env["seed"] == 0 and env["packages"]["skorch"]
        assert env["git"]["commit"] is None or len(env["git"]["commit"]) == 40


def test_prints_ranked_table_and_report(tiny_sweep):
    out = (tiny_sweep / "stdout.txt").read_text()
    table = out[out.index("3 candidates, ranked"):].splitlines()
    assert table[1].split()[0] == "architecture" and "mean_test_accuracy" in table[1] and "n_parameters" in table[1]
    column = table[1].split().index("rank_test_accuracy")
    ranks = [int(line.split()[column]) for line in table[2:5]]
    assert ranks == sorted(ranks)
    assert f"report: {tiny_sweep / 'hiplot.html'}" in out
    page = (tiny_sweep / "hiplot.html").read_text()
    assert 'href="hiplot_curves.html"' in page and (tiny_sweep / "hiplot_curves.html").is_file()


# slow: a single run's files and printed table from a real process (about 12 s); the next test but two checks them in process
@pytest.mark.slow
def test_single_run_writes_the_same_files(tmp_path):
    proc = run_cli(*TINY, "module.num_units=8", f"hydra.run.dir={tmp_path}")  # the printed table, from a real process
    assert proc.returncode == 0, proc.stderr
    for name in ("cv_results.csv", "cv_results.json", "cv_results.pt", "history.json", "environment.json", "hiplot.html"):
        assert (tmp_path / name).is_file(), name
    df = store.read_cv_results(tmp_path)
    assert len(df) == 1 and df["rank_test_accuracy"].tolist() == [1]
    assert "mean_test_accuracy" in proc.stdout


def test_swept_keys_are_the_keys_a_sweep_varies():
    from src.job import swept_keys

    multirun = {"hydra": {"overrides": {"task": ["module.num_units=8,16", "dataset.limit=150", "optimizer=sgd,adam",
                                                  "seed=range(0,2)", "+optimizer.momentum=0.9", "train.max_epochs=choice(3)"]},
                          "sweeper": {"params": {"optimizer.lr": "0.1,0.01"}}}}
    assert swept_keys(multirun) == {"module.num_units", "optimizer", "seed", "optimizer.lr"}


def test_every_job_logs_the_sweeps_progress(tiny_sweep):
    from src.job import sweep_size

    multirun = {"hydra": {"overrides": {"task": ["module.num_units=8,16", "seed=range(0,3)", "dataset.limit=150"]},
                          "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": {"optimizer.lr": "0.1,0.01"}}}}
    assert sweep_size(multirun) == 12
    out = (tiny_sweep / "stdout.txt").read_text()
    assert "[1 of 3 jobs done, about 0:0" in out and "left]" in out and "[3 of 3 jobs done]" in out


def test_threads_are_applied_and_recorded(tmp_path):
    """A single run, in process: its files, its printed table, and the threads it was given."""
    proc = run_here(*TINY, "module.num_units=8", "train.threads=1", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "environment.json").read_text())["torch_threads"] == 1
    for name in ("cv_results.csv", "cv_results.json", "cv_results.pt", "history.json", "hiplot.html"):
        assert (tmp_path / name).is_file(), name
    assert store.read_cv_results(tmp_path)["rank_test_accuracy"].tolist() == [1] and "mean_test_accuracy" in proc.stdout


def test_named_sweeps_are_listed_and_run_from_any_folder(tmp_path, monkeypatch):
    assert "sweeps: depth, hidden_sizes, hidden_sizes_verdict, seed_reproduction" in run_here("--help").stdout
    monkeypatch.chdir(tmp_path)
    proc = run_here("+sweeps=hidden_sizes", *TINY, "cv.refit=false", f"hydra.sweep.dir={tmp_path / 's'}", "-m")
    assert proc.returncode == 0, proc.stderr
    assert sorted(store.read_cv_results(tmp_path / "s")["param_module__num_units"]) == [32, 64, 128, 256]


def test_full_error_shows_the_trace(tmp_path):
    proc = run_here(*TINY, "module.num_units=1", f"hydra.run.dir={tmp_path}", env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.slow
def test_defaults_reach_the_accuracy_the_readme_promises(tmp_path):
    """num_units=256 at full defaults (5,000 digits, 25 epochs, 3 folds) scores at least 0.88."""
    proc = run_here("module.num_units=256", "train.verbose=quiet", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert store.read_cv_results(tmp_path)["mean_test_accuracy"][0] >= 0.88



def test_help_is_hydras_own_help_without_loading_the_project():
    """`--help` (printed without Hydra's slow listing of its own groups, and without importing torch) is the text
    Hydra's own help prints."""
    import subprocess
    import sys

    from conftest import ROOT

    hydras = run_here("--help", "-m")  # not the fast path: Hydra's own help (-m changes nothing in it)
    code = "import runpy, sys; sys.argv = ['src.sweep', '--help']; runpy.run_module('src.sweep', run_name='__main__'); print(sorted(m for m in sys.modules if m in ('torch', 'sklearn', 'skorch', 'pandas')))"
    ours = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert hydras.returncode == 0 and ours.returncode == 0, ours.stderr
    text, loaded = ours.stdout.rstrip("\n").rsplit("\n", 1)
    assert text + "\n" == hydras.stdout and loaded == "[]"


@pytest.mark.parametrize("folder", ["/tmp/sweep\\", "/tmp/it's\\'here", "/tmp/a,b c=d"])
def test_the_pinned_output_folder_reads_back_as_itself(monkeypatch, folder):
    """Issue 18, minor: a folder ending in a backslash was quoted into a Hydra lexer error (and left an empty folder)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from src import config, sweep

    monkeypatch.setattr(sys, "argv", ["sweep", f"hydra.sweep.dir={folder}", "-m"])
    sweep.pin_output_dir(config.Checked(out_dir=Path(folder), multirun=True))
    assert OverridesParser.create().parse_override(sys.argv[1]).value() == folder and sys.argv[2:] == ["-m"]


def test_each_log_line_carries_its_own_loggers_name(fused_sweep):
    """The launcher's and the fused engine's lines (and a library's, such as matplotlib's) were tagged [HYDRA]."""
    _, proc = fused_sweep
    logged = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("[20")]
    assert logged and not any("][HYDRA]" in line for line in logged)
    assert any("][hydra_plugins.fused_launcher._core][INFO] - Launching 3 jobs" in line for line in logged)
    assert any("][src.fused][INFO] - fused: " in line for line in logged)
    assert any("][hydra_plugins.fused_launcher._core][INFO] - fused engine: jobs 0, 1, 2" in line for line in logged)


QUICK = "dataset.limit=1000 train.max_epochs=10 train.batch_size=16"  # the README's and --help's quick settings


def quick_scores(compose_cfg, *overrides: str) -> dict[int, float]:
    """Mean 3-fold accuracy per width of the quick settings, in-process through the job's own search."""
    from src import config

    settings = config.settings_of(compose_cfg(*overrides, *QUICK.split(), "train.verbose=quiet"))
    j = prepare(settings, [], {}, swept=set())
    X, y, search = j.X, j.y, j.search
    search.set_params(param_grid={"module__num_units": [32, 64, 128, 256]}, refit=False)
    search.fit(X, y, test_fold=split_test_fold(search.cv, X, y))
    return dict(zip(search.cv_results_["param_module__num_units"], search.cv_results_["mean_test_accuracy"]))


@pytest.mark.slow
def test_the_quick_examples_show_the_point(compose_cfg):
    """--help's quick single run learns (it reached 0.39 with 5 epochs of 64-row batches), and the quick comparison
    tells what the full one tells: this project's defaults beat the tutorial's choices at every width."""
    header = OmegaConf.load(ROOT / "conf" / "config.yaml").hydra.help.header
    assert f"python -m src.sweep {QUICK}" in header and QUICK in (ROOT / "README.md").read_text()
    ours, tutorials = quick_scores(compose_cfg, "+sweeps=hidden_sizes"), quick_scores(compose_cfg, "+sweeps=seed_reproduction")
    assert ours[128] > 0.75  # the single run's width
    assert all(ours[u] > tutorials[u] + 0.1 for u in ours), (ours, tutorials)


# ---- Other modules than the MLP (issue 16): module=cnn beside it, and your own from a package outside src/ ----------

OWN_NET = '''"""A package of the user's, outside src/: any nn.Module from (B, n_features) to (B, n_classes) logits."""
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, hidden: int = 8, fail: bool = False):
        super().__init__()
        self.fail = fail
        self.layers = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, X):
        if self.fail and self.training:  # as a module that breaks in training only: the preflight's batch runs it in eval mode
            raise RuntimeError("TinyNet fails on purpose")
        return self.layers(X)
'''


@pytest.mark.slow
def test_mlp_and_cnn_are_compared_in_one_sweep_and_one_report(tmp_path):
    sweep_dir = tmp_path / "s"
    proc = run_here("module=mlp,cnn", "module.activation=relu,tanh", *TINY, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 0, proc.stderr
    agg = store.read_cv_results(sweep_dir)  # the param columns of both modules line up: each names the module and its activation
    assert sorted(zip(agg["param_module"], agg["param_module__activation"])) == [("cnn", "relu"), ("cnn", "tanh"), ("mlp", "relu"), ("mlp", "tanh")]
    assert (agg["status"] == "ok").all() and agg["mean_test_accuracy"].notna().all() and agg["rank_test_accuracy"].min() == 1
    assert [(p["module"], p["module__activation"]) for p in agg["params"]] == list(zip(agg["param_module"], agg["param_module__activation"]))
    engines = {store.job_record(d)["config"]["module"].get("_target_"): json.loads((d / "environment.json").read_text())["engine"]
               for d in store.job_folders(sweep_dir)}
    assert engines == {None: "fused", "src.cnn.CNN": "fused"}  # the MLP by the hand-written step, the CNN through torch.func
    log = (sweep_dir / "2" / "sweep.log").read_text()
    assert "cannot train" not in log
    table = proc.stdout[proc.stdout.index("4 candidates, ranked"):].splitlines()
    assert table[1].split()[:2] == ["architecture", "module__activation"]  # the architecture stands for the module column
    assert sorted(line.strip().split("  ")[0] for line in table[2:6]) == ["784-128-64-10"] * 2 + ["cnn 1-8-16-10 k3"] * 2
    assert len(pd.read_csv(sweep_dir / "comparison.csv")) == 4 and (sweep_dir / "summary.png").is_file()
    assert (sweep_dir / "hiplot.html").is_file()
    assert json.loads((sweep_dir / "test_scores.json").read_text())["refit"]["status"] == "ok"


def test_your_own_module_from_a_package_outside_src_trains_like_the_built_in_ones(tmp_path, monkeypatch):
    """module=custom module._target_=my_nets.TinyNet +module.hidden=...: the same files, report, refit and predictions; a
    module that raises inside a fit fails its own job only, with its traceback in error.log."""
    from src import predict

    (tmp_path / "my_nets").mkdir()
    (tmp_path / "my_nets" / "__init__.py").write_text(OWN_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    sweep_dir = tmp_path / "s"
    proc = run_here("module=custom", "module._target_=my_nets.TinyNet", "+module.hidden=12", "+module.fail=false,true", *TINY,
                    f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 1 and "1 of 2 jobs failed: job 1" in proc.stderr, proc.stderr  # as any failed job ends a sweep
    agg = store.read_cv_results(sweep_dir).sort_values("param_module__fail")
    assert agg["param_module__fail"].tolist() == [False, True] and agg["status"].tolist() == ["ok", "failed"]
    for job_dir in store.job_folders(sweep_dir):
        record = store.job_record(job_dir)
        assert record["config"]["module"]["_target_"] == "my_nets.TinyNet"
        assert (job_dir / "history.json").is_file() and (job_dir / "environment.json").is_file()
        failed = record["config"]["module"]["fail"]
        assert (job_dir / "error.log").is_file() == failed
        if failed:
            assert "RuntimeError: TinyNet fails on purpose" in record["error"] and "Traceback" in (job_dir / "error.log").read_text()
    for name in ("hiplot.html", "summary.png", "comparison.csv", "best_config.yaml", "best_model.pt", "test_scores.json"):
        assert (sweep_dir / name).is_file(), name
    saved = json.loads((sweep_dir / "test_scores.json").read_text())
    assert saved["module"]["_target_"] == "my_nets.TinyNet" and saved["params"]["module__fail"] is False
    model = predict.load_best(sweep_dir)  # rebuilt from test_scores.json: the class, its keywords, and as many classes as it has logits
    config = store.job_record(sweep_dir / "0")["config"]
    X_test, y_test = data.load_test({**config, "dataset": {**config["dataset"], "scaling": "none"}})  # raw pixels, as a user has them
    assert model.score(X_test, y_test) == pytest.approx(saved["test"]["accuracy"])
