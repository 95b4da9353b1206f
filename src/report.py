"""The report of saved results: a summary figure and three HiPlot pages, each a self-contained HTML file.

    python -m src.report DIR [DIR ...] [-o FILE]

re-renders the report of one results folder (a sweep folder or a single run's folder), or merges
several into one comparison (a `sweep` column tells them apart; config keys that differ between
them get param_* columns). Pages, for a report FILE (default hiplot.html):
  FILE                   one line per candidate: parallel plot and table, the summary figure on top
  <stem>_curves.html     learning curves, one line per candidate (the mean over folds)
  <stem>_curves_folds.html  the same, one line per fold
  summary.png/.svg       the summary figure (<stem>_summary.* when FILE is not hiplot.html)
  comparison.csv/.json   every candidate against the best (src.compare; <stem>_comparison.* likewise)
"""
import argparse
import base64
import contextlib
import datetime
import gc
import html
import math
import re
import signal
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

import hiplot as hip
import pandas as pd

from src import compare, figures, model, results, store
from src.identity import flat

REPORT = "hiplot.html"
STATUS_COLORS = {"ok": "rgb(44, 160, 44)", "diverged": "rgb(255, 127, 14)", "failed": "rgb(214, 39, 40)"}
BOOKKEEPING = ("dur", "train_batch_count", "valid_batch_count", "train_loss_best", "valid_loss_best", "valid_acc_best")
HIDDEN = ["uid", "from_uid"]
GREY = "rgb(150, 150, 150)"
VERDICT_COLORS = {"best": "rgb(0, 0, 0)", "equivalent": "rgb(44, 160, 44)", "undecided": "rgb(255, 127, 14)",
                  "worse": "rgb(214, 39, 40)", "null": GREY}  # src.compare's verdicts; null: not compared
CURVES_HELP = ('<p style="font-size:13px;margin:4px 0 0">Drag a rectangle on the plot to zoom in, click it to zoom out; '
               "right-click a column title in the table to plot that column instead (valid_loss, valid_acc, ...).</p>")
# a label per line in the table, not one word per line; the parallel plot drawn inside margins that its first axis's
# tick labels (sweep names) and its last axis's slanted title may use: HiPlot's own svg clips them at its edges
TABLE_CSS = ("<style>.sample-rows-table td { white-space: nowrap; } .pplot-root svg { overflow: visible; } "
             "div:has(> div > .pplot-root) { margin: 0 150px 0 110px; }</style>")


class ReportError(ValueError):
    """Input the report cannot be made from; the message names the file or value and what is expected."""


def escaped(value):
    """A value with every string in it, nested ones and dict keys included, HTML-escaped."""
    return _escaped(results.plain(value))  # plain() is recursive: once at the top is enough


