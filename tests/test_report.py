import html
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from conftest import run_here
from src import compare, figures, model, report, results, store


def embedded_options(page: str) -> dict:
    """The options object HiPlot embedded in a page (a JSON string inside its script)."""
    return json.loads(json.loads(re.search(r"eval\('\(' \+ (\".*?\") \+ '\)'\)", page).group(1)))


def embedded_rows(page: str) -> list[dict]:
    """The datapoints' values HiPlot embedded in a page."""
    return [dp["values"] for dp in embedded_options(page)["experiment"]["datapoints"]]


def lines(page: str) -> list[list[dict]]:
    """The curves of a learning-curves page: datapoints chained by from_uid, first epoch first."""
    points = embedded_options(page)["experiment"]["datapoints"]
    children = {p["from_uid"]: p for p in points if p["from_uid"] is not None}
    found = []
    for p in (p for p in points if p["from_uid"] is None):
        line = [p]
        while line[-1]["uid"] in children:
            line.append(children[line[-1]["uid"]])
        found.append([q["values"] for q in line])
    return found


def edited_copy(tiny_sweep, target, **columns):
    """A copy of the tiny sweep (jobs and histories included) whose aggregate has `columns` replaced."""
    shutil.copytree(tiny_sweep, target, ignore=shutil.ignore_patterns("*.html", "summary.*"))
    df = store.read_cv_results(target).assign(**columns)
    store.write_cv_results(results.rank(df), target)
    return target


def test_sweep_report_has_a_row_per_candidate_and_curves(tiny_sweep):
    rows = embedded_rows((tiny_sweep / "hiplot.html").read_text())
    agg = store.read_cv_results(tiny_sweep)
    assert sorted(int(r["param_module__num_units"]) for r in rows)  # a few integers: padded categories == sorted(agg["param_module__num_units"])
    assert {"split0_test_accuracy", "mean_test_accuracy", "std_test_accuracy", "rank_test_accuracy", "mean_fit_time"} <= set(rows[0])
    assert sorted(r["candidate"] for r in rows) == sorted(figures.architecture(model.layer_sizes(n)) for n in agg["param_module__num_units"])
    folds = lines((tiny_sweep / "hiplot_curves_folds.html").read_text())
    assert len(folds) == 3 * 3 and all(len(line) == 2 for line in folds)  # candidates x folds, epochs each
    assert {"epoch", "train_loss", "fold", "candidate", "param_module__num_units"} <= set(folds[0][0])


def test_curves_page_draws_the_mean_over_folds_per_candidate(tiny_sweep):
    page = (tiny_sweep / "hiplot_curves.html").read_text()
    curves = lines(page)
    assert len(curves) == 3 and all([int(p["epoch"]) for p in line] == [1, 2] for line in curves)
    for job in store.job_dirs(tiny_sweep):  # reference: the raw per-fold histories
        folds = json.loads((job / store.HISTORY).read_text())
        expected = np.mean([[e["train_loss"] for e in f["epochs"]] for f in folds], axis=0)
        units = folds[0]["params"]["module__num_units"]
        line = next(line for line in curves if line[0]["param_module__num_units"] == units)
        np.testing.assert_allclose([p["train_loss"] for p in line], expected, rtol=1e-3)  # shown to 4 significant digits
        assert [p["folds"] for p in line] == [3, 3]
    options = embedded_options(page)["experiment"]
    assert options["colorby"] == "candidate" and options["enabled_displays"] == ["XY", "TABLE"]  # no parallel plot of epoch rows
    colors = options["parameters_definition"]["candidate"]["colors"]
    assert sorted(colors) == sorted(line[0]["candidate"] for line in curves) and len(set(colors.values())) == 3
    xy = options["display_data"]["XY"]
    assert (xy["axis_x"], xy["axis_y"]) == ("epoch", "train_loss") and xy["height"] >= 600
    assert [dp["uid"] for dp in options["datapoints"]] == [str(i) for i in range(len(options["datapoints"]))]
    for label in colors:  # the legend names each candidate in its colour
        assert f"background:{colors[label]}\"></span>{label}" in page


