"""The summary figure of a sweep (summary.png / summary.svg), and how every view names, colours and scales candidates.

Left panel: mean ± std test score against the swept parameter, best candidate called out.
Then, where candidates differ in size: the score against the number of trainable parameters, with the Pareto
front marked and the fit time on a second axis.
Then: each candidate's paired difference to the best, its 95% interval and the ±rope band, with its verdict (src.compare).
Right panel: learning curves, the mean over folds per candidate with a ±std band.
Drawn with matplotlib's object-oriented API (`Figure`, rendered by Agg for PNG), never pyplot, so no
GUI backend or global figure state is involved when a sweep job or `python -m src.report` draws it.
matplotlib is imported where a figure is drawn, not with this module: every `python -m src.sweep`
imports the report, and one that stops at a config error never draws (that saves it 0.5 s).
"""
import inspect
import io
import json
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from src import cnn, results
from src.identity import job_key
from src.model import layer_sizes, module_sizes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOG_RATIO = 8  # positive values whose max/min reaches this (32..256, 1e-3..1e-1) get a log axis
MARKERS = "osD^vP*X"
VERDICT_COLORS = {"best": "black", "worse": "tab:red", "equivalent": "tab:green", "undecided": "tab:orange"}  # src.compare's verdicts
MOST_COMPARED = 30  # the difference panel shows the best-ranked this many candidates
MANY = 20  # beyond this many candidates a figure calls out the TOP best-ranked and draws the rest grey, without error bars or bands
TOP = 10
REST = (0.72, 0.72, 0.72)
MOST_NAMED = 8  # the cost panel names at most this many candidates of its Pareto front, spread along it
DPI = 100  # summary.png's resolution, and the one its layout is computed at
MOST_TICKS = 12  # a numeric x axis with more values than this gets matplotlib's own ticks, not one per value


def is_log_scaled(values) -> bool:
    """True if the finite values are all positive and span a factor of LOG_RATIO or more."""
    x = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)
    x = x[np.isfinite(x)]
    return len(x) > 1 and x.min() > 0 and x.max() / x.min() >= LOG_RATIO


def key(value) -> str:
    """A hashable, comparable form of a cell value (lists and dicts as sorted JSON)."""
    return job_key(results.plain(value))


def varied_params(df: pd.DataFrame) -> list[str]:
    """The param_* columns that take more than one value (a NaN or missing cell counts as a value)."""
    return [c for c in df.columns if c.startswith("param_") and len({key(v) for v in df[c]}) > 1]


def architecture(sizes) -> str:
    """Layer sizes, input to output, as every view writes them: 784-256-128-10."""
    return "-".join(str(int(n)) for n in sizes)


CNN_DEFAULTS = {name: p.default for name, p in inspect.signature(cnn.CNN).parameters.items()}
CNN_TARGET = f"{cnn.CNN.__module__}.{cnn.CNN.__qualname__}"  # module=cnn's _target_


def module_architecture(module: dict) -> str | None:
    """A job's module settings as every view names them: the MLP by its layer sizes (784-256-128-10); the CNN by its
    widths, input to output (the image's channel, each conv block's channels, the classes), and its kernel size
    (cnn 1-8-16-10 k3); another module by its class (TinyNet); None for no settings (a row that no finished job holds)."""
    sizes = module_sizes(module)
    if sizes is not None:
        return architecture(sizes)
    target = module.get("_target_")
    if target == CNN_TARGET:
        settings = CNN_DEFAULTS | module
        return f"cnn {architecture([cnn.IMAGE[0], *settings['channels'], settings['num_classes']])} k{int(settings['kernel_size'])}"
    return target.rsplit(".", 1)[-1] if isinstance(target, str) and target else None


