import html
import json
import re

import pandas as pd
import pytest

from conftest import TINY, run_cli
from src import results


def embedded_rows(page: str) -> list[dict]:
    """The datapoints HiPlot embedded in a page (its options object, a JSON string inside the script)."""
    options = json.loads(json.loads(re.search(r"eval\('\(' \+ (\".*?\") \+ '\)'\)", page).group(1)))
    return [dp["values"] for dp in options["experiment"]["datapoints"]]


@pytest.fixture(scope="module")
def second_sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("second") / "s"
    proc = run_cli("module.num_units=64", *TINY, "seed=1", f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 0, proc.stderr
    return sweep_dir


def test_sweep_report_has_a_row_per_candidate_and_curves(tiny_sweep):
    rows = embedded_rows((tiny_sweep / "hiplot.html").read_text())
    agg = results.read_cv_results(tiny_sweep)
    assert sorted(r["param_module__num_units"] for r in rows) == sorted(agg["param_module__num_units"])
    assert {"split0_test_accuracy", "mean_test_accuracy", "std_test_accuracy", "rank_test_accuracy", "mean_fit_time"} <= set(rows[0])
    curves = embedded_rows((tiny_sweep / "hiplot_curves.html").read_text())
    assert len(curves) == 3 * 3 * 2  # candidates x folds x epochs
    assert {"epoch", "train_loss", "fold", "job", "param_module__num_units"} <= set(curves[0])


def test_rerender(tiny_sweep, tmp_path):
    out = tmp_path / "again.html"
    proc = run_cli(str(tiny_sweep), "-o", str(out), module="src.report")
    assert proc.returncode == 0, proc.stderr
    assert len(embedded_rows(out.read_text())) == 3 and (tmp_path / "again_curves.html").is_file()
    assert 'href="again_curves.html"' in out.read_text()


def test_merge_two_sweeps(tiny_sweep, second_sweep, tmp_path):
    out = tmp_path / "compare.html"
    proc = run_cli(str(tiny_sweep), str(second_sweep), "-o", str(out), module="src.report")
    assert proc.returncode == 0, proc.stderr
    rows = embedded_rows(out.read_text())
    assert sorted(r["sweep"] for r in rows) == sorted([str(tiny_sweep)] * 3 + [str(second_sweep)])
    merged = pd.concat([results.read_cv_results(tiny_sweep), results.read_cv_results(second_sweep)])
    by_score = sorted((r["mean_test_accuracy"], r["rank_test_accuracy"]) for r in rows)
    assert [rank for _, rank in by_score] == sorted(results.rank(merged)["rank_test_accuracy"], reverse=True)
    assert {r["sweep"] for r in embedded_rows((tmp_path / "compare_curves.html").read_text())} == {str(tiny_sweep), str(second_sweep)}


def test_report_of_a_folder_without_results_is_one_line(tmp_path):
    proc = run_cli(str(tmp_path), module="src.report")
    assert proc.returncode == 2 and "no cv_results.json there" in proc.stderr and "Traceback" not in proc.stderr


EVIL = '</script><img src=x onerror="document.title=1">'


@pytest.fixture
def hostile_results(tiny_sweep, tmp_path):
    """A results folder whose param values and error message carry markup."""
    df = results.read_cv_results(tiny_sweep).assign(status="failed", error=EVIL, param_dataset__limit=EVIL)
    results.write_cv_results(df, tmp_path)
    return tmp_path


def test_strings_from_configs_and_errors_are_escaped(hostile_results):
    from src import report

    page = report.write_report([hostile_results], hostile_results / "hiplot.html").read_text()
    assert "<img src=x" not in page and "</script><img" not in page
    rows = embedded_rows(page)
    assert {r["error"] for r in rows} == {html.escape(EVIL)} and {r["status"] for r in rows} == {"failed"}