def test_the_parameter_count_is_an_axis_and_a_column_of_the_table(tiny_sweep, capsys):
    """Each candidate's n_parameters (its job.json's, which tests/test_engine.py checks against torch's count) is on the
    candidates page, as an axis, and in the printed table beside its architecture."""
    exp = embedded_options((tiny_sweep / "hiplot.html").read_text())["experiment"]
    counts = {dp["values"]["candidate"]: dp["values"]["n_parameters"] for dp in exp["datapoints"]}
    for job in store.read_jobs(tiny_sweep):
        assert counts[figures.architecture(model.module_sizes(job.record["config"]["module"]))] == job.record["n_parameters"]
    assert "n_parameters" not in exp["display_data"]["PARALLEL_PLOT"]["hide"]
    report.print_outcome(tiny_sweep)
    table = capsys.readouterr().out.splitlines()
    header = table[table.index(next(line for line in table if "architecture" in line))]
    assert header.split()[0] == "architecture" and "n_parameters" in header and "num_units" not in header
    assert any(line.split()[:1] == ["784-32-16-10"] and f"{model.parameter_count([784, 32, 16, 10]):,}" in line for line in table)


def module_sweep(folder, modules: dict[str, dict]):
    """A finished sweep over modules (module=mlp,cnn,custom: a param_module column), one job folder each, as
    src.store.record writes them: each job.json's config holds its module's settings."""
    for k, (choice, settings) in enumerate(modules.items()):
        scores = [0.5 + 0.1 * k + 0.01 * j for j in range(3)]
        rows = {"mean_fit_time": [1.0 + k], "param_module": [choice], "params": [{"module": choice}],
                **{f"split{j}_test_accuracy": [s] for j, s in enumerate(scores)}, "mean_test_accuracy": [float(np.mean(scores))],
                "std_test_accuracy": [float(np.std(scores))], "rank_test_accuracy": [1], "status": ["ok"], "error": [None]}
        (folder / str(k)).mkdir(parents=True)
        store.write_json(folder / str(k) / "cv_results.json", rows)
        store.write_json(folder / str(k) / store.JOB, {"status": "ok", "error": None, "overrides": [f"module={choice}"],
                                                       "config": {"module": settings, "cv": {"scoring": ["accuracy"]}},
                                                       "n_parameters": 1000 * (k + 1)})
        store.write_json(folder / str(k) / store.HISTORY, [{"fold": j, "params": {"module": choice},
                                                            "epochs": [{"epoch": 1, "train_loss": 2.0 - k}]} for j in range(3)])
    store.aggregate(folder)
    return folder


def test_a_cnn_and_your_own_module_are_named_by_their_architecture(tmp_path, capsys):
    """module=mlp,cnn,custom: the table's architecture column (in place of `module`), the figure's labels and the
    candidates page name the MLP by its layer sizes, the CNN by its channels, classes and kernel, your own by its class."""
    sweep = module_sweep(tmp_path, {"mlp": {"num_units": 16, "input_dim": 784, "num_classes": 10},
                                    "cnn": {"_target_": "src.cnn.CNN", "channels": [4, 8, 16], "kernel_size": 5, "num_classes": 10},
                                    "custom": {"_target_": "my_nets.TinyNet", "hidden": 32}})
    names = ["784-16-8-10", "cnn 1-4-8-16-10 k5", "TinyNet"]
    report.write_report([sweep], sweep / "hiplot.html")
    rows = embedded_rows((sweep / "hiplot.html").read_text())
    assert sorted(r["candidate"] for r in rows) == sorted(names)
    assert {r["candidate"]: r["param_module"] for r in rows} == {n: n for n in names}  # the module axis names them too
    for curves in ("hiplot_curves.html", "hiplot_curves_folds.html"):  # and so do the curves pages' columns
        assert {p["candidate"]: p["param_module"] for line in lines((sweep / curves).read_text()) for p in line} == {n: n for n in names}
    svg = (sweep / "summary.svg").read_text()
    assert all(name in svg for name in names) and "module=cnn" not in svg
    report.print_outcome(sweep)
    table = capsys.readouterr().out.splitlines()
    header = next(line for line in table if "architecture" in line)
    assert header.split()[0] == "architecture" and "module" not in header.split()
    ranked = table[table.index(header) + 1:][:3]
    assert [line.strip()[:len(name)] for line, name in zip(ranked, names[::-1])] == names[::-1]  # best (custom) first


