"""What the launching process does at the end of a multirun (src/callbacks.py): rebuild, print, write the best config."""
import shutil

import pytest
from omegaconf import OmegaConf

from src import callbacks, launchers, refit, store

BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def end_of(sweep_dir, launcher_target=BASIC, refit_best=False):
    """The config a multirun's callbacks get, for a sweep in sweep_dir."""
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}, "launcher": {"_target_": launcher_target}},
                             "cv": {"refit": refit_best}, "engine": "gridsearch"})


def test_the_aggregate_is_rebuilt_unless_the_fused_launcher_did(tiny_sweep, tmp_path):
    sweep = tmp_path / "s"
    shutil.copytree(tiny_sweep, sweep)
    for name in ("cv_results.json", "cv_results.csv", "cv_results.pt"):
        (sweep / name).unlink()
    callbacks.RebuildAggregate().on_multirun_end(end_of(sweep, launchers.FUSED))
    assert not (sweep / "cv_results.json").exists()  # the fused launcher rebuilt after its last group: nothing to do
    callbacks.RebuildAggregate().on_multirun_end(end_of(sweep))
    assert store.read_cv_results(sweep).equals(store.read_cv_results(tiny_sweep))


def test_the_ranked_table_and_the_best_config(tiny_sweep, tmp_path, capsys):
    sweep = tmp_path / "s"
    shutil.copytree(tiny_sweep, sweep, ignore=shutil.ignore_patterns("best_config.yaml", "optimization_results.yaml"))
    callbacks.PrintRankedTable().on_multirun_end(end_of(sweep))
    out = capsys.readouterr().out
    agg = store.read_cv_results(sweep)
    best_units = int(agg.loc[agg["rank_test_accuracy"] == 1, "param_module__num_units"].iloc[0])
    table = out[out.index("3 candidates, ranked"):].splitlines()
    assert table[2].split()[0] == f"784-{best_units}-{best_units // 2}-10"  # best first, by its architecture
    assert f"best config: {sweep / refit.BEST_CONFIG}" in out and "refit:" not in out
    assert (sweep / refit.BEST_CONFIG).is_file() and (sweep / refit.OPTIMIZATION_RESULTS).is_file()


def test_failed_jobs_end_the_command_with_status_1(broken_sweep, tmp_path, capsys):
    sweep = tmp_path / "s"
    shutil.copytree(broken_sweep[0], sweep)
    with pytest.raises(SystemExit) as exited:
        callbacks.PrintRankedTable().on_multirun_end(end_of(sweep))
    assert exited.value.code == 1 and "2 of 4 jobs failed" in capsys.readouterr().err


def test_nothing_is_printed_for_a_sweep_without_results(tmp_path, capsys):
    callbacks.PrintRankedTable().on_multirun_end(end_of(tmp_path))
    assert capsys.readouterr().out == ""
