"""python -m src.bench: time one epoch of the sweep's workload four ways, in one process, on one device.

    (a) plain_nn_linear      a hand-written PyTorch loop over torch.nn.Linear, data resident on the device
    (b) plain_custom_linear  the same loop over this project's NeuralNet (src.layers.Linear)
    (c) skorch_project       this project's skorch estimator, exactly as the sweep builds it
    (d) skorch_seed_way      skorch as the original tutorial used it: default DataLoader over numpy,
                             no shuffling, 20% internal validation split scored every epoch

Each figure is the median seconds per epoch after one warm-up epoch, with the ratio to (a). A
micro-benchmark compares LinearFunction's forward + backward with torch.nn.functional.linear.
It measures and prints; it asserts nothing about time.
"""
import argparse
import cProfile
import io
import json
import platform
import pstats
import statistics
import sys
import time

import numpy as np
import torch
from skorch import NeuralNetClassifier
from torch import nn
from torch.utils import benchmark

from src.data import synthetic
from src.estimator import build_estimator, resolve_device
from src.layers import LinearFunction
from src.model import NeuralNet

LR = 0.01


def torch_mlp(num_units: int, input_dim: int = 784, num_classes: int = 10) -> nn.Module:
    """The same architecture as NeuralNet, over torch.nn.Linear: the reference."""
    return nn.Sequential(nn.Linear(input_dim, num_units), nn.ReLU(), nn.Linear(num_units, num_units // 2), nn.ReLU(),
                         nn.Linear(num_units // 2, num_classes))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def plain_loop(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int, shuffle: bool = True) -> list[float]:
    """Train with a hand-written loop over tensors already on the device; seconds per epoch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        sync(str(X.device))
        start = time.perf_counter()
        order = torch.randperm(len(X), device=X.device) if shuffle else torch.arange(len(X), device=X.device)
        for i in range(0, len(X), batch_size):
            idx = order[i : i + batch_size]
            optimizer.zero_grad()
            criterion(model(X[idx]), y[idx]).backward()
            optimizer.step()
        sync(str(X.device))
        times.append(time.perf_counter() - start)
    return times


def skorch_epochs(net: NeuralNetClassifier, X: np.ndarray, y: np.ndarray) -> list[float]:
    """Fit the skorch net; seconds per epoch from skorch's own EpochTimer."""
    net.fit(X, y)
    return [row["dur"] for row in net.history]


def tutorial_net(num_units: int, epochs: int, batch_size: int, device: str) -> NeuralNetClassifier:
    """skorch as the original tutorial used it: library defaults (ValidSplit(5), no shuffling, DataLoader)."""
    return NeuralNetClassifier(NeuralNet, module__num_units=num_units, module__init="randn", criterion=nn.CrossEntropyLoss,
                               optimizer=torch.optim.SGD, lr=LR, max_epochs=epochs, batch_size=batch_size, device=device, verbose=0)


def linear_vs_F_linear(device: str, batch: int, in_dim: int, out_dim: int) -> dict:
    """Forward + backward of LinearFunction against F.linear on the same values (torch.utils.benchmark medians)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_dim, generator=g).to(device).requires_grad_()
    w = torch.randn(in_dim, out_dim, generator=g).to(device).requires_grad_()  # ours: (in_dim, out_dim)
    b = torch.randn(out_dim, generator=g).to(device).requires_grad_()
    w_t = w.detach().t().contiguous().requires_grad_()  # F.linear's layout: (out_dim, in_dim)
    grad = torch.randn(batch, out_dim, generator=g).to(device)
    ours = benchmark.Timer("LinearFunction.apply(x, w, b).backward(grad)", globals=locals() | {"LinearFunction": LinearFunction})
    ref = benchmark.Timer("F.linear(x, w_t, b).backward(grad)", globals=locals() | {"F": torch.nn.functional})
    t_ours, t_ref = ours.blocked_autorange(min_run_time=1.0).median, ref.blocked_autorange(min_run_time=1.0).median
    return {"shape": [batch, in_dim, out_dim], "linear_function_us": t_ours * 1e6, "F_linear_us": t_ref * 1e6, "ratio": t_ours / t_ref}


def run(device: str = "auto", epochs: int = 5, n_samples: int = 46_667, num_units: int = 256, batch_size: int = 64) -> dict:
    """All timings in one process, on the same data and network."""
    device = resolve_device(device)
    X_np, y_np = synthetic(n_samples=n_samples, seed=0)
    X, y = torch.tensor(X_np, device=device), torch.tensor(y_np, device=device)  # copies: the cached arrays are read-only
    timings = {}
    torch.manual_seed(0)
    timings["plain_nn_linear"] = plain_loop(torch_mlp(num_units).to(device), X, y, epochs=epochs, batch_size=batch_size)
    torch.manual_seed(0)
    timings["plain_custom_linear"] = plain_loop(NeuralNet(num_units).to(device), X, y, epochs=epochs, batch_size=batch_size)
    project = build_estimator({"num_units": num_units}, torch.optim.SGD, {"lr": LR}, max_epochs=epochs, batch_size=batch_size,
                              verbose="quiet", device=device)
    timings["skorch_project"] = skorch_epochs(project, X_np, y_np)
    timings["skorch_seed_way"] = skorch_epochs(tutorial_net(num_units, epochs, batch_size, device), X_np, y_np)
    per_epoch = {k: statistics.median(v[1:] if len(v) > 1 else v) for k, v in timings.items()}
    reference = per_epoch["plain_nn_linear"]
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "workload": {"n_samples": n_samples, "num_units": num_units, "batch_size": batch_size, "epochs": epochs},
        "results": {k: {"s_per_epoch": v, "ratio": v / reference} for k, v in per_epoch.items()},
        "linear_vs_F_linear": linear_vs_F_linear(device, batch_size, 784, num_units),
        "linear_vs_F_linear_large": linear_vs_F_linear(device, 4096, 784, num_units),
    }


def profile_project_epoch(device: str, n_samples: int, num_units: int, batch_size: int, top: int = 15) -> str:
    """cProfile of the project estimator's training (2 epochs): where the time per step goes."""
    X_np, y_np = synthetic(n_samples=n_samples, seed=0)
    net = build_estimator({"num_units": num_units}, torch.optim.SGD, {"lr": LR}, max_epochs=2, batch_size=batch_size,
                          verbose="quiet", device=resolve_device(device))
    profiler = cProfile.Profile()
    profiler.runcall(net.fit, X_np, y_np)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def table(report: dict) -> str:
    """The results as aligned text, one line per variant."""
    lines = [f"device: {report['device']} ({report['device_name']}), torch {report['torch']}, {report['threads']} threads, "
             f"workload: {report['workload']}", f"{'variant':<22}{'s/epoch':>10}{'ratio':>8}"]
    for name, r in report["results"].items():
        lines.append(f"{name:<22}{r['s_per_epoch']:>10.4f}{r['ratio']:>8.2f}")
    for key in ("linear_vs_F_linear", "linear_vs_F_linear_large"):
        m = report[key]
        lines.append(f"{key} {m['shape']}: LinearFunction {m['linear_function_us']:.1f} us, F.linear {m['F_linear_us']:.1f} us, ratio {m['ratio']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: print the table, optionally write the JSON and a profile."""
    parser = argparse.ArgumentParser(prog="python -m src.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per variant; the first is a warm-up (default: 5)")
    parser.add_argument("--n-samples", type=int, default=46_667, help="training samples (default: 46,667, one fold of 70,000)")
    parser.add_argument("--num-units", type=int, default=256, help="first hidden layer (default: 256)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the project estimator's epochs")
    args = parser.parse_args(argv)
    for name in ("epochs", "n_samples", "num_units", "batch_size"):
        least = 2 if name == "num_units" else 1
        if getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)}: must be at least {least}")
    try:
        report = run(args.device, args.epochs, args.n_samples, args.num_units, args.batch_size)
    except ValueError as e:
        parser.error(str(e))
    print(table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if args.profile:
        print(profile_project_epoch(report["device"], args.n_samples, args.num_units, args.batch_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