def test_your_own_modules_keywords_keep_their_columns_beside_its_class_name():
    """A label names only what it encodes: your own module's `channels` keyword is not the CNN's, so a sweep of it keeps
    its column and its values in the labels; the CNN's are named by its architecture."""
    own = pd.DataFrame({"param_module__channels": [[4], [8]], "mean_test_accuracy": [0.5, 0.6], "std_test_accuracy": [0.0, 0.0],
                        "rank_test_accuracy": [2, 1], "mean_fit_time": [1.0, 1.0]})
    assert figures.candidate_labels(own, ["TinyNet", "TinyNet"]) == ["channels=[4]", "channels=[8]"]
    table = results.ranked_table(own.assign(architecture="TinyNet"))
    assert table.splitlines()[0].split()[:2] == ["architecture", "module__channels"]
    cnns = [figures.module_architecture({"_target_": "src.cnn.CNN", "channels": c, "kernel_size": 3, "num_classes": 10}) for c in ([4], [8])]
    assert cnns == ["cnn 1-4-10 k3", "cnn 1-8-10 k3"]
    assert figures.candidate_labels(own, cnns) == cnns
    assert "module__channels" not in results.ranked_table(own.assign(architecture=cnns)).splitlines()[0]
    assert figures.module_architecture({"_target_": "src.cnn.CNN"}) == "cnn 1-8-16-10 k3"  # the CNN's defaults
    assert figures.module_architecture({}) is None

def test_summary_figure_is_saved_and_embedded(tiny_sweep):
    from matplotlib.image import imread

    image = imread(tiny_sweep / "summary.png")
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 1000
    svg = ET.parse(tiny_sweep / "summary.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join("".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text"))
    assert "epoch" in text and "learning curves" in text and "architecture [layer sizes, input to output]" in text
    assert "trainable parameters" in text and "on the Pareto front" in text and "mean fit time per fold (s)" in text  # the cost panel
    agg = store.read_cv_results(tiny_sweep)  # reference: the saved cv_results_, not the figure code
    for units in agg["param_module__num_units"]:
        assert figures.architecture(model.layer_sizes(units)) in text
    best = agg.sort_values("rank_test_accuracy").iloc[0]
    assert f"best: {figures.architecture(model.layer_sizes(best['param_module__num_units']))}" in text
    assert "against it: " in text and "difference to the best" in text  # the verdicts (src.compare), not a margin in σ
    page = (tiny_sweep / "hiplot.html").read_text()
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    import base64
    assert base64.b64decode(embedded) == (tiny_sweep / "summary.png").read_bytes()
    assert 'href="summary.svg"' in page


