"""What a person sees: the HiPlot report rendered by headless Chromium, offline."""
import os
import re
import shutil
import subprocess

import pytest

from src import results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="needs headless Chromium (Debian package chromium; .ci/run installs it)",
)


def rendered_dom(page, tmp_path) -> str:
    """The DOM after HiPlot's scripts ran, from headless Chromium with no network."""
    assert CHROMIUM, "chromium is not installed"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def table_rows(dom: str) -> int:
    """Rows in the data table under HiPlot's parallel plot (DataTables marks them odd/even)."""
    table = dom[dom.index("sample-rows-table"):]
    table = table[: table.index("</table>")]
    return len(re.findall(r'<tr[^>]*class="(?:odd|even)', table))


def test_report_shows_one_row_per_candidate(tiny_sweep, tmp_path):
    dom = rendered_dom(tiny_sweep / "hiplot.html", tmp_path)
    assert table_rows(dom) == len(results.read_cv_results(tiny_sweep))
    assert "param_module__num_units" in dom and "mean_test_accuracy" in dom
    assert 'href="hiplot_curves.html"' in dom


def test_learning_curves_page_renders(tiny_sweep, tmp_path):
    dom = rendered_dom(tiny_sweep / "hiplot_curves.html", tmp_path)
    assert "train_loss" in dom and "sample-rows-table" in dom


def test_markup_in_results_shows_as_text(tiny_sweep, tmp_path):
    from src import report

    evil = '</script><img src=x onerror="document.title=1">'
    df = results.read_cv_results(tiny_sweep).assign(error=evil)
    results.write_cv_results(df, tmp_path)
    dom = rendered_dom(report.write_report([tmp_path], tmp_path / "hiplot.html"), tmp_path)
    assert table_rows(dom) == len(df)
    assert '<img src="x"' not in dom and "&lt;/script&gt;&lt;img src=x" in dom
    assert "<title>HiPlot" in dom