def _escaped(value):
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, dict):
        return {html.escape(str(k)): _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


def shown(values: dict) -> dict:
    """A datapoint's values made safe and readable for HiPlot: escaped, floats to 4 significant digits, NaN -> None.

    HiPlot's table renders cells as HTML, so markup in a param value or an error message (at any
    depth of a list or dict) would run in the reader's browser; escaped, it shows as the text it is.
    """
    def one(v):
        v = escaped(v)
        if isinstance(v, float):
            return float(f"{v:.4g}") if math.isfinite(v) else None
        return v
    return {html.escape(str(k)): one(v) for k, v in values.items()}


def place_nulls(exp: hip.Experiment, columns: list[str]) -> list[str]:
    """Keep the nulls (NaN) of numeric columns off the top of their axes; returns the columns to invert (drawn top-down).

    HiPlot draws a null at the *top* of a numeric axis, and hides an axis with a single distinct
    value. So where a column has two or more finite values its nulls are left out of the datapoints
    (the line skips that axis; `status` says why); where it has one finite value and nulls, it is
    made categorical and inverted, so the value sits on top and the nulls at the bottom.
    """
    invert = []
    for col in columns:
        cells = [dp.values.get(col) for dp in exp.datapoints]
        numbers = [v for v in cells if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not numbers or len(numbers) + cells.count(None) < len(cells):
            continue  # not a numeric column
        numbers = set(numbers)
        if len(numbers) >= 2:
            for dp in exp.datapoints:
                if dp.values.get(col, 0) is None:
                    del dp.values[col]
        elif None in cells:
            exp.parameters_definition[col] = hip.ValueDef(hip.ValueType.CATEGORICAL, colors={"null": GREY})
            invert.append(col)
    return invert


MOST_SPLIT_COLUMNS = 5  # more per-split score columns than this are left out of the table (they stay in the data)
MOST_TICKS = 30  # an integer param with at most this many values gets a tick per value; more: a linear axis


def integers(values: pd.Series) -> bool:
    """Every value an integer (not a bool): widths, epochs, batch sizes."""
    return figures.is_numeric(values) and all(float(v).is_integer() for v in values)


def integer_grid(values: pd.Series) -> bool:
    """An integer param with few enough values for a tick each."""
    return integers(values) and values.nunique() <= MOST_TICKS


def candidates_experiment(df: pd.DataFrame, labels: list[str], verdicts: list[str | None] | None = None,
                          colors: list[str] | None = None) -> hip.Experiment:
    """One datapoint per candidate: swept params, split/mean/std/rank test scores, the verdict against the best
    (src.compare), train mean, trainable parameters (n_parameters), fit time, status; lines coloured by candidate with `colors` (CSS, one per row:
    the summary figure's), else by the mean test score."""
    metric = results.metric_names(df)[0]
    if verdicts is not None:
        df = df.assign(verdict=[v or "null" for v in verdicts])
    splits = [c for c in df.columns if c.startswith("split") and "_test_" in c]
    keep = [c for c in df.columns if c == "sweep"] + sorted(c for c in df.columns if c.startswith("param_")) + splits
    keep += [c for c in df.columns if c.startswith(("mean_test_", "std_test_", "rank_test_"))] + [c for c in ("verdict",) if c in df]
    keep += [c for c in df.columns if c.startswith("mean_train_")] + [c for c in ("n_parameters",) if c in df and df[c].notna().any()]
    keep += ["mean_fit_time"] + [c for c in ("status", "error") if c in df]
    ranks = [c for c in keep if c.startswith("rank_test_")]
    width = len(str(len(df)))
    counts = [c for c in keep if c.startswith("param_") and integer_grid(df[c])]
    widths = {c: len(str(int(df[c].abs().max()))) for c in counts}
    sweeps = figures.short_names(df["sweep"]) if "sweep" in df else {}  # the header names the whole folders
    few = len(df) <= MOST_TICKS  # ranks as categories, a tick each; HiPlot drops a categorical axis of hundreds of values
    exp = hip.Experiment()
    rows = df[keep].to_dict(orient="records")
    # drawn in order: where many candidates are grey, the coloured best-ranked last, on top of them
    order = range(len(df)) if colors is None or len(df) <= figures.MANY else \
        [i for i in range(len(df)) if colors[i] == figures.css_rgb(figures.REST)] + \
        [i for i in reversed(figures.top_rows(df[ranks[0]])) if colors[i] != figures.css_rgb(figures.REST)]
    for i in order:
        row = rows[i]
        # HiPlot sorts a categorical axis as text ("10" < "2"); padded with spaces, ranks sort as numbers
        row.update({c: str(int(row[c])).rjust(width) if few else int(row[c]) for c in ranks})
        row.update({c: str(int(row[c])).rjust(widths[c]) for c in counts})
        row.update({"sweep": sweeps[row["sweep"]]} if sweeps else {})
        row.update({"n_parameters": int(row["n_parameters"])} if not figures.is_missing(row.get("n_parameters")) else {})  # exact, not 4 digits
        exp.datapoints.append(hip.Datapoint(uid=str(i), values=shown({"candidate": labels[i], **row})))
    sizes = [c for c in keep if c == "n_parameters"]
    numeric = [c for c in keep if c.startswith("param_")] + splits + [c for c in keep if c.startswith(("mean_", "std_"))] + sizes
    invert = place_nulls(exp, [html.escape(c) for c in numeric])
    for col in sizes if sizes and figures.is_log_scaled(df["n_parameters"]) else []:  # 25k..270k parameters: a grid in ratios
        exp.parameters_definition[col].type = hip.ValueType.NUMERIC_LOG
    for col in [c for c in keep if c.startswith("param_") and c not in counts and figures.is_log_scaled(df[c]) and not integers(df[c])]:
        exp.parameters_definition[html.escape(col)].type = hip.ValueType.NUMERIC_LOG  # 32..256, 1e-3..1e-1: a grid in ratios
    for col in counts:  # a few integers (num_units 32..256): one tick per value, written as integers (HiPlot writes a log axis 4e+1)
        exp.parameters_definition[html.escape(col)].type = hip.ValueType.CATEGORICAL
    for col in ranks if few else []:  # categorical, rank 1 on top (inverted below, numeric or not)
        exp.parameters_definition[html.escape(col)].type = hip.ValueType.CATEGORICAL
    exp.parameters_definition["status"] = hip.ValueDef(hip.ValueType.CATEGORICAL, colors=STATUS_COLORS)
    if verdicts is not None:
        exp.parameters_definition["verdict"] = hip.ValueDef(hip.ValueType.CATEGORICAL, colors=VERDICT_COLORS)
    if colors is not None:  # one colour per candidate in every view
        exp.parameters_definition["candidate"] = hip.ValueDef(hip.ValueType.CATEGORICAL,
                                                              colors={html.escape(k): c for k, c in zip(labels, colors)})
        exp.colorby = "candidate"
    else:
        exp.parameters_definition["candidate"].type = hip.ValueType.CATEGORICAL
        exp.colorby = f"mean_test_{metric}"
    order = ["candidate"] + [html.escape(c) for c in keep]
    hide = HIDDEN + ["candidate", "error"] + [html.escape(c) for c in splits]  # per-fold scores stay in the data and the table
    exp.display_data(hip.Displays.PARALLEL_PLOT).update({
        "order": order[::-1],  # HiPlot lays `order` out right to left
        "hide": hide,
        "invert": invert + [html.escape(c) for c in ranks],
    })
    # the table's columns: per-split scores only while they are few (cv.repeats=5 would add 15; HiPlot's table has no
    # horizontal scroll worth the name); they stay in the data, in Export and in cv_results.csv
    table_hide = HIDDEN + ([html.escape(c) for c in splits] if len(splits) > MOST_SPLIT_COLUMNS else [])
    exp.display_data(hip.Displays.TABLE).update({"order": order, "order_by": [[f"rank_test_{metric}", "asc"]], "hide": table_hide})
    # HiPlot gives an axis only to a column with two or more values, and fails on a parallel plot with none (one candidate)
    axes = [c for c in order if c not in hide and len({figures.key(dp.values.get(c)) for dp in exp.datapoints if c in dp.values}) > 1]
    exp.enabledDisplays = ([hip.Displays.PARALLEL_PLOT] if axes else []) + [hip.Displays.TABLE]
    return exp


def curves_experiment(lines: list[dict], colors: dict[str, str], per_fold: bool = False) -> hip.Experiment:
    """One datapoint per line and epoch, each linked to its previous epoch, so HiPlot's XY plot draws curves.

    lines: [{"values": {candidate, ...}, "epochs": [{"epoch": 1, "train_loss": ...}, ...]}, ...]; colors: label -> CSS colour.
    """
    exp = hip.Experiment()
    # HiPlot's XY plot puts d3's default ticks on a numeric x axis: 1.2, 1.4, ... for a short run. Up to MOST_TICKS
    # epochs, the epochs are categories instead (padded to sort as numbers): a tick per epoch, equally spaced, as they are
    most = max((int(row["epoch"]) for line in lines for row in line["epochs"]), default=0)
    width = len(str(most)) if most <= MOST_TICKS else 0
    for line in lines:
        previous = None
        for row in line["epochs"]:
            uid = str(len(exp.datapoints))  # by index: a uid is data, never a path
            if width:
                row = {**row, "epoch": str(int(row["epoch"])).rjust(width)}
            values = {k: v for k, v in shown({**line["values"], **row}).items() if v is not None}  # HiPlot's XY plot draws NaN at the top
            exp.datapoints.append(hip.Datapoint(uid=uid, from_uid=previous, values=values))
            previous = uid
    exp.parameters_definition["candidate"] = hip.ValueDef(hip.ValueType.CATEGORICAL, colors={html.escape(k): v for k, v in colors.items()})
    columns = sorted({k for dp in exp.datapoints for k in dp.values})
    for col in [c for c in columns if c.endswith(("_loss", "_loss_std"))]:
        if figures.is_log_scaled(dp.values[col] for dp in exp.datapoints if col in dp.values):
            exp.parameters_definition[col].type = hip.ValueType.NUMERIC_LOG  # one wild curve must not flatten the rest
    if width:
        exp.parameters_definition["epoch"].type = hip.ValueType.CATEGORICAL
    exp.colorby = "candidate"
    rank = next((c for c in columns if c.startswith("rank_test_")), None)
    order = ["candidate", "sweep", "repeat", "fold", "epoch", "train_loss", "valid_loss", "valid_acc"]
    exp.display_data(hip.Displays.XY).update({
        "axis_x": "epoch", "axis_y": "train_loss", "height": 620,
        "lines_thickness": 1.4 if per_fold else 2.6, "lines_opacity": 0.75 if per_fold else 0.95,
        "dots_thickness": 2.0 if per_fold else 3.2, "dots_opacity": 0.9,
    })
    order_by = ([[rank, "asc"]] if rank else []) + [["candidate", "asc"]] + ([["repeat", "asc"]] if per_fold and "repeat" in columns else []) + ([["fold", "asc"]] if per_fold else []) + [["epoch", "asc"]]
    exp.display_data(hip.Displays.TABLE).update({"order": [c for c in order if c in columns], "order_by": order_by, "hide": HIDDEN})
    exp.enabledDisplays = [hip.Displays.XY, hip.Displays.TABLE]
    return exp


def load_json(path: Path):
    """A JSON file's content; a truncated or invalid file is a ReportError naming it."""
    try:
        return store.read_json(path)
    except store.DamagedJob as e:
        raise ReportError(f"{e}; the file is damaged or truncated: rerun the job, or leave this folder out") from None


def read_results(results_dir: Path) -> pd.DataFrame:
    """A results folder's cv_results.json as a DataFrame, checked to hold cv_results_ columns."""
    path = Path(results_dir) / f"{store.CV_RESULTS}.json"
    columns = load_json(path)
    if not isinstance(columns, dict) or "params" not in columns or not any(k.startswith("mean_test_") for k in columns):
        raise ReportError(f"{path}: holds no cv_results_ columns (needs params, mean_test_<metric>, std_test_<metric>, "
                          "rank_test_<metric>); give a folder written by src.sweep")
    try:
        df = store.rows_frame(columns)
    except (ValueError, TypeError) as e:
        raise ReportError(f"{path}: its columns do not form a table ({e}); give a folder written by src.sweep") from None
    if df.empty:
        raise ReportError(f"{path}: holds no candidates")
    return df


def add_config_columns(frames: list[pd.DataFrame], configs: list[list[dict]]) -> list[pd.DataFrame]:
    """For each config key whose values differ between the merged sweeps, a param_<key with __> column.

    A sweep that already has the column (it swept that key) keeps its values; only missing cells are filled.
    """
    flats = [[flat(c) for c in rows] for rows in configs]
    names = sorted({k for rows in flats for c in rows for k in c})
    differing = [k for k in names if len({frozenset(figures.key(c.get(k)) for c in rows) for rows in flats}) > 1]
    out = []
    for df, rows in zip(frames, flats):
        df = df.copy()
        for k in differing:
            col, values = "param_" + k.replace(".", "__"), [c.get(k) for c in rows]
            if col in df:
                values = [v if figures.is_missing(old) else old for old, v in zip(df[col], values)]
            df[col] = pd.Series(values, index=df.index, dtype=object)
        out.append(df)
    return out


def curves_path(out: Path) -> Path:
    """Where the learning-curves page of report `out` goes: beside it, `<stem>_curves.html`."""
    return out.with_name(f"{out.stem}_curves.html")


def folds_path(out: Path) -> Path:
    """Where the per-fold learning-curves page of report `out` goes: `<stem>_curves_folds.html`."""
    return out.with_name(f"{out.stem}_curves_folds.html")


def summary_paths(out: Path) -> tuple[Path, Path]:
    """The summary figure's PNG and SVG beside report `out`: summary.*, or <stem>_summary.* for another report name."""
    stem = "summary" if out.name == REPORT else f"{out.stem}_summary"
    return out.with_name(f"{stem}.png"), out.with_name(f"{stem}.svg")


def page(exp: hip.Experiment, title: str, header: str) -> str:
    """HiPlot's self-contained page with our title and header, and `</` escaped in its embedded JSON.

    Every string is HTML-escaped before HiPlot sees it; escaping `</` and `<!--` in the JSON that
    HiPlot writes into its <script> keeps any that slipped through from closing the script.
    """
    text = exp.to_html()
    text = text.replace("<title>HiPlot</title>", f"<title>{html.escape(title)}</title>", 1)
    text = re.sub(r"(Object\.assign\(options, eval\('\(' \+ )(\".*?\")( \+ '\)'\)\);)",
                  lambda m: m[1] + m[2].replace("</", "<\\/").replace("<!--", "\\u003c!--") + m[3], text, count=1)
    return re.sub(r"<body[^>]*>", lambda m: m[0] + header, text, count=1)


def header(title: str, links: list[tuple[str, Path | None]], extra: str = "") -> str:
    """The block above HiPlot: the page's title, links to the other pages (None: this page), and `extra` HTML."""
    nav = " · ".join(f"<b>{html.escape(text)}</b>" if target is None else f'<a href="{html.escape(quote(target.name))}">{html.escape(text)}</a>'
                     for text, target in links)
    return (f'<header style="font-family:sans-serif;margin:10px 14px">'
            f'{TABLE_CSS}<h1 style="font-size:20px;margin:0 0 6px">{html.escape(title)}</h1><nav style="font-size:15px">{nav}</nav>{extra}</header>')


def legend(labels: list[str], colors: list[str], status: list[str]) -> str:
    """An HTML legend: a colour swatch and the label of each candidate, as the curves are coloured."""
    items = "".join(f'<span style="display:inline-block;margin:2px 14px 2px 0;white-space:nowrap">'
                    f'<span style="display:inline-block;width:22px;height:5px;margin:0 6px 3px 0;background:{c}"></span>'
                    f'{html.escape(label)}{"" if s == "ok" else " (" + html.escape(s) + ")"}</span>'
                    for label, c, s in zip(labels, colors, status))
    return f'<div class="candidate-legend" style="font-size:14px;margin-top:8px">{items}</div>'


def curve_lines(df: pd.DataFrame, labels: list[str], folds: list[list[dict]], curves: list[dict | None]) -> tuple[list[dict], list[dict]]:
    """The lines of the two curves pages: per candidate its mean over folds, and per fold its own history."""
    metric = results.metric_names(df)[0]
    mean_lines, fold_lines = [], []
    for i, row in enumerate(df.to_dict(orient="records")):
        values = {"candidate": labels[i], **({"sweep": row["sweep"]} if "sweep" in row else {}),
                  f"rank_test_{metric}": row[f"rank_test_{metric}"], **{c: row[c] for c in df.columns if c.startswith("param_")}}
        if curves[i]:
            rows = {}  # epoch -> its mean/std of every history entry, and how many folds reached it
            for entry, (epochs, mean, std) in curves[i].items():
                for e, m, s in zip(epochs.tolist(), mean.tolist(), std.tolist()):
                    rows.setdefault(e, {"epoch": e, "folds": sum(len(h["epochs"]) >= e for h in folds[i])}).update({entry: m, f"{entry}_std": s})
            mean_lines.append({"values": values, "epochs": [rows[e] for e in sorted(rows)]})
        for h in folds[i]:
            epochs = [{k: v for k, v in r.items() if k not in BOOKKEEPING} for r in h["epochs"]]
            split = {"fold": h["fold"], **({"repeat": h["repeat"]} if "repeat" in h else {})}  # cv.repeats: (repeat, fold)
            fold_lines.append({"values": {**values, **split}, "epochs": epochs})
    return mean_lines, fold_lines


def figure_block(png: bytes, png_path: Path, svg_path: Path, plotted: bool = True, unscored: bool = False) -> str:
    """The summary figure embedded as a data URI (the page stays one file), linking the SVG and PNG beside it, and a
    caption for what is below: the parallel plot (`plotted`), or the table alone; `unscored`: some candidate has no score."""
    svg_href, png_href = html.escape(quote(svg_path.name)), html.escape(quote(png_path.name))
    if not plotted:
        below = "Below, the table of the candidates (a parallel plot needs two or more candidates that differ)."
    else:
        below = ("Below, one line per candidate, in its colour of the figure: drag along an axis to select, click an axis "
                 "title to flip it. ")
        below += ("Unscored candidates (diverged, failed) are told apart by the <code>status</code> axis and skip the score axes."
                  if unscored else "Every candidate was scored, so <code>status</code> (ok) is in the table only: HiPlot "
                  "draws no axis for a column of one value.")
    return (f'<figure style="margin:10px 0 0"><a href="{svg_href}"><img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
            'style="max-width:100%" alt="Summary: score against the swept parameter, and learning curves"></a>'
            f'<figcaption style="font-size:13px">Summary figure: <a href="{svg_href}">{html.escape(svg_path.name)}</a>, '
            f'<a href="{png_href}">{html.escape(png_path.name)}</a>. {below}</figcaption></figure>')


@contextlib.contextmanager
def held_signals(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)):
    """Hold Ctrl-C and SIGTERM while a figure is drawn and freed, and deliver them afterwards.

    matplotlib frees its objects through weakref callbacks, and Python ignores an exception raised
    in one: a sweep's Ctrl-C handler that raises there would be lost (2 signals in 80, measured).
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread handles signals
        yield
        return
    caught = []
    previous = {n: signal.signal(n, lambda signum, frame: caught.append(signum)) for n in signums}
    gc.freeze()  # what lived before is not scanned again: the collection below takes ms, not 0.2 s, beside torch
    try:
        yield
        gc.collect()  # the figure's objects die here, while the signals are held
    finally:
        gc.unfreeze()
        for n, handler in previous.items():
            signal.signal(n, handler)
        for n in dict.fromkeys(caught):
            signal.raise_signal(n)  # now the sweep's own handler runs, in plain code


def candidate_records(df: pd.DataFrame, jobs: list) -> list[dict]:
    """Each row's job.json record ({} where no finished job holds it), matched by its params (store.read_jobs' jobs)."""
    by_params = {figures.key(p): job.record for job in jobs for p in job.rows["params"]}
    return [by_params.get(figures.key(p), {}) for p in df["params"]]


def n_parameters(record: dict) -> int | None:
    """A candidate's trainable parameters: its job.json's count, or (a job recorded before jobs counted them) its
    config's NeuralNet's; None for another module's job recorded without one."""
    if record.get("n_parameters") is not None:
        return record["n_parameters"]
    sizes = model.module_sizes((record.get("config") or {}).get("module") or {})
    return None if sizes is None else model.parameter_count(sizes)