def test_candidates_page_hiplot_settings(tiny_sweep):
    page = (tiny_sweep / "hiplot.html").read_text()
    exp = embedded_options(page)["experiment"]
    rows = [dp["values"] for dp in exp["datapoints"]]
    splits = [f"split{k}_test_accuracy" for k in range(3)]
    assert set(splits) <= set(exp["display_data"]["PARALLEL_PLOT"]["hide"]) and all(set(splits) <= set(r) for r in rows)
    assert exp["parameters_definition"]["rank_test_accuracy"]["type"] == "categorical"
    assert "rank_test_accuracy" in exp["display_data"]["PARALLEL_PLOT"]["invert"]  # categories sort upwards: flipped, rank 1 is on top
    agg = store.read_cv_results(tiny_sweep)
    best = agg.loc[agg["mean_test_accuracy"].idxmax(), "param_module__num_units"]
    assert next(r for r in rows if int(r["param_module__num_units"]) == best)["rank_test_accuracy"] == "1"
    assert exp["display_data"]["TABLE"]["order_by"] == [["rank_test_accuracy", "asc"]]
    floats = [v for r in rows for v in r.values() if isinstance(v, float)]
    assert floats and all(float(f"{v:.4g}") == v for v in floats)  # 4 significant digits
    assert sorted(r["mean_fit_time"] for r in rows) == sorted(float(f"{v:.4g}") for v in agg["mean_fit_time"])
    assert re.search(r"<title>(.*?)</title>", page).group(1) == html.escape(f"{tiny_sweep} · candidates · mlp-sweep")
    curves = (tiny_sweep / "hiplot_curves.html").read_text()
    folds = (tiny_sweep / "hiplot_curves_folds.html").read_text()
    assert 'href="hiplot_curves.html"' in page and 'href="hiplot_curves_folds.html"' in page
    assert 'href="hiplot.html"' in curves and 'href="hiplot_curves_folds.html"' in curves
    assert 'href="hiplot.html"' in folds and 'href="hiplot_curves.html"' in folds
    assert re.search(r"<title>(.*?)</title>", curves).group(1) == html.escape(f"{tiny_sweep} · learning curves · mlp-sweep")


def test_unscored_candidates_stay_off_the_top_of_score_axes(tiny_sweep, tmp_path):
    agg = store.read_cv_results(tiny_sweep)
    nan = [math.nan] + list(agg["mean_test_accuracy"][1:])
    src = edited_copy(tiny_sweep, tmp_path / "one_diverged", mean_test_accuracy=nan, status=["diverged", "ok", "ok"])
    report.write_report([src], src / "hiplot.html")
    exp = embedded_options((src / "hiplot.html").read_text())["experiment"]
    unscored, scored = exp["datapoints"][0]["values"], exp["datapoints"][1]["values"]
    # HiPlot draws a null at the top of a numeric axis: the value is left out, so the line skips that axis
    assert "mean_test_accuracy" not in unscored and "mean_test_accuracy" in scored
    assert unscored["status"] == "diverged" and unscored["rank_test_accuracy"] == "3"  # ranked last, as GridSearchCV does
    assert exp["parameters_definition"]["status"]["type"] == "categorical"
    assert exp["parameters_definition"]["status"]["colors"]["diverged"] != exp["parameters_definition"]["status"]["colors"]["ok"]


def test_a_report_of_candidates_that_all_diverged_in_their_first_epoch_has_no_curves_pages(tiny_sweep, tmp_path):
    # every fit's one epoch has a NaN loss (stored as null): no curve has a point, and HiPlot refuses an empty page
    src = edited_copy(tiny_sweep, tmp_path / "all_diverged", mean_test_accuracy=math.nan, status="diverged")
    for job in store.job_dirs(src):
        folds = json.loads((job / store.HISTORY).read_text())
        (job / store.HISTORY).write_text(json.dumps([{**f, "epochs": [{**f["epochs"][0], "train_loss": None}]} for f in folds]))
    report.write_report([src], src / "hiplot.html")
    page = (src / "hiplot.html").read_text()
    assert len(embedded_rows(page)) == 3 and "hiplot_curves.html" not in page
    assert not (src / "hiplot_curves.html").exists() and not (src / "hiplot_curves_folds.html").exists()


def test_one_scored_candidate_keeps_its_score_axes(tiny_sweep, tmp_path):
    agg = store.read_cv_results(tiny_sweep)
    score = agg["mean_test_accuracy"][2]
    src = edited_copy(tiny_sweep, tmp_path / "two_diverged", mean_test_accuracy=[math.nan, math.nan, score],
                      status=["diverged", "diverged", "ok"])
    report.write_report([src], src / "hiplot.html")
    exp = embedded_options((src / "hiplot.html").read_text())["experiment"]
    # one finite value would give HiPlot a single-valued axis, which it hides: categorical, inverted, null at the bottom
    assert exp["parameters_definition"]["mean_test_accuracy"]["type"] == "categorical"
    assert "mean_test_accuracy" in exp["display_data"]["PARALLEL_PLOT"]["invert"]
    assert [dp["values"]["mean_test_accuracy"] for dp in exp["datapoints"]] == [None, None, float(f"{score:.4g}")]


