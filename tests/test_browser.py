"""What a person sees: the report pages rendered by headless Chromium, offline."""
import html
import json
import math
import os
import re
import shutil
import subprocess

import pytest

from src import figures, model, report, results, store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [
    pytest.mark.slow,  # a browser start per page (the pages' content is checked in tests/test_report.py)
    pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                       reason="needs headless Chromium (Debian package chromium; .ci/run installs it)"),
]
PAYLOAD = "<img src=x onerror=document.title=1>"


def rendered_dom(page, tmp_path) -> str:
    """The DOM after HiPlot's scripts ran, from headless Chromium with no network (script bodies left out)."""
    assert CHROMIUM, "chromium is not installed"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1400,1800", "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = re.sub(r"(<script\b[^>]*>).*?</script>", r"\1</script>", proc.stdout, flags=re.S)  # what is shown, not HiPlot's code
    assert 'class="alert alert-danger"' not in dom, re.search(r'alert-heading">(.*?)<', dom).group(1)  # HiPlot's error box
    return dom


def title(dom: str) -> str:
    """The document's title after the scripts ran."""
    return html.unescape(re.search(r"<title>(.*?)</title>", dom).group(1))


def table_cells(dom: str) -> list[list[str]]:
    """The rows of the data table under HiPlot's plots (DataTables marks them odd/even), as cell texts."""
    table = dom[dom.index("sample-rows-table"):]
    table = table[: table.index("</table>")]
    head = re.findall(r"<th[^>]*>(?:<span[^>]*>)?(.*?)(?:</span>)?</th>", table)
    rows = re.findall(r'<tr[^>]*class="(?:odd|even)[^"]*"[^>]*>(.*?)</tr>', table)
    return [head] + [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)] for r in rows]


def axes(dom: str) -> dict[str, list[tuple[str, float]]]:
    """The parallel plot's axes: name -> [(tick label, y pixel)], y growing downwards."""
    found = {}
    for chunk in dom.split('<g class="dimension"')[1:]:
        name = re.search(r'label-name[^>]*>(.*?)</span>', chunk).group(1)
        ticks = re.findall(r'<g class="tick" opacity="1" transform="translate\(0,([\d.]+)\)">.*?<text[^>]*>(.*?)</text>', chunk)
        found[name] = [(label, float(y)) for y, label in ticks]
    return found


def test_report_shows_one_row_per_candidate(tiny_sweep, tmp_path):
    dom = rendered_dom(tiny_sweep / "hiplot.html", tmp_path)
    cells = table_cells(dom)
    agg = store.read_cv_results(tiny_sweep)
    assert len(cells) - 1 == len(agg)
    head = cells[0]
    assert "param_module__num_units" in head and "split0_test_accuracy" in head  # per-fold scores are in the table ...
    shown = axes(dom)
    assert "mean_test_accuracy" in shown and "split0_test_accuracy" not in shown  # ... but not axes of the parallel plot
    rank = head.index("rank_test_accuracy")
    assert [row[rank] for row in cells[1:]] == ["1", "2", "3"]  # sorted by rank, best first
    ticks = dict(shown["rank_test_accuracy"])
    assert ticks["1"] < ticks["2"] < ticks["3"]  # rank 1 at the top of its axis
    mean = head.index("mean_test_accuracy")
    assert all(len(re.sub(r"[^0-9]", "", row[mean]).lstrip("0")) <= 4 for row in cells[1:])  # 4 significant digits
    assert title(dom) == f"{tiny_sweep} · candidates · mlp-sweep"
    assert 'href="hiplot_curves.html"' in dom and 'src="data:image/png;base64,' in dom