def architectures(configs: list[dict]) -> list[str | None]:
    """Each config's module as the views name it (784-256-128-10, cnn 1-8-16-10 k3, TinyNet); None without a config."""
    return [figures.module_architecture((c or {}).get("module") or {}) for c in configs]


def read_merged(results_dirs: list[Path], jobs_of: dict[Path, list] | None = None) -> tuple[pd.DataFrame, list[dict], list[dict]]:
    """The candidates of one or several results folders (with each one's n_parameters), each row's resolved config, and
    every fold history.

    Merged folders get a `sweep` column, a column per config key that differs between them, and ranks over all rows.
    `jobs_of`: each folder's store.read_jobs, where the caller has read them already.
    """
    merge = len(results_dirs) > 1
    frames, configs, histories = [], [], []
    for d in results_dirs:
        df, jobs = read_results(d), store.read_jobs(d) if jobs_of is None else jobs_of[d]
        records = candidate_records(df, jobs)
        if merge:
            df.insert(0, "sweep", str(d))
        frames.append(df.assign(n_parameters=[n_parameters(r) for r in records]))
        configs.append([r.get("config", {}) for r in records])
        histories += [{**h, "sweep": str(d)} if merge else h for job in jobs for h in job.histories or []]
    if merge:
        frames = add_config_columns(frames, configs)
    df = pd.concat(frames, ignore_index=True)
    return (results.rank(df) if merge else df), [c for rows in configs for c in rows], histories