def test_parameters_spanning_decades_get_log_axes(tiny_sweep, tmp_path):
    src = edited_copy(tiny_sweep, tmp_path / "decades", param_module__num_units=[32, 64, 256], param_optimizer__lr=[1e-3, 1e-2, 1e-1])
    report.write_report([src], src / "hiplot.html")
    exp = embedded_options((src / "hiplot.html").read_text())["experiment"]
    # a few integers: a tick per value, written as integers (HiPlot writes a log axis's ticks 4e+1 ... 2e+2)
    assert exp["parameters_definition"]["param_module__num_units"]["type"] == "categorical"
    assert [dp["values"]["param_module__num_units"] for dp in exp["datapoints"]] == [" 32", " 64", "256"]  # padded: sorts as numbers
    assert exp["parameters_definition"]["param_optimizer__lr"]["type"] == "numericlog"
    assert exp["parameters_definition"].get("mean_test_accuracy", {}).get("type") is None  # scores keep HiPlot's linear default


def test_merged_legend_sits_beside_the_data(tiny_sweep):
    """Two series (a merge, or a second swept param): their legend is outside the score panel, off the circled best."""
    agg = store.read_cv_results(tiny_sweep)
    df = pd.concat([agg.assign(sweep="a"), agg.assign(sweep="b")], ignore_index=True)
    fig = figures.summary_figure(results.rank(df), [None] * 6, figures.candidate_labels(df), figures.candidate_colors(6))
    fig.canvas.draw()
    score_ax = fig.axes[0]
    legend = score_ax.get_legend().get_window_extent()
    assert legend.x0 >= score_ax.get_window_extent().x1  # right of the panel
    assert all(legend.x1 <= ax.get_window_extent().x0 for ax in fig.axes[1:])  # and clear of the next one


def test_short_runs_get_a_tick_per_epoch(tiny_sweep):
    """HiPlot's XY plot would tick a 2-epoch run at 1.0, 1.1, ...: epochs are categories, padded to sort as numbers."""
    curves = embedded_options((tiny_sweep / "hiplot_curves.html").read_text())["experiment"]
    assert curves["parameters_definition"]["epoch"]["type"] == "categorical"
    assert sorted({dp["values"]["epoch"] for dp in curves["datapoints"]}) == ["1", "2"]


def test_the_caption_says_what_is_below(tiny_sweep, tmp_path):
    page = (tiny_sweep / "hiplot.html").read_text()
    assert "one line per candidate" in page and "HiPlot draws no axis for a column of one value" in page  # every job ok
    store.write_cv_results(store.read_cv_results(tiny_sweep).iloc[:1], tmp_path)  # one candidate: no parallel plot
    report.write_report([tmp_path], tmp_path / "hiplot.html")
    single = (tmp_path / "hiplot.html").read_text()
    assert "one line per candidate" not in single and "the table of the candidates" in single


def test_summary_figure_axes(tiny_sweep):
    agg = store.read_cv_results(tiny_sweep)
    df = agg.assign(param_optimizer__lr=[1e-3, 1e-2, 1e-1], mean_test_accuracy=[math.nan, *agg["mean_test_accuracy"][1:]],
                    status=["diverged", "ok", "ok"])
    df = results.rank(df.drop(columns="param_module__num_units"))
    labels = figures.candidate_labels(df)
    curves = [{"train_loss": (np.array([1, 2]), np.array([600.0, 3.0]), np.zeros(2))}, None,
              {"train_loss": (np.array([1, 2]), np.array([0.5, 0.3]), np.zeros(2))}]
    fig = figures.summary_figure(df, curves, labels, figures.candidate_colors(3))
    score_ax, curves_ax = fig.axes[:2]
    assert score_ax.get_xscale() == "log" and curves_ax.get_yscale() == "log"  # lr 1e-3..1e-1, losses 0.3..600
    assert labels == ["lr=0.001", "lr=0.01", "lr=0.1"]
    plotted = sorted(round(line.get_xdata()[0], 6) for line in score_ax.lines if len(line.get_xdata()) == 1 and line.get_marker() == "o")
    assert 0.001 not in plotted and 0.1 in plotted  # the diverged candidate is left out of the score panel ...
    assert any("not scored, left out: lr=0.001 (diverged)" in t.get_text() for t in score_ax.texts)  # ... and named
    assert score_ax.get_xlabel() and score_ax.get_ylabel() == "accuracy: mean ± std over 3 splits"
    assert {t.get_text() for t in curves_ax.get_legend().get_texts()} >= {"lr=0.001 (diverged)", "lr=0.1"}