def row_architecture(row: dict) -> str | None:
    """A row's architecture from its num_units or hidden_sizes param, with NeuralNet's default input and classes
    (where no config says otherwise); None where the row has neither."""
    units, hidden = row.get("param_module__num_units"), row.get("param_module__hidden_sizes")
    if isinstance(hidden, (list, tuple)):
        return architecture(layer_sizes(hidden_sizes=hidden))
    if isinstance(units, (int, float)) and not isinstance(units, bool) and math.isfinite(units):
        return architecture(layer_sizes(int(units)))
    return None


def param_names(columns: list[str]) -> dict[str, str]:
    """param_optimizer__lr -> lr: the last part of each routed name, or all of it where two share it (cv__shuffle, train__shuffle)."""
    last = [c.removeprefix("param_").split("__")[-1] for c in columns]
    return {c: name if last.count(name) == 1 else c.removeprefix("param_") for c, name in zip(columns, last)}


def value_text(column: str, value, name: str, architecture: str | None = None, named: list[str] | tuple[str, ...] = ()) -> str:
    """How a param value is written in labels: the row's architecture for a column it names (`named`:
    results.named_by_architecture: num_units, hidden_sizes, channels, kernel_size, module), else name=value."""
    if column in named and architecture is not None:
        return architecture
    if isinstance(value, float):
        value = f"{value:.4g}"
    return f"{name}={value}"


def candidate_labels(df: pd.DataFrame, architectures: list[str | None] | None = None) -> list[str]:
    """One label per row that tells the candidates apart: the swept values, prefixed by the sweep in a merge.

    `architectures`: each row's module as module_architecture() writes it (from its config); by default, from its
    num_units or hidden_sizes param. It stands for the swept params it names (the MLP's, the CNN's, module=mlp,cnn);
    with nothing swept (a single run), a row is named by its architecture.
    """
    records = df.to_dict(orient="records")
    architectures = architectures or [row_architecture(row) for row in records]
    named = results.named_by_architecture(df, architectures)
    swept = varied_params(df)
    sweeps = None
    if "sweep" in df and df["sweep"].nunique() > 1:  # the sweep's name stands for what is constant within each sweep
        sweeps = short_names(df["sweep"])
        swept = [c for c in swept if any(len({key(v) for v in rows[c]}) > 1 for _, rows in df.groupby("sweep"))]
    names = param_names(swept)
    labels = []
    for i, row in enumerate(records):
        parts = list(dict.fromkeys(value_text(c, row[c], names[c], architectures[i], named) for c in swept if not is_missing(row[c])))
        if not parts and architectures[i] is not None:
            parts = [architectures[i]]
        label = ", ".join(parts) or f"candidate {i}"
        labels.append(f"{sweeps[row['sweep']]}: {label}" if sweeps else label)
    # two rows that still share a label (a param outside the grid differs) get their row number
    return [f"{label} #{i}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def short_names(paths) -> dict[str, str]:
    """Each distinct path -> its shortest tail of folder names that no other path shares (a/b/s1 -> s1)."""
    paths = sorted({str(p) for p in paths})
    parts = {p: p.rstrip("/").split("/") for p in paths}
    for n in range(1, max((len(v) for v in parts.values()), default=1) + 1):
        tails = {p: "/".join(v[-n:]) for p, v in parts.items()}
        if len(set(tails.values())) == len(tails):
            return tails
    return {p: p for p in paths}


def candidate_colors(n: int, ranks=None) -> list[tuple[float, float, float]]:
    """n distinct RGB colours (tab10, or tab20 beyond 10 candidates); beyond MANY candidates, given their ranks,
    the TOP best-ranked get tab10's colours and the rest REST grey: 500 colours cannot be told apart."""
    from matplotlib import colormaps

    if n > MANY and ranks is not None:
        colors = [REST] * n
        for j, i in enumerate(top_rows(ranks)):
            colors[i] = colormaps["tab10"].colors[j][:3]
        return colors
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap.colors[i % len(cmap.colors)][:3] for i in range(n)]