def write_report(results_dirs: list[Path], out: Path, compare_settings: dict | None = None,
                 jobs_of: dict[Path, list] | None = None) -> pd.DataFrame:
    """Render the summary figure, the candidates page at `out` and the learning-curves pages beside it, and write
    the comparison of every candidate with the best beside them (src.compare: rope and confidence from
    `compare_settings`, else those the first folder was run with); returns the comparison.

    Candidates are compared with the best only where they were cross-validated on the same splits (a merge
    of sweeps with other seeds, data or folds gives no verdict across them). `jobs_of`: as read_merged's."""
    results_dirs, out = [Path(d) for d in results_dirs], Path(out)
    df, configs, histories = read_merged(results_dirs, jobs_of)
    archs = architectures(configs)
    labels = figures.candidate_labels(df, archs)
    comparison = compare.compare(df, **(compare_settings or compare.settings(results_dirs[0])), configs=configs)
    comparison.insert(0, "candidate", labels)
    compared = len(df) > 1
    colors = figures.candidate_colors(len(df), df[f"rank_test_{results.metric_names(df)[0]}"])
    status = list(df["status"]) if "status" in df else ["ok"] * len(df)
    by_candidate: dict[tuple, list[dict]] = {}  # grouped once: matching each row against every history is quadratic
    for h in histories:
        by_candidate.setdefault((h.get("sweep"), figures.key(h["params"])), []).append(h)
    folds = [by_candidate.get((row.get("sweep"), figures.key(row["params"])), []) for row in df.to_dict(orient="records")]
    curves = [figures.mean_curves(f) if f else None for f in folds]

    name = " + ".join(str(d) for d in results_dirs)
    with held_signals():
        png, svg = figures.figure_bytes(figures.summary_figure(df, curves, labels, colors, archs, title=f"mlp-sweep: {name}",
                                                               comparison=comparison if compared else None))
    png_path, svg_path = summary_paths(out)
    verdicts = comparison["verdict"].tolist() if compared else None
    css = [figures.css_rgb(c) for c in colors]
    if "param_module__hidden_sizes" in df:  # a list is no axis: its architecture, as the labels write it
        df = df.assign(param_module__hidden_sizes=[(a or figures.architecture(model.layer_sizes(hidden_sizes=h))) if isinstance(h, list) else h
                                                   for h, a in zip(df["param_module__hidden_sizes"], archs)])
    for col in set(results.named_by_architecture(df, archs)) & {"param_module__channels", "param_module"}:  # the CNN's, the module's
        df = df.assign(**{col: [a if a is not None else str(v) if isinstance(v, list) else v for v, a in zip(df[col], archs)]})
    mean_lines, fold_lines = curve_lines(df, labels, folds, curves)
    # none when every job failed before its first epoch, or diverged in it (a NaN loss is no point of a curve)
    has_curves = any(line["epochs"] for line in mean_lines)
    links = [("Candidates", out)] + ([("Learning curves (mean over folds)", curves_path(out)), ("per fold", folds_path(out))] if has_curves else [])

    def nav(this: Path) -> list[tuple[str, Path | None]]:
        return [(text, None if path == this else path) for text, path in links]

    candidates = candidates_experiment(df, labels, verdicts, css)
    block = figure_block(png, png_path, svg_path, plotted=hip.Displays.PARALLEL_PLOT in candidates.enabledDisplays,
                         unscored=any(s != "ok" for s in status))
    pages = {out: page(candidates, f"{name} · candidates · mlp-sweep", header(f"mlp-sweep report: {name}", nav(out), block))}
    if has_curves:
        key = legend(labels, css, status) + CURVES_HELP
        pages[curves_path(out)] = page(curves_experiment(mean_lines, dict(zip(labels, css))), f"{name} · learning curves · mlp-sweep",
                                       header(f"Learning curves, mean over folds: {name}", nav(curves_path(out)), key))
        pages[folds_path(out)] = page(curves_experiment(fold_lines, dict(zip(labels, css)), per_fold=True),
                                      f"{name} · learning curves per fold · mlp-sweep",
                                      header(f"Learning curves, one line per fold: {name}", nav(folds_path(out)), key))
    if compared:
        store.write_comparison(comparison, out)
    store.atomic_write(png_path, png)
    store.atomic_write(svg_path, svg)
    for path in reversed(pages):  # the candidates page last: what it links to is already there
        store.atomic_write(path, pages[path])
    return comparison