def test_rerender(tiny_sweep, tmp_path):
    out = tmp_path / "again.html"
    proc = run_here(str(tiny_sweep), "-o", str(out), module="src.report")
    assert proc.returncode == 0, proc.stderr
    assert len(embedded_rows(out.read_text())) == 3 and (tmp_path / "again_curves.html").is_file()
    assert 'href="again_curves.html"' in out.read_text()
    assert (tmp_path / "again_summary.png").is_file() and 'href="again_summary.svg"' in out.read_text()


def test_merge_two_sweeps(tiny_sweep, second_sweep, tmp_path):
    out = tmp_path / "compare.html"
    proc = run_here(str(tiny_sweep), str(second_sweep), "-o", str(out), module="src.report")
    assert proc.returncode == 0, proc.stderr
    rows = embedded_rows(out.read_text())
    names = figures.short_names([tiny_sweep, second_sweep])  # the axis shows short names (long ones were cut); the header the folders
    assert sorted(r["sweep"] for r in rows) == sorted([names[str(tiny_sweep)]] * 3 + [names[str(second_sweep)]] * 2)
    assert f"{tiny_sweep} + {second_sweep}" in out.read_text()
    merged = pd.concat([store.read_cv_results(tiny_sweep), store.read_cv_results(second_sweep)])
    by_score = sorted((r["mean_test_accuracy"], int(r["rank_test_accuracy"])) for r in rows)
    assert [rank for _, rank in by_score] == sorted(results.rank(merged)["rank_test_accuracy"], reverse=True)
    assert {r["sweep"] for r in embedded_rows((tmp_path / "compare_curves.html").read_text())} == {str(tiny_sweep), str(second_sweep)}
    # seed differs between the sweeps: the first, which did not override it, gets its configured seed
    assert sorted((r["sweep"], r["param_seed"]) for r in rows) == sorted([(names[str(tiny_sweep)], "0")] * 3 + [(names[str(second_sweep)], "1")] * 2)


def test_merge_adds_a_column_per_config_key_that_differs(tiny_sweep, second_sweep, tmp_path):
    wild = tmp_path / "wild"
    shutil.copytree(tiny_sweep, wild, ignore=shutil.ignore_patterns("*.html", "summary.*"))
    for job in store.job_dirs(wild):  # as if run with +sweeps=...: a config change that is not a command-line override
        record = json.loads((job / store.JOB).read_text())
        record["config"]["module"]["init"] = "randn"
        (job / store.JOB).write_text(json.dumps(record))
        folds = json.loads((job / store.HISTORY).read_text())
        for f in folds:
            f["epochs"][0]["train_loss"] *= 1000  # a first-epoch loss in the thousands
        (job / store.HISTORY).write_text(json.dumps(folds))
    out = tmp_path / "compare.html"
    report.write_report([wild, second_sweep], out)
    rows = embedded_rows(out.read_text())
    configs = {str(d): json.loads((store.job_dirs(d)[0] / store.JOB).read_text())["config"] for d in (wild, second_sweep)}
    assert sorted(r["param_module__init"] for r in rows) == sorted(["randn"] * 3 + [configs[str(second_sweep)]["module"]["init"]] * 2)
    short = {v: k for k, v in figures.short_names([wild, second_sweep]).items()}
    assert all(r["param_module__init"] == configs[short[r["sweep"]]]["module"]["init"] for r in rows)
    assert "param_dataset__scaling" not in rows[0] and "param_train__batch_size" not in rows[0]  # equal everywhere: no column
    curves = embedded_options((tmp_path / "compare_curves.html").read_text())["experiment"]
    assert curves["parameters_definition"]["train_loss"]["type"] == "numericlog"  # the wild curve does not flatten the rest