def top_rows(ranks) -> list[int]:
    """The row numbers of the TOP best-ranked candidates, best first (unscored ones rank last)."""
    return [int(i) for i in np.argsort(np.asarray(ranks, dtype=float), kind="stable")[:TOP]]


def css_rgb(color: tuple[float, float, float]) -> str:
    """An RGB tuple in 0..1 as CSS rgb(r, g, b), the form HiPlot's categorical colours need."""
    return "rgb({}, {}, {})".format(*(round(255 * c) for c in color))


def mean_curves(histories: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per history entry (train_loss, valid_loss, ...): (epochs, mean over folds, std over folds).

    Folds can have different lengths (a diverged fold stops early): each epoch averages the folds
    that reached it, and NaN (a diverged loss, stored as null) is left out of the mean.
    """
    names = sorted({k for h in histories for row in h["epochs"] for k, v in row.items()
                    if isinstance(v, (int, float, type(None))) and k not in ("epoch", "dur") and not k.endswith(("_best", "_count"))})
    n_epochs = max((len(h["epochs"]) for h in histories), default=0)
    out = {}
    for name in names:
        grid = np.full((len(histories), n_epochs), np.nan)  # (folds, epochs)
        for i, h in enumerate(histories):
            for j, row in enumerate(h["epochs"]):
                grid[i, j] = np.nan if row.get(name) is None else row[name]
        seen = np.isfinite(grid).any(axis=0)
        if not seen.any():
            continue
        out[name] = (np.arange(1, n_epochs + 1)[seen], np.nanmean(grid[:, seen], axis=0), np.nanstd(grid[:, seen], axis=0))
    return out


def plain_text(text: str) -> str:
    """Text that matplotlib draws as it is: a `$` would otherwise start mathtext (and a bad one raises)."""
    return str(text).replace("$", r"\$")


def is_missing(value) -> bool:
    """None or NaN: a cell with no value."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def is_numeric(values) -> bool:
    """True if every value is an int or float (not a bool) and none is missing: a column a numeric axis can show."""
    values = list(values)
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and not is_missing(v) for v in values)


def x_param(df: pd.DataFrame, swept: list[str]) -> str | None:
    """The parameter on the score panel's x axis: one that sets the layers (num_units, hidden_sizes, channels, kernel_size)
    if swept, else the first numeric swept param."""
    for column in results.ARCHITECTURE_PARAMS:
        if column in swept:
            return column
    return ([c for c in swept if is_numeric(df[c])] or swept or [None])[0]


def best_callout(df: pd.DataFrame, labels: list[str], metric: str, comparison: pd.DataFrame | None = None) -> str:
    """The best candidate, its score, and how the others compare with it (the verdicts of src.compare)."""
    scored = df[f"mean_test_{metric}"].notna()
    if not scored.any():
        return "no candidate was scored"
    order = df[scored].sort_values([f"rank_test_{metric}", f"mean_test_{metric}"], ascending=[True, False], kind="stable").index
    best = order[0]
    mean, std = df.at[best, f"mean_test_{metric}"], df.at[best, f"std_test_{metric}"]
    text = f"best: {labels[best]}  {mean:.4g} ± {std:.2g}"
    if len(order) == 1:
        return text + " (the only scored candidate)"
    if comparison is None:
        return text
    counts = comparison["verdict"].value_counts()
    verdicts = ", ".join(f"{counts[v]} {v}" for v in VERDICT_COLORS if v != "best" and v in counts)
    return text + f"\nagainst it: {verdicts or 'no candidate on the same splits'} (confidence {comparison['confidence'].iloc[0]:g})"