def print_outcome(results_dir: Path) -> bool | None:
    """Print a results folder's ranked table, its report's path and any failures; True if a job failed, None
    (printing nothing) where the folder holds no aggregate: no job finished."""
    results_dir = Path(results_dir)
    if not (results_dir / f"{store.CV_RESULTS}.json").is_file():
        return None
    df = store.read_cv_results(results_dir)
    records = candidate_records(df, store.read_jobs(results_dir))
    df = df.assign(architecture=architectures([r.get("config", {}) for r in records]), n_parameters=[n_parameters(r) for r in records])
    comparison = store.read_comparison(results_dir) if len(df) > 1 else None
    if comparison is not None and [figures.key(p) for p in comparison["params"]] != [figures.key(p) for p in df["params"]]:
        comparison = None  # written for another set of rows (a rebuild was cut short): no verdicts rather than wrong ones
    verdicts = None if comparison is None else comparison["verdict"].tolist()
    print(f"\n{len(df)} candidate{'s' * (len(df) != 1)}, ranked ({results_dir}):\n{results.ranked_table(df, verdicts=verdicts)}")
    if comparison is not None:
        print(compare.verdict_line(comparison))
    print(f"report: {results_dir / REPORT}")
    summary = store.failure_summary(results_dir)
    if summary:
        print(f"\n{summary}", file=sys.stderr)
    return summary is not None


