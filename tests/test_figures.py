"""The rules every view shares (src/figures.py): curves averaged over folds, labels, colours, log axes. The figure itself
is checked in tests/test_report.py."""
import numpy as np
import pandas as pd
from matplotlib import colormaps

from src import figures


def test_mean_curves_average_the_folds_that_reached_each_epoch():
    """A fold that diverged (null loss) and stopped early: each epoch averages the finite losses of the folds that have it."""
    histories = [{"epochs": [{"epoch": 1, "train_loss": 2.0, "dur": 0.1}, {"epoch": 2, "train_loss": 1.0, "dur": 0.1},
                             {"epoch": 3, "train_loss": 0.5, "dur": 0.1}]},
                 {"epochs": [{"epoch": 1, "train_loss": 4.0, "dur": 0.1}, {"epoch": 2, "train_loss": None, "dur": 0.1}]}]
    curves = figures.mean_curves(histories)
    assert set(curves) == {"train_loss"}  # epoch and dur are not curves
    epochs, mean, std = curves["train_loss"]
    np.testing.assert_array_equal(epochs, [1, 2, 3])
    np.testing.assert_allclose(mean, [np.mean([2.0, 4.0]), 1.0, 0.5])
    np.testing.assert_allclose(std, [np.std([2.0, 4.0]), 0.0, 0.0])


def test_labels_name_what_differs_and_tell_equal_ones_apart():
    df = pd.DataFrame({"param_module__num_units": [32, 32, 64], "param_optimizer__lr": [0.1, 0.01, 0.1], "param_seed": [0, 0, 0]})
    assert figures.candidate_labels(df) == ["784-32-16-10, lr=0.1", "784-32-16-10, lr=0.01", "784-64-32-10, lr=0.1"]
    twins = pd.DataFrame({"param_module__num_units": [8, 8, 16], "param_train__shuffle": [True, True, True], "param_cv__shuffle": [1, 2, 3]})
    assert figures.param_names(["param_train__shuffle", "param_cv__shuffle", "param_optimizer__lr"]) == {
        "param_train__shuffle": "train__shuffle", "param_cv__shuffle": "cv__shuffle", "param_optimizer__lr": "lr"}
    assert figures.candidate_labels(twins[["param_module__num_units"]]) == ["784-8-4-10 #0", "784-8-4-10 #1", "784-16-8-10"]
    deep = pd.DataFrame({"param_module__hidden_sizes": [[512], [256, 128], [128, 64, 32]]})
    assert figures.candidate_labels(deep) == ["784-512-10", "784-256-128-10", "784-128-64-32-10"]
    assert figures.candidate_labels(deep, ["20-512-3", None, None])[0] == "20-512-3"  # the config's input and classes


def test_the_pareto_front_keeps_what_nothing_smaller_beats():
    """A candidate is off the front when another has at most its parameters and at least its score, one of them strictly."""
    sizes, scores = [100, 200, 300, 400, 400, 50], [0.80, 0.85, 0.84, 0.90, 0.90, 0.70]
    assert figures.pareto_front(sizes, scores).tolist() == [True, True, False, True, True, True]
    assert figures.pareto_front([10, 10], [0.5, 0.6]).tolist() == [False, True]



def brute_force_front(sizes, scores) -> list[bool]:
    """The definition, pair by pair: i is on the front unless some j is no larger and no worse, and smaller or better."""
    return [not any(p <= sizes[i] and s >= scores[i] and (p < sizes[i] or s > scores[i]) for p, s in zip(sizes, scores))
            for i in range(len(sizes))]


def test_the_pareto_front_is_the_definitions_on_random_data_with_ties():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 60, 300):
        sizes, scores = rng.integers(1, 12, n).tolist(), rng.integers(0, 6, n) / 5  # few values: many ties in both
        assert figures.pareto_front(sizes, scores).tolist() == brute_force_front(sizes, scores)
    sizes, scores = rng.lognormal(10, 2, 500), rng.random(500)  # no ties
    assert figures.pareto_front(sizes, scores).tolist() == brute_force_front(sizes, scores)


def test_a_long_pareto_front_names_some_members_spread_along_it_the_smallest_and_best_among_them():
    from matplotlib.figure import Figure

    import big_grid
    df, _ = big_grid.big_frame(500, cost=True)
    labels = figures.candidate_labels(df)
    ax = Figure().subplots()
    figures.cost_panel(ax, df, labels, figures.candidate_colors(len(df), df["rank_test_accuracy"]), "accuracy")
    front = df[figures.pareto_front(df["n_parameters"], df["mean_test_accuracy"])].sort_values("n_parameters")
    named = [t.get_text() for t in ax.texts]
    assert len(front) > figures.MOST_NAMED and len(named) == figures.MOST_NAMED and set(named) <= {labels[i] for i in front.index}
    assert labels[front.index[0]] in named and labels[front.index[-1]] in named
    assert f"{len(front)} of 500 on the Pareto front, {figures.MOST_NAMED} named" in ax.get_title()
    assert "$" not in "".join(t.get_text() for t in ax.get_xticklabels())  # plain text, not mathtext (20k, 1M)

