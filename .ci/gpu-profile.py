"""Where a fused step's time goes on CUDA (run by .ci/gpu-check profile): per-step wall and host time, eager
and graphed, for the full-size grid's stack (12 models padded to 256 units, 46,667 rows each), and the
CUDA kernels of eager steps. Prints a table; asserts nothing."""
import sys
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from src import fused
from src.data import synthetic

X, y = synthetic(70_000)
test_fold = np.arange(70_000) % 3
specs = [fused.FitSpec(n, "default", {"lr": 0.01}, 0, k, np.flatnonzero(test_fold != k)) for n in (32, 64, 128, 256) for k in range(3)]
Xd, yd = torch.as_tensor(X, device="cuda"), torch.as_tensor(y, device="cuda")


def stack():
    st = fused.Stack(specs, fused.Shared(max_epochs=1), Xd, yd)
    st.order = st.epoch_order()
    return st


for graph in (False, True):
    st = stack()
    for s in range(10):
        st.run_step(s, graph)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for s in range(10, 710):
        st.run_step(s, graph)
    host = time.perf_counter() - start
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    print(f"graph={graph}: {wall / 700 * 1e6:.1f} us/step wall, host {host / 700 * 1e6:.1f} us/step to enqueue", flush=True)

st = stack()
for s in range(10):
    st.run_step(s, False)
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for s in range(10, 60):
        st.run_step(s, False)
    torch.cuda.synchronize()
total = sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages())
print(f"CUDA kernel time per eager step: {total / 50:.1f} us; kernels per step: {sum(e.count for e in prof.key_averages() if getattr(e, 'self_device_time_total', 0) > 0) / 50:.1f}")
print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=70), file=sys.stderr)