def output_path(dirs: list[Path], output: Path | None) -> Path:
    """Where the report goes: -o, else DIR/hiplot.html for one folder, else outputs/compare/<date>/<time>/hiplot.html."""
    if output is not None:
        return output
    if len(dirs) == 1:
        return dirs[0] / REPORT
    now = datetime.datetime.now()
    return Path("outputs", "compare", now.strftime("%Y-%m-%d"), now.strftime("%H-%M-%S"), REPORT)


def check_output(out: Path) -> None:
    """Refuse an output that is a folder, is not an .html page, or whose pages or figures would overwrite a file
    that is not a report's (an input such as cv_results.json, or the sweep's best_model.pt, through a link too),
    or whose folder cannot be written; then create its folder (as -o cmp/ab.html asks)."""
    if out.is_dir():
        raise ReportError(f"-o {out}: is a folder; give the path of an HTML file, e.g. -o {out / REPORT}")
    if out.suffix.lower() != ".html":
        raise ReportError(f"-o {out}: the report is an HTML page; give a path ending in .html, e.g. -o {out.with_suffix('.html')}")
    for path in (out, curves_path(out), folds_path(out), *summary_paths(out), *store.comparison_paths(out)):
        target = path.resolve()
        if target.is_file() and not (target.suffix.lower() in (".html", ".svg")
                                     or target.name.endswith(("summary.png", f"{store.COMPARISON}.csv", f"{store.COMPARISON}.json"))):
            raise ReportError(f"-o {out}: would overwrite {target}, which is not a report's page; choose another -o")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"-o {out}: cannot create its folder {out.parent} ({e.strerror})") from None
    try:  # the real test: the permission bits say nothing for root, or on a read-only mount
        tempfile.TemporaryFile(dir=out.parent).close()
    except OSError as e:
        raise ReportError(f"-o {out}: cannot write in folder {out.parent} ({e.strerror}); choose a writable folder with -o") from None