def swatches(dom: str) -> dict[str, str]:
    """The table's colour swatch of each row (HiPlot colours a row as it colours its line), by candidate label."""
    cells = table_cells(dom)
    column = cells[0].index("candidate")
    table = dom[dom.index("sample-rows-table"):]
    rows = re.findall(r'<tr[^>]*class="(?:odd|even)[^"]*"[^>]*>(.*?)</tr>', table[: table.index("</table>")])
    colors = [re.search(r"background-color: rgba?\((\d+), ?(\d+), ?(\d+)", r).groups() for r in rows]
    return {row[column]: "rgb({}, {}, {})".format(*c) for row, c in zip(cells[1:], colors)}


def test_lines_are_coloured_by_candidate_as_in_the_summary_figure(tiny_sweep, tmp_path):
    """The parallel plot's lines (and the table's swatches, HiPlot's colour of each line) take the summary figure's palette."""
    dom = rendered_dom(tiny_sweep / "hiplot.html", tmp_path)
    units = store.read_cv_results(tiny_sweep)["param_module__num_units"]
    palette = [figures.css_rgb(c) for c in figures.candidate_colors(len(units))]
    assert swatches(dom) == {figures.architecture(model.layer_sizes(u)): c for u, c in zip(units, palette)}


def test_learning_curves_page_is_a_tall_labelled_plot(tiny_sweep, tmp_path):
    src = tmp_path / "long"
    shutil.copytree(tiny_sweep, src, ignore=shutil.ignore_patterns("*.html", "summary.*"))
    for job in store.job_dirs(src):  # 12 epochs: enough to tell numeric from text order (1, 10, 11, 2, ...)
        folds = json.loads((job / store.HISTORY).read_text())
        for f in folds:
            f["epochs"] = [{**f["epochs"][0], "epoch": e, "train_loss": 2.3 / e} for e in range(1, 13)]
        (job / store.HISTORY).write_text(json.dumps(folds))
    report.write_report([src], src / "hiplot.html")
    dom = rendered_dom(src / "hiplot_curves.html", tmp_path)
    assert 'pplot-root"' not in dom  # no parallel plot of epoch rows (the class; the page's CSS names it too)
    heights = [float(h) for h in re.findall(r'<svg[^>]*height="([\d.]+)"', dom[dom.index("Selected:"):])]
    assert max(heights) >= 600  # a tall loss plot
    legend = dom[dom.index("candidate-legend"):]
    for units in store.read_cv_results(src)["param_module__num_units"]:
        assert figures.architecture(model.layer_sizes(units)) in legend[: legend.index("</div>")]
    cells = table_cells(dom)
    epoch = cells[0].index("epoch")
    assert [int(row[epoch]) for row in cells[1:11]] == list(range(1, 11))  # numeric order
    assert title(dom) == f"{src} · learning curves · mlp-sweep"
    assert 'href="hiplot.html"' in dom and 'href="hiplot_curves_folds.html"' in dom


def test_unscored_candidates_sit_below_scored_ones(tiny_sweep, tmp_path):
    agg = store.read_cv_results(tiny_sweep)
    df = agg.assign(mean_test_accuracy=[math.nan, math.nan, agg["mean_test_accuracy"][2]], status=["diverged", "failed", "ok"])
    store.write_cv_results(results.rank(df), tmp_path)
    report.write_report([tmp_path], tmp_path / "hiplot.html")
    dom = rendered_dom(tmp_path / "hiplot.html", tmp_path)
    shown = axes(dom)
    assert not re.search(r"<text[^>]*>nan/inf/null</text>", dom)  # HiPlot's label for nulls drawn at the top
    ticks = dict(shown["mean_test_accuracy"])  # one finite value: the axis is kept, the value above the nulls
    assert set(ticks) == {f"{agg['mean_test_accuracy'][2]:.4g}", "null"} and ticks[f"{agg['mean_test_accuracy'][2]:.4g}"] < ticks["null"]
    assert {"ok", "diverged", "failed"} <= {label for label, _ in shown["status"]}