def x_axis(ax, df: pd.DataFrame, x_col: str | None, scored: pd.DataFrame, labels: list[str], architectures: list[str | None]) -> pd.Series:
    """Set up the score panel's x axis and return each row's x position.

    A numeric param is placed by value (log where it spans decades) with a tick per value, num_units and kernel_size
    written as architectures; anything else (or the candidates, with nothing swept) by sorted category, hidden_sizes,
    channels and the module (module=mlp,cnn) as architectures in order of their parameter count.
    """
    arch = x_col in results.named_by_architecture(df, architectures)
    if x_col is not None and is_numeric(df[x_col]):
        xs = df[x_col].astype(float)
        values = sorted(xs[scored.index].unique())
        if is_log_scaled(values):
            ax.set_xscale("log")
        ax.minorticks_off()  # a log axis would add unlabelled ticks between the values
        named = {x: architectures[i] or f"{x:.4g}" for i, x in xs[scored.index].items()}  # value -> its candidates' architecture
        if len(values) > MOST_TICKS:  # a tick per value would be a black smear (500 widths)
            ax.set_xlabel("num_units (first hidden layer; the second has half)" if x_col == "param_module__num_units" else x_col.removeprefix("param_"))
            return xs
        ax.set_xticks(values, [named[v] if arch else f"{v:.4g}" for v in values],
                      rotation=20 if len(values) > 3 else 0, ha="right" if len(values) > 3 else "center")
        ax.set_xlabel("architecture [layer sizes, input to output]" if arch else x_col.removeprefix("param_"))
        return xs
    names = df[x_col].map(key) if x_col else pd.Series(labels, index=df.index)
    text = {names[i]: (architectures[i] if arch and architectures[i] else plain_text(json.loads(names[i])) if x_col else names[i])
            for i in scored.index}
    size = pd.to_numeric(df["n_parameters"], errors="coerce").fillna(0) if arch and "n_parameters" in df else pd.Series(0, index=df.index)
    ticks = sorted(text, key=lambda t: (size[names == t].min(), t))  # architectures: the smallest first
    ax.set_xticks(range(len(ticks)), [text[t] for t in ticks], rotation=20, ha="right")
    ax.set_xlabel("architecture [layer sizes, input to output]" if arch else x_col.removeprefix("param_") if x_col else "candidate")
    return names.map({t: i for i, t in enumerate(ticks)}).astype(float)