def main(argv: list[str] | None = None) -> int:
    """Command line: re-render or merge reports from saved results folders."""
    parser = argparse.ArgumentParser(prog="python -m src.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="results folder(s) holding cv_results.json")
    parser.add_argument("-o", "--output", type=Path, help=f"output HTML file (default: DIR/{REPORT} for one folder, "
                        f"outputs/compare/<date>/<time>/{REPORT} for several)")
    parser.add_argument("--rope", type=float, help="region of practical equivalence, +-ROPE in the metric's units "
                        f"(default: the first folder's compare.rope, else {compare.DEFAULTS['rope']})")
    parser.add_argument("--confidence", type=float, help="the probability a verdict needs, in (0.5, 1) "
                        f"(default: the first folder's compare.confidence, else {compare.DEFAULTS['confidence']})")
    args = parser.parse_args(argv)
    if args.rope is not None and not (args.rope >= 0 and math.isfinite(args.rope)):
        parser.error(f"--rope {args.rope}: must be a finite number >= 0")
    if args.confidence is not None and not 0.5 < args.confidence < 1:
        parser.error(f"--confidence {args.confidence}: must be between 0.5 and 1 (exclusive)")
    try:
        for d in args.dirs:
            if not (d / f"{store.CV_RESULTS}.json").is_file():
                raise ReportError(f"DIR={d}: no {store.CV_RESULTS}.json there; give a sweep folder or a run folder of src.sweep")
        out = output_path(args.dirs, args.output)
        check_output(out)
        settings = compare.settings(args.dirs[0])
        settings |= {k: v for k, v in (("rope", args.rope), ("confidence", args.confidence)) if v is not None}
        comparison = write_report(args.dirs, out, settings)
    except (ReportError, OSError) as e:
        print(f"Error: {e}" if isinstance(e, ReportError) else f"Error: cannot write the report: {e}", file=sys.stderr)
        return 2
    written = [p for p in (out, curves_path(out), folds_path(out), *summary_paths(out), *store.comparison_paths(out)) if p.is_file()]
    print(f"wrote {out.parent}/: {', '.join(p.name for p in written)}")
    if len(comparison) > 1:
        print(compare.verdict_line(comparison))
    return 0


if __name__ == "__main__":
    sys.exit(main())