def test_single_candidate_page_renders(tiny_sweep, tmp_path):
    store.write_cv_results(store.read_cv_results(tiny_sweep).iloc[:1], tmp_path)
    report.write_report([tmp_path], tmp_path / "hiplot.html")
    dom = rendered_dom(tmp_path / "hiplot.html", tmp_path)
    assert len(table_cells(dom)) == 2 and 'src="data:image/png;base64,' in dom  # HiPlot cannot draw axes of one value


def test_markup_in_results_shows_as_text(tiny_sweep, tmp_path):
    evil = '</script><img src=x onerror="document.title=1">'
    df = store.read_cv_results(tiny_sweep).assign(error=evil)
    df["param_module__num_units"] = [[PAYLOAD], {"k": [PAYLOAD]}, 32]  # markup nested in lists and dicts
    store.write_cv_results(df, tmp_path)
    report.write_report([tmp_path], tmp_path / "hiplot.html")
    dom = rendered_dom(tmp_path / "hiplot.html", tmp_path)
    assert len(table_cells(dom)) - 1 == len(df)
    assert '<img src="x"' not in dom and "&lt;/script&gt;&lt;img src=x" in dom
    assert title(dom) == f"{tmp_path} · candidates · mlp-sweep"


def test_job_folder_named_with_markup_stays_text(tiny_sweep, tmp_path):
    src = tmp_path / "s"
    shutil.copytree(tiny_sweep, src, ignore=shutil.ignore_patterns("*.html", "summary.*"))
    store.job_dirs(src)[0].rename(src / PAYLOAD)
    report.write_report([src], src / "hiplot.html")
    dom = rendered_dom(src / "hiplot_curves_folds.html", tmp_path)  # the page whose uids and rows were named by job folder
    assert '<img src="x"' not in dom and title(dom) == f"{src} · learning curves per fold · mlp-sweep"
    assert len(table_cells(dom)) > 1 and PAYLOAD not in open(src / "hiplot_curves_folds.html").read()


def test_merged_folder_named_with_closing_script_tag_stays_text(tiny_sweep, tmp_path):
    evil = tmp_path / 'x</script><img src=x onerror="document.title=1">'
    shutil.copytree(tiny_sweep, evil, ignore=shutil.ignore_patterns("*.html", "summary.*"))
    out = tmp_path / "compare.html"
    report.write_report([tiny_sweep, evil], out)
    for page in (out, tmp_path / "compare_curves.html"):
        dom = rendered_dom(page, tmp_path)
        assert '<img src="x"' not in dom and title(dom).startswith(f"{tiny_sweep} + {evil}")
        assert html.escape(str(evil), quote=False) in dom and len(table_cells(dom)) > 1  # shown as the text it is


def test_a_500_candidate_page_stays_usable(tmp_path):
    """module.num_units=range(8,4000,8): the page renders, the table pages its 500 rows and shows chosen columns,
    the 10 best-ranked are coloured as in the summary figure and the rest grey."""
    import time

    import big_grid

    df, _ = big_grid.big_frame(500)
    store.write_cv_results(df, tmp_path)
    start = time.perf_counter()
    report.write_report([tmp_path], tmp_path / "hiplot.html")
    seconds = time.perf_counter() - start
    dom = rendered_dom(tmp_path / "hiplot.html", tmp_path)
    cells = table_cells(dom)
    assert len(cells) - 1 == 10 and "of 500 entries" in dom  # DataTables pages the rows
    assert len(cells[0]) <= 16 and "param_module__num_units" in cells[0]
    shown = axes(dom)
    assert {"param_module__num_units", "rank_test_accuracy"} <= set(shown) and 'pplot-root"' in dom  # ranks numeric: HiPlot drops 500 categories
    colors = swatches(dom)
    grey = figures.css_rgb(figures.REST)
    assert [c != grey for c in colors.values()] == [True] * 10  # the first page: the 10 best-ranked, in colour
    assert seconds < 20, seconds  # the whole report: figure, comparison and three pages