def test_a_cost_axis_within_one_decade_is_labelled_and_the_largest_name_stays_inside():
    """The main command's four MLPs span 25k to 235k parameters: less than a decade of a log axis still gets several
    labelled ticks (20k, 50k, 100k, 200k), and the largest candidate's name is written to its left, clear of the
    fit-time axis on the right."""
    from matplotlib.figure import Figure

    import big_grid
    df, _ = big_grid.big_frame(4, cost=True)
    df["n_parameters"] = [25_818, 52_138, 106_762, 235_146]
    df["mean_test_accuracy"] = [0.89, 0.90, 0.895, 0.905]  # the smallest, the second and the largest on the front
    labels = figures.candidate_labels(df)
    fig = Figure()
    ax = fig.subplots()
    figures.cost_panel(ax, df, labels, figures.candidate_colors(len(df), df["rank_test_accuracy"]), "accuracy")
    fig.canvas.draw()
    low, high = ax.get_xlim()
    shown = [t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high and t.get_text()]
    assert ax.get_xscale() == "log" and len(shown) >= 3, shown
    largest = next(t for t in ax.texts if t.get_text() == labels[3])
    assert largest.get_ha() == "right" and all(t.get_ha() == "left" for t in ax.texts if t is not largest)


def test_short_names_are_the_shortest_distinct_tails():
    assert figures.short_names(["/r/a/x/s", "/r/b/x/s", "/r/c/x/t"]) == {"/r/a/x/s": "a/x/s", "/r/b/x/s": "b/x/s", "/r/c/x/t": "c/x/t"}
    assert figures.short_names(["/runs/s1", "/runs/s2"]) == {"/runs/s1": "s1", "/runs/s2": "s2"}


def test_colours_are_matplotlibs_and_many_candidates_call_out_the_best_ranked():
    assert figures.candidate_colors(3) == [c[:3] for c in colormaps["tab10"].colors[:3]]
    ranks = np.arange(figures.MANY + 5, 0, -1)  # the last row ranks first
    colors = figures.candidate_colors(len(ranks), ranks)
    best_first = figures.top_rows(ranks)
    assert best_first == list(range(len(ranks) - 1, len(ranks) - 1 - figures.TOP, -1))
    assert [colors[i] for i in best_first] == [c[:3] for c in colormaps["tab10"].colors[:figures.TOP]]
    assert sum(c == figures.REST for c in colors) == len(ranks) - figures.TOP
    assert figures.css_rgb((1.0, 0.5, 0.0)) == "rgb(255, 128, 0)"


def test_log_axes_follow_the_ratio_rule_and_cut_exploding_values():
    assert figures.is_log_scaled([32, 64, 128, 256]) and figures.is_log_scaled([1e-3, 1e-2, None])
    assert not figures.is_log_scaled([8, 16, 32]) and not figures.is_log_scaled([0, 1, 100]) and not figures.is_log_scaled([5])
    low, high = figures.log_limits([1.0, 2.0, 3.0, 10.0])
    assert np.isclose(np.log10(low), -0.05) and np.isclose(np.log10(high), 1.05)
    low, high = figures.log_limits([1.0, 1.5, 2.0, 3.0, 1e30])  # one exploding loss: the top stops at the far-out fence
    q1, q3 = np.percentile(np.log10([1.0, 1.5, 2.0, 3.0, 1e30]), [25, 75])
    assert np.isclose(np.log10(high), q3 + 3 * (q3 - q1) + 0.05) and high < 1e10


def test_figure_bytes_are_what_matplotlibs_own_constrained_save_gives():
    """figure_bytes lays the figure out once and saves it without a layout engine (two draws, not four): the PNG and the
    SVG are byte for byte what savefig gives the same figure with its constrained layout engine (the SVG in the PNG's layout)."""
    import io
    import sys
    from pathlib import Path

    from matplotlib import rc_context

    sys.path.insert(0, str(Path(__file__).parent))
    import big_grid
    from src import compare

    df, curves = big_grid.big_frame(6, cost=True)
    args = (df, curves, figures.candidate_labels(df), figures.candidate_colors(6))
    ours = figures.figure_bytes(figures.summary_figure(*args, title="t", comparison=compare.compare(df)))
    fig = figures.summary_figure(*args, title="t", comparison=compare.compare(df))
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=figures.DPI)  # matplotlib lays it out in a draw of its own, then draws it
    fig.set_layout_engine("none")  # the SVG in that layout, not one computed again at the SVG's 72 dpi
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "mlp-sweep"}):
        fig.savefig(svg, format="svg", metadata={"Date": None})
    assert ours == (png.getvalue(), svg.getvalue())
