"""HiPlot pages from saved results: one line per candidate, and the per-epoch learning curves.

    python -m src.report DIR [DIR ...] [-o FILE]

re-renders the report of one results folder (a sweep folder or a single run's folder), or merges
several into one comparison page, with a `sweep` column that tells them apart.
"""
import argparse
import html
import json
import re
import sys
from pathlib import Path
from urllib.parse import quote

import hiplot as hip
import pandas as pd

from src import results

REPORT = "hiplot.html"


def shown(values: dict) -> dict:
    """A datapoint's values made safe for HiPlot: plain Python, and every string HTML-escaped.

    HiPlot's table renders cells as HTML, so a param value or an error message holding markup would
    run in the reader's browser; escaped, it shows as the text it is.
    """
    def one(v):
        v = results.plain(v)
        return html.escape(v) if isinstance(v, str) else v
    return {html.escape(str(k)): one(v) for k, v in values.items()}


def candidates_experiment(df: pd.DataFrame) -> hip.Experiment:
    """One datapoint per candidate: swept params, split/mean/std/rank test scores, train mean, fit time."""
    keep = [c for c in df.columns if c == "sweep" or c.startswith("param_")]
    keep += [c for c in df.columns if c.startswith(("split", "mean_test_", "std_test_", "rank_test_")) and "_train_" not in c]
    keep += [c for c in df.columns if c.startswith("mean_train_")] + ["mean_fit_time"]
    keep += [c for c in ("status", "error") if c in df]
    exp = hip.Experiment()
    for i, row in enumerate(df[keep].to_dict(orient="records")):
        exp.datapoints.append(hip.Datapoint(uid=str(i), values=shown(row)))
    metric = results.metric_names(df)[0]
    exp.colorby = f"mean_test_{metric}"
    exp.display_data(hip.Displays.PARALLEL_PLOT).update({"order": keep[::-1], "hide": ["uid", "from_uid", "error"]})  # HiPlot lays `order` out right to left
    exp.display_data(hip.Displays.TABLE).update({"order_by": [[f"rank_test_{metric}", "asc"]], "hide": ["uid", "from_uid"]})
    return exp


def curves_experiment(histories: list[dict]) -> hip.Experiment:
    """One datapoint per (candidate, fold, epoch), each linked to its previous epoch so the XY view draws curves."""
    exp = hip.Experiment()
    for h in histories:
        prefix = f"{h.get('sweep', '')}/{h['job']}/fold{h['fold']}"
        previous = None
        for row in h["epochs"]:
            uid = f"{prefix}/{row['epoch']}"
            values = {**({"sweep": h["sweep"]} if "sweep" in h else {}), "job": h["job"], "fold": h["fold"]}
            values.update({f"param_{k}": v for k, v in h["params"].items()})
            values.update(row)
            exp.datapoints.append(hip.Datapoint(uid=uid, from_uid=previous, values=shown(values)))
            previous = uid
    exp.colorby = "job"
    bookkeeping = ["uid", "from_uid", "train_batch_count", "valid_batch_count", "train_loss_best", "valid_loss_best", "valid_acc_best"]
    exp.display_data(hip.Displays.PARALLEL_PLOT).update({"hide": bookkeeping})
    exp.display_data(hip.Displays.TABLE).update({"hide": bookkeeping})
    exp.display_data(hip.Displays.XY).update({"axis_x": "epoch", "axis_y": "train_loss", "lines_thickness": 1.4, "dots_thickness": 2.0})
    return exp


def read_histories(results_dir: Path) -> list[dict]:
    """Every fold history saved in a results folder (its own history.json and its job folders')."""
    results_dir = Path(results_dir)
    found = []
    for directory in [results_dir, *results.job_dirs(results_dir)]:
        path = directory / results.HISTORY
        if path.is_file():
            job = "0" if directory == results_dir else directory.name
            found += [{**h, "job": job} for h in json.loads(path.read_text())]
    return found


def curves_path(out: Path) -> Path:
    """Where the learning-curves page of report `out` goes: beside it, `<stem>_curves.html`."""
    return out.with_name(f"{out.stem}_curves.html")


def write_report(results_dirs: list[Path], out: Path) -> Path:
    """Render the candidates page at `out` and the learning curves beside it; returns `out`."""
    results_dirs = [Path(d) for d in results_dirs]
    frames, histories = [], []
    for d in results_dirs:
        df, hs = results.read_cv_results(d), read_histories(d)
        if len(results_dirs) > 1:
            df.insert(0, "sweep", str(d))
            hs = [{**h, "sweep": str(d)} for h in hs]
        frames.append(df)
        histories += hs
    df = pd.concat(frames, ignore_index=True)
    if len(results_dirs) > 1:
        df = results.rank(df)
    out = Path(out)
    curves = curves_path(out)
    page = candidates_experiment(df).to_html()
    if any(h["epochs"] for h in histories):  # none when every job failed before its first epoch
        results.atomic_write(curves, curves_experiment(histories).to_html())
        link = (f'<p style="margin:8px;font-family:sans-serif"><a href="{html.escape(quote(curves.name))}">'
                f"Learning curves: per-epoch training history of every candidate and fold</a></p>")
        page = re.sub(r"<body[^>]*>", lambda m: m.group(0) + link, page, count=1)
    results.atomic_write(out, page)
    return out


def print_outcome(results_dir: Path) -> bool:
    """Print a results folder's ranked table, its report's path and any failures; True if a job failed."""
    results_dir = Path(results_dir)
    df = results.read_cv_results(results_dir)
    print(f"\n{len(df)} candidate{'s' * (len(df) != 1)}, ranked ({results_dir}):\n{results.ranked_table(df)}")
    print(f"report: {results_dir / REPORT}")
    summary = results.failure_summary(results_dir)
    if summary:
        print(f"\n{summary}", file=sys.stderr)
    return summary is not None


def main(argv: list[str] | None = None) -> int:
    """Command line: re-render or merge reports from saved results folders."""
    parser = argparse.ArgumentParser(prog="python -m src.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="results folder(s) holding cv_results.json")
    parser.add_argument("-o", "--output", type=Path, help=f"output HTML file (default: DIR/{REPORT} for one folder, ./{REPORT} for several)")
    args = parser.parse_args(argv)
    for d in args.dirs:
        if not (d / f"{results.CV_RESULTS}.json").is_file():
            parser.error(f"DIR={d}: no {results.CV_RESULTS}.json there; give a sweep folder or a run folder of src.sweep")
    out = args.output or (args.dirs[0] / REPORT if len(args.dirs) == 1 else Path(REPORT))
    if not out.parent.is_dir():
        parser.error(f"-o {out}: folder {out.parent} does not exist")
    write_report(args.dirs, out)
    print(f"wrote {out} and {curves_path(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