def test_report_without_o_writes_under_outputs_compare(tiny_sweep, second_sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert report.main([str(tiny_sweep), str(second_sweep)]) == 0
    written = list((tmp_path / "outputs" / "compare").glob("*/*/hiplot.html"))
    assert len(written) == 1 and re.fullmatch(r"\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", "/".join(written[0].parent.parts[-2:]))
    assert {p.name for p in written[0].parent.iterdir()} == {"hiplot.html", "hiplot_curves.html", "hiplot_curves_folds.html", "summary.png", "summary.svg",
                                                              "comparison.csv", "comparison.json"}
    assert str(written[0].parent.relative_to(tmp_path)) in capsys.readouterr().out  # it says where
    assert not list(tmp_path.glob("*.html"))


def test_report_of_a_folder_without_results_is_one_line(tmp_path):
    proc = run_here(str(tmp_path), module="src.report")
    assert proc.returncode == 2 and "no cv_results.json there" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder that cannot be written, even by root (who ignores permission bits): chmod, then chattr +i."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.touch()
    except OSError:
        pass
    else:
        probe.unlink()
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a read-only folder here (root without chattr)")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o755)


@pytest.mark.parametrize("case", ["truncated_json", "empty_json", "output_is_a_folder", "read_only_folder"])
def test_bad_report_input_is_one_line_exit_2(case, tiny_sweep, tmp_path, capsys, request):
    src, out = tiny_sweep, tmp_path / "out.html"
    if case == "truncated_json":
        src = tmp_path / "truncated"
        src.mkdir()
        text = (tiny_sweep / "cv_results.json").read_text()
        (src / "cv_results.json").write_text(text[: len(text) // 2])
        expected = f"{src / 'cv_results.json'} cannot be read (JSONDecodeError"
    elif case == "empty_json":
        src = tmp_path / "empty"
        src.mkdir()
        (src / "cv_results.json").write_text("{}")
        expected = f"{src / 'cv_results.json'}: holds no cv_results_ columns"
    elif case == "output_is_a_folder":
        out = tmp_path / "a_folder"
        out.mkdir()
        expected = f"-o {out}: is a folder; give the path of an HTML file"
    else:
        out = request.getfixturevalue("read_only_dir") / "report.html"
        expected = f"-o {out}: cannot write in folder {out.parent}"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert report.main([str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {expected}") and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing half-written


def test_shown_escapes_nested_strings():
    evil = "<img src=x onerror=document.title=1>"
    values = report.shown({"param_x": [evil, {"k": evil, evil: [evil]}], evil: evil, "n": 0.123456789, "nan": math.nan})
    assert values == {"param_x": [html.escape(evil), {"k": html.escape(evil), html.escape(evil): [html.escape(evil)]}],
                      html.escape(evil): html.escape(evil), "n": 0.1235, "nan": None}


def test_page_escapes_closing_tags_in_the_embedded_json():
    import hiplot as hip

    exp = hip.Experiment.from_iterable([{"a": "</b><!--x"}, {"a": "y"}])  # markup HTML parsers read even inside a script
    page = report.page(exp, "t", "")
    literal = re.search(r"eval\('\(' \+ (\".*?\") \+ '\)'\)", page).group(1)
    assert "</" not in literal and "<!--" not in literal
    assert embedded_rows(page)[0]["a"] == "</b><!--x"


EVIL = '</script><img src=x onerror="document.title=1">'


@pytest.fixture
def hostile_results(tiny_sweep, tmp_path):
    """A results folder whose param values and error message carry markup."""
    df = store.read_cv_results(tiny_sweep).assign(status="failed", error=EVIL, param_dataset__limit=EVIL)
    store.write_cv_results(df, tmp_path)
    return tmp_path


def test_strings_from_configs_and_errors_are_escaped(hostile_results):
    report.write_report([hostile_results], hostile_results / "hiplot.html")
    page = (hostile_results / "hiplot.html").read_text()
    assert "<img src=x" not in page and "</script><img" not in page
    rows = embedded_rows(page)
    assert {r["error"] for r in rows} == {html.escape(EVIL)} and {r["status"] for r in rows} == {"failed"}


def test_a_signal_during_the_figure_is_delivered_after_it():
    class Stop(BaseException):
        pass

    def handler(signum, frame):
        raise Stop

    previous = signal.signal(signal.SIGINT, handler)
    reached = False
    try:
        with pytest.raises(Stop):
            with report.held_signals():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # without the hold, the handler raises here
                reached = True
        assert reached and signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)


# ---- Reliability, round three (issue 18 item 9, issue 19) ------------------------------------------------

@pytest.fixture
def sweep_files(tmp_path):
    """A results folder's files, as far as the output check needs them: its rows and its model."""
    folder = tmp_path / "S"
    folder.mkdir()
    (folder / "cv_results.json").write_text('{"params": [{}], "mean_test_accuracy": [0.5]}')
    (folder / "best_model.pt").write_bytes(b"model")
    (folder / "evil.html").symlink_to(folder / "cv_results.json")
    return folder


@pytest.mark.parametrize("target, expected", [
    ("best_model.pt", "the report is an HTML page; give a path ending in .html"),
    ("cv_results.json", "the report is an HTML page; give a path ending in .html"),
    ("x.txt", "the report is an HTML page; give a path ending in .html"),
    ("evil.html", "would overwrite"),
])
def test_an_output_that_would_overwrite_an_input_or_is_not_html_is_refused(sweep_files, capsys, target, expected):
    before = {p.name: p.read_bytes() for p in sweep_files.iterdir()}
    assert report.main([str(sweep_files), "-o", str(sweep_files / target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: -o {sweep_files / target}: ") and expected in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in sweep_files.iterdir()} == before


def test_an_output_in_a_missing_folder_creates_it(tiny_sweep, tmp_path, monkeypatch):
    """Issue 19: -o cmp/ab.html creates cmp."""
    monkeypatch.chdir(tmp_path)
    assert report.main([str(tiny_sweep), "-o", "cmp/ab.html"]) == 0
    assert (tmp_path / "cmp" / "ab.html").is_file() and (tmp_path / "cmp" / "ab_curves.html").is_file()


def test_a_500_candidate_summary_calls_out_the_top_and_stays_quick():
    """module.num_units=range(8,4000,8): the 10 best-ranked in colour with error bars, the rest one grey scatter and one
    collection of curves; no collapsed layout, and drawn in about the time of a 4-candidate figure (not 15x it)."""
    import warnings

    import big_grid
    timings = {}
    for n in (4, 500):
        df, curves = big_grid.big_frame(n)
        labels, comparison = figures.candidate_labels(df), compare.compare(df)
        colors = figures.candidate_colors(n, df["rank_test_accuracy"])
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # matplotlib's "constrained_layout not applied because axes sizes collapsed"
            fig = figures.summary_figure(df, curves, labels, colors, comparison=comparison)
            figures.figure_bytes(fig)
        timings[n] = time.perf_counter() - start
    score_ax, diff_ax, curves_ax = fig.axes[:3]
    assert len(score_ax.containers) == figures.TOP  # error bars for the called-out candidates only
    assert len(score_ax.get_xticks()) < 20 and len(diff_ax.get_yticks()) == figures.TOP
    assert len([c for c in colors if c != figures.REST]) == figures.TOP
    assert len(curves_ax.get_legend().get_texts()) <= figures.TOP + 2
    assert timings[500] < 3 * timings[4] + 0.5, timings