def score_panel(ax, df: pd.DataFrame, labels: list[str], colors: list, architectures: list[str | None], metric: str, n_folds: int,
                comparison: pd.DataFrame | None = None) -> None:
    """Mean ± std test score against the swept parameter; unscored candidates left out and named in a note."""
    mean, std = f"mean_test_{metric}", f"std_test_{metric}"
    swept = varied_params(df)
    x_col = x_param(df, swept)
    series_cols = (["sweep"] if "sweep" in df and df["sweep"].nunique() > 1 else []) + [c for c in swept if c != x_col]
    scored = df[df[mean].notna()]
    xs = x_axis(ax, df, x_col, scored, labels, architectures)
    connect = x_col is not None and is_numeric(df[x_col])  # a line between categories would suggest an order they do not have
    sweeps = short_names(df["sweep"]) if "sweep" in series_cols else {}
    names, named = param_names(swept), results.named_by_architecture(df, architectures)
    groups = list(scored.groupby([scored[c].map(key) for c in series_cols], sort=True)) if series_cols else [((), scored)]
    for k, (_, rows) in enumerate(groups):
        rows = rows.assign(_x=xs[rows.index]).sort_values("_x")
        marker = MARKERS[k % len(MARKERS)]
        if connect:
            ax.plot(rows["_x"], rows[mean], color="0.6", lw=1 if len(rows) <= MANY else 0.5, ls="-" if k == 0 else (0, (4, 2 + k)), zorder=1)
        rest = rows[[tuple(colors[i]) == REST for i in rows.index]] if len(df) > MANY else rows.iloc[:0]
        if len(rest):  # one scatter, no error bars: the many that are not called out
            ax.scatter(rest["_x"], rest[mean], s=10, marker=marker, color=REST, zorder=1.5, linewidths=0)
        for i, row in rows.drop(index=rest.index).iterrows():
            ax.errorbar(row["_x"], row[mean], yerr=row[std], fmt=marker, ms=7, color=colors[i], capsize=4, zorder=2)
        if len(groups) > 1:
            text = ", ".join(value_text(c, rows.iloc[0][c], names[c], architectures[rows.index[0]], named) for c in series_cols if c != "sweep")
            text = f"{sweeps[rows.iloc[0]['sweep']]}: {text}" if sweeps else text
            ax.plot([], [], color="0.3", marker=marker, ls="-", lw=1, label=plain_text(text))  # the series' legend entry
    if len(df) > MANY:
        ax.scatter([], [], s=10, color=REST, label=f"the other {len(df) - TOP} (no error bars)")
        ax.legend(fontsize=8, loc="lower right", title=f"in colour: the {TOP} best-ranked", title_fontsize=8)
    if len(groups) > 1:  # beside the panel, not over the data (the best point was under it)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), title="series", title_fontsize=8, borderaxespad=0)
    if len(scored):
        best = scored.sort_values([f"rank_test_{metric}", mean], ascending=[True, False], kind="stable").index[0]
        ax.plot(xs[best], scored.at[best, mean], "o", ms=18, mfc="none", mec="black", mew=1.5, zorder=3)
        ax.annotate("best", (xs[best], scored.at[best, mean]), xytext=(12, 10), textcoords="offset points", fontsize=9)
    else:
        ax.set_yticks([])
    unscored = df.index.difference(scored.index)
    if len(unscored):
        named = "; ".join(f"{labels[i]} ({df.at[i, 'status']})" if "status" in df else labels[i] for i in unscored[:4])
        more = f" and {len(unscored) - 4} more" if len(unscored) > 4 else ""
        ax.margins(y=0.14)  # room at the bottom for the note
        ax.text(0.01, 0.01, f"not scored, left out: {named}{more}", transform=ax.transAxes, fontsize=8, color="tab:red",
                va="bottom", ha="left", wrap=True, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.set_ylabel(f"{metric}: mean ± std over {n_folds} splits")
    ax.set_title(f"{metric} (cross-validated) vs {ax.get_xlabel().split(' [')[0]}\n{best_callout(df, labels, metric, comparison)}",
                 fontsize=10)


def difference_panel(ax, comparison: pd.DataFrame, labels: list[str], colors: list) -> None:
    """Each compared candidate's mean paired difference to the best (its score minus the best's), with its 95%
    interval, coloured by verdict, over the ±rope band of practical equivalence."""
    rank = next(c for c in comparison.columns if c.startswith("rank_test_"))
    shown = comparison[comparison["verdict"].notna()].sort_values([rank], kind="stable")
    most = TOP if len(comparison) > MANY else MOST_COMPARED
    left_out = len(shown) - most
    shown = shown.iloc[:most]
    rope, confidence, metric = (comparison[c].iloc[0] for c in ("rope", "confidence", "metric"))
    ax.axvspan(-rope, rope, color="0.85", zorder=0, label=f"±rope {rope:g}: practically equivalent")
    ax.axvline(0, color="0.4", lw=0.8, zorder=1)
    for y, (i, row) in enumerate(shown.iterrows()):
        d, low, high = -row["mean_difference"], -row["ci_high"], -row["ci_low"]  # the candidate minus the best
        ax.errorbar(d, y, xerr=[[d - low], [high - d]], fmt="o", ms=6, color=colors[i], ecolor=colors[i], capsize=3, zorder=2)
        if row["verdict"] == "best":
            note = "best"
        else:
            prob = row["p_best_better"] if row["verdict"] == "worse" else row["p_equivalent"] if row["verdict"] == "equivalent" \
                else max(row["p_best_better"], row["p_equivalent"])
            note = f"{row['verdict']} (P={prob:.2f})"
        ax.annotate(note, (1.0, y), xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points",
                    fontsize=8, va="center", color=VERDICT_COLORS[row["verdict"]])
    ax.set_yticks(range(len(shown)), [labels[i] for i in shown.index], fontsize=8)
    ax.set_ylim(len(shown) - 0.5, -0.5)  # the best on top
    ax.set_xlabel(f"{metric} difference to the best (paired over the same splits)")
    more = f"; {left_out} more not shown" if left_out > 0 else ""
    ax.set_title(f"difference to the best: mean and 95% interval\nverdict at P ≥ {confidence:g}, corrected t{more}", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3, axis="x")
    ax.grid(alpha=0.3)


def log_limits(values: list[float], decades: float = 4) -> tuple[float, float]:
    """y limits of a log axis: the data's range, but where it spans more than `decades` the top is cut at
    Tukey's far-out fence (Q3 + 3 IQR of log10 values), so a few exploding points leave the rest readable."""
    logs = np.log10([v for v in values if v > 0 and math.isfinite(v)])
    top = logs.max()
    if top - logs.min() > decades:
        q1, q3 = np.percentile(logs, [25, 75])
        top = min(top, q3 + 3 * max(q3 - q1, 0.1))
    return 10 ** (logs.min() - 0.05), 10 ** (top + 0.05)


def curves_panel(ax, curves: list[dict | None], labels: list[str], colors: list, status: list[str]) -> None:
    """Learning curves: per candidate the mean over folds (line) and ±std (band); validation loss dashed."""
    entries, values, has_valid, cut = 0, [], False, ""
    rest = [i for i, c in enumerate(colors) if tuple(c) == REST] if len(curves) > MANY else []
    lines = [np.column_stack(c["train_loss"][:2]) for i, c in enumerate(curves) if i in set(rest) and c and "train_loss" in c]
    if lines:  # the many not called out: one collection of thin grey lines, no bands, no legend entries of their own
        from matplotlib.collections import LineCollection

        ax.add_collection(LineCollection(lines, colors=[REST], linewidths=0.6, zorder=1, label=f"the other {len(rest)}"))
        values += [v for line in lines for v in line[:, 1]]
        ax.autoscale_view()
    for i, c in enumerate(curves):
        if i in set(rest):
            continue
        note = f" ({status[i]})" if status[i] != "ok" else ""
        if not c or "train_loss" not in c:
            if c is not None:  # it trained, but no epoch ended with a finite loss
                ax.plot([], [], color=colors[i], lw=2, ls=":", label=f"{labels[i]}{note}: no finite loss")
                entries += 1
            continue
        for name, style in (("train_loss", "-"), ("valid_loss", "--")):
            if name not in c:
                continue
            epochs, mean, std = c[name]
            ax.plot(epochs, mean, ls=style, color=colors[i], lw=1.8, marker="." if len(epochs) < 3 else None,
                    label=labels[i] + note if name == "train_loss" else None)
            ax.fill_between(epochs, mean - std, mean + std, color=colors[i], alpha=0.15, lw=0)
            values += list(mean)
            has_valid |= name == "valid_loss"
        entries += 1
    if not values:
        ax.text(0.5, 0.5, "no training history to show", transform=ax.transAxes, ha="center", va="center")
    if is_log_scaled(values):  # one wild curve (a first-epoch loss of 600) would flatten the others on a linear axis
        ax.set_yscale("log")
        low, high = log_limits(values)
        ax.set_ylim(low, high)  # the ±std band of a curve near 0 must not stretch the axis down
        above = [v for v in values if v > high]
        cut = f"\n{len(above)} points above {high:.3g} are cut off (up to {max(above):.3g})" if above else ""
    if entries:
        ax.plot([], [], color="0.3", ls="-", label="train loss")  # line styles' legend entries
        if has_valid:
            ax.plot([], [], color="0.3", ls="--", label="validation loss")
        outside = entries > 6
        ax.legend(fontsize=8, loc="upper left" if outside else "best", bbox_to_anchor=(1.01, 1) if outside else None,
                  title="candidate", title_fontsize=8)
    ax.locator_params(axis="x", integer=True)  # epochs
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss: mean ± std over folds")
    ax.set_title("learning curves (mean over folds, band: ±1 std)" + cut, fontsize=10)
    ax.grid(alpha=0.3)


def pareto_front(n_parameters, scores) -> np.ndarray:
    """Which candidates no other dominates: none has at most as many parameters and at least the score, one of them strictly.

    That is: the best score among the candidates of its size, and better than every smaller one's. One sort, O(n log n)
    (a comparison of every pair would hold n² booleans: 300 MB for 10,000 candidates)."""
    p, s = np.asarray(n_parameters, dtype=float), np.asarray(scores, dtype=float)
    sizes, group = np.unique(p, return_inverse=True)  # group: each candidate's size, as an index into the sorted sizes
    best = np.full(len(sizes), -np.inf)
    np.maximum.at(best, group, s)  # the best score of each size
    smaller = np.concatenate([[-np.inf], np.maximum.accumulate(best)[:-1]])  # the best score of all smaller sizes
    return (s == best[group]) & (s > smaller[group])


def has_cost(df: pd.DataFrame, metric: str) -> bool:
    """Whether a cost panel has something to show: two or more parameter counts among the scored candidates."""
    if "n_parameters" not in df:
        return False
    counts = pd.to_numeric(df["n_parameters"], errors="coerce")[df[f"mean_test_{metric}"].notna()]
    return counts.nunique() > 1


def cost_panel(ax, df: pd.DataFrame, labels: list[str], colors: list, metric: str) -> None:
    """Mean ± std test score against the number of trainable parameters, the Pareto front marked (no candidate is
    both smaller and at least as good), and the mean fit time per fold on a second y axis."""
    mean, std = f"mean_test_{metric}", f"std_test_{metric}"
    counts = pd.to_numeric(df["n_parameters"], errors="coerce")
    scored = df[df[mean].notna() & counts.notna()].assign(_p=counts)
    front = scored[pareto_front(scored["_p"], scored[mean])].sort_values(["_p", mean], ascending=[True, False])
    from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator

    # Plain tick labels (20k, 1M; 0.01 s), no minor ticks: the log axes' default 10^4 labels are mathtext, parsed once per
    # label and output (PNG, SVG), and minor ticks are laid out unlabelled; at 500 candidates spanning decades that was
    # half of the figure's draw time.
    if is_log_scaled(scored["_p"]):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 20k, 50k, 100k: a label or more within one decade
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    times = ax.twinx()  # drawn first, under the scores
    times.scatter(scored["_p"], scored["mean_fit_time"], marker="x", s=18, color="0.55", zorder=1, label="fit time per fold (s, right axis)")
    if is_log_scaled(scored["mean_fit_time"]):
        times.set_yscale("log")
        times.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.minorticks_off()
    times.minorticks_off()
    times.set_ylabel("mean fit time per fold (s)", color="0.4")
    times.tick_params(axis="y", colors="0.4")
    ax.set_zorder(times.get_zorder() + 1)
    ax.patch.set_visible(False)  # the score axis on top, its background clear
    rest = scored[[tuple(colors[i]) == REST for i in scored.index]] if len(df) > MANY else scored.iloc[:0]
    if len(rest):  # one scatter, no error bars: the many that are not called out
        ax.scatter(rest["_p"], rest[mean], s=10, color=REST, zorder=1.5, linewidths=0)
    for i, row in scored.drop(index=rest.index).iterrows():  # off the front: paler
        ax.errorbar(row["_p"], row[mean], yerr=row[std], fmt="o", ms=7, color=colors[i], capsize=3, alpha=1 if i in front.index else 0.45, zorder=2)
    ax.step(front["_p"], front[mean], where="post", color="black", lw=1.2, zorder=3, label="Pareto front")
    ax.scatter(front["_p"], front[mean], s=150, facecolors="none", edgecolors="black", lw=1.2, zorder=3)
    named = front.iloc[np.unique(np.linspace(0, len(front) - 1, min(len(front), MOST_NAMED)).round().astype(int))] if len(front) else front
    for i, row in named.iterrows():  # spread along the front, its smallest and its best always among them
        right = i == named["_p"].idxmax() and len(named) > 1  # the largest's name to its left, clear of the right axis
        ax.annotate(labels[i], (row["_p"], row[mean]), xytext=(-6 if right else 6, -12), textcoords="offset points", fontsize=8,
                    ha="right" if right else "left")
    handles = ax.get_legend_handles_labels()[0] + times.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(f"{metric}: mean ± std")
    some = f", {len(named)} named" if len(named) < len(front) else ""
    ax.set_title(f"{metric} vs size: {len(front)} of {len(scored)} on the Pareto front{some}\n(circled: no other candidate is both "
                 "smaller and at least as good)", fontsize=10)
    ax.grid(alpha=0.3)


def summary_figure(df: pd.DataFrame, curves: list[dict | None], labels: list[str], colors: list,
                   architectures: list[str | None] | None = None, title: str = "", comparison: pd.DataFrame | None = None) -> "Figure":
    """The summary of a results frame: scores against the swept parameter, scores against the number of parameters
    (where candidates differ in it: an `n_parameters` column), the differences to the best (where two or more
    candidates were compared: src.compare), and learning curves.

    df: cv_results_ rows (index 0..n-1); curves, labels, colors, architectures: one per row (curves: mean_curves() or None;
    architectures: module_architecture() of each row's config, default from its params); comparison: src.compare.compare(df), row for row.
    """
    from matplotlib.figure import Figure

    metric = results.metric_names(df)[0]
    labels, title = [plain_text(label) for label in labels], plain_text(title)
    architectures = architectures or [row_architecture(row) for row in df.to_dict(orient="records")]
    n_folds = len([c for c in df.columns if c.startswith("split") and c.endswith(f"_test_{metric}")])
    compared = comparison is not None and comparison["verdict"].isin(["worse", "equivalent", "undecided"]).any()
    cost = has_cost(df, metric)
    panels = ["score", *(["cost"] if cost else []), *(["difference"] if compared else []), "curves"]
    widths = {"score": 1, "cost": 1, "difference": 0.85, "curves": 1.15}
    fig = Figure(figsize=(7 * sum(widths[p] for p in panels), 5.4), dpi=DPI, layout="constrained")
    axes = dict(zip(panels, fig.subplots(1, len(panels), width_ratios=[widths[p] for p in panels])))
    score_panel(axes["score"], df, labels, colors, architectures, metric, n_folds, comparison)
    if cost:
        cost_panel(axes["cost"], df, labels, colors, metric)
    if compared:
        difference_panel(axes["difference"], comparison, labels, colors)
    curves_panel(axes["curves"], curves, labels, colors, list(df["status"]) if "status" in df else ["ok"] * len(df))
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def figure_bytes(fig: "Figure") -> tuple[bytes, bytes]:
    """The figure as (PNG, SVG) bytes; the SVG keeps its text as <text> elements, so titles stay searchable."""
    from matplotlib import rc_context

    # Lay the figure out once, then save it with no layout engine at all: savefig draws a figure that has one (even
    # set_layout_engine("none")'s placeholder) twice, once to lay it out and once to render; the SVG keeps the PNG's layout.
    if fig.get_layout_engine() is not None:  # None: laid out already (a figure saved before)
        fig.get_layout_engine().execute(fig)
    with rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):  # else None means that engine
        fig.set_layout_engine(None)
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI)
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "mlp-sweep"}):  # fixed ids: the same results give the same file
        fig.savefig(svg, format="svg", metadata={"Date": None})
    return png.getvalue(), svg.getvalue()
