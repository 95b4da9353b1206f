"""A large grid's results, built in memory: module.num_units=range(8,4000,8) (500 candidates), for the tests of
large reports and `python tests/big_grid.py [N]`, which times the summary figure."""
import sys
import time

import numpy as np
import pandas as pd

from src import compare, figures, model, results

def big_frame(n: int = 500, folds: int = 3, epochs: int = 25, seed: int = 0, cost: bool = False) -> tuple[pd.DataFrame, list[dict]]:
    """cv_results rows of n widths 8, 16, ... (scores rising with log width, fold noise 0.01), and each one's mean curves;
    with `cost`, each one's n_parameters too (as the report reads them from job.json: the figure gets its cost panel)."""
    rng = np.random.default_rng(seed)
    units = np.arange(8, 8 * n + 8, 8)[:n]
    base = 0.85 + 0.05 * np.log(units) / np.log(units.max())
    splits = base[:, None] + rng.normal(0, 0.01, (n, folds))
    df = pd.DataFrame({"params": [{"module__num_units": int(u)} for u in units], "param_module__num_units": units})
    for k in range(folds):
        df[f"split{k}_test_accuracy"] = splits[:, k]
    df["mean_test_accuracy"], df["std_test_accuracy"] = splits.mean(1), splits.std(1)
    df["mean_train_accuracy"] = base + 0.02
    df["mean_fit_time"] = units / 1000
    df["status"] = "ok"
    if cost:
        df["n_parameters"] = [model.parameter_count(model.layer_sizes(int(u))) for u in units]
    df = results.rank(df)
    curves = [{"train_loss": (np.arange(1, epochs + 1), 2.3 / np.arange(1, epochs + 1) ** (0.5 + 0.1 * b), np.full(epochs, 0.01))} for b in base]
    return df, curves

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    df, curves = big_frame(n, cost=True)  # with its cost panel, as a sweep's report draws it
    labels = figures.candidate_labels(df)
    comp = compare.compare(df)
    t = time.perf_counter()
    fig = figures.summary_figure(df, curves, labels, figures.candidate_colors(n, df['rank_test_accuracy']), title="big", comparison=comp)
    png, svg = figures.figure_bytes(fig)
    print(f"{n} candidates: {time.perf_counter() - t:.2f} s, png {len(png)} svg {len(svg)}")
