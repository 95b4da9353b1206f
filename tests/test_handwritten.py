"""src/handwritten.py, the bench's hand-written reference, and `python -m src.bench --vs-handwritten` around it."""
import pytest
import torch
from sklearn.model_selection import GridSearchCV

from src import bench, handwritten


def test_the_handwritten_script_is_the_main_commands_grid_search_by_hand(capsys):
    search = handwritten.main(["--limit", "300", "--epochs", "1"])
    assert isinstance(search, GridSearchCV) and search.refit is True and search.cv.get_n_splits() == 3
    assert [p["module__num_units"] for p in search.cv_results_["params"]] == [32, 64, 128, 256]
    assert search.best_params_ in search.cv_results_["params"]
    linears = [m for m in search.best_estimator_.module_.modules() if isinstance(m, torch.nn.Linear)]
    n = search.best_params_["module__num_units"]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, n), (n, n // 2), (n // 2, 10)]
    # the MLP returns logits, so the loss is cross-entropy: skorch's default NLLLoss would take the log of logits (NaN)
    losses = search.best_estimator_.history[:, "train_loss"]
    assert isinstance(search.best_estimator_.criterion_, torch.nn.CrossEntropyLoss) and all(0 < x < 10 for x in losses)
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and "on 60 samples" in out  # 20% of 300 held out, as the sweep's dataset.test_size


@pytest.mark.slow
def test_vs_handwritten_times_both_commands_in_turn():
    report = bench.time_vs_handwritten(2, ["dataset.limit=300", "train.max_epochs=1"], ["--limit", "300", "--epochs", "1"])
    assert list(report["seconds"]) == ["sweep", "handwritten"] and all(len(v) == 2 for v in report["seconds"].values())
    assert report["ratios"] == [a / b for a, b in zip(report["seconds"]["sweep"], report["seconds"]["handwritten"])]
    assert report["commands"]["sweep"] == "python -m src.sweep module.num_units=32,64,128,256 dataset.limit=300 train.max_epochs=1 -m"
    assert report["handwritten_says"].startswith("best {'module__num_units': ")
    assert "sweep / handwritten: median ratio" in bench.vs_handwritten_table(report)
