"""A job's arithmetic (train.precision): the one context every engine trains and scores in.

- fp32: torch's defaults. Nothing is entered, and a job computes what it computed before this key existed.
- tf32: CUDA's float32 matrix products and cuDNN convolutions in TensorFloat-32
  (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32), switched on while the context
  is open and put back after. The CPU has no TF32: there it changes nothing.
- bf16: torch.autocast to bfloat16. Matrix products (and convolutions) run in bfloat16, while the weights,
  their gradients and the optimizer's state stay float32. The logits come back in float32 (full), so that
  the loss and the scores are computed in float32, as autocast does on CUDA.

src.config refuses a value other than PRECISIONS, and bf16 where the device lacks it (unsupported); the
engines wrap their steps in context(): the skorch estimator's train, validation and evaluation steps
(src.estimator), the fused engine's stacks (src.fused.Stack.train, and src.vmapped's through it).
"""
import contextlib
import threading

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


def unsupported(precision: str, device: str) -> str | None:
    """Why `precision` cannot run on `device` (a resolved device: cpu, cuda, cuda:N, mps), or None if it can."""
    if precision != "bf16":
        return None  # fp32 runs everywhere; tf32 is CUDA's, and changes nothing elsewhere
    place = torch.device(device)
    if place.type == "cuda":
        # Pre-Ampere GPUs emulate bfloat16 (slower than float32): the speed this option trades for is not there.
        with torch.cuda.device(place) if place.index is not None else contextlib.nullcontext():
            if not torch.cuda.is_bf16_supported(including_emulation=False):
                return f"{torch.cuda.get_device_name(place)} has no native bfloat16 (it needs compute capability 8.0 or later)"
        return None
    if not torch.amp.is_autocast_available(place.type):
        return f"torch cannot autocast on {place.type}"
    return None


def context(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The context a job's forward pass and loss (or a whole step) run in, on `device`: see the module's docstring."""
    kind = torch.device(device).type
    if precision == "bf16":
        # No cache of casts: a fused stack trains in one context, where the cache would keep a bfloat16 copy of each step's
        # fresh leaf parameters (src.vmapped) until the training ends, and CUDA graphs want it off; each weight is cast once
        # a step anyway.
        return torch.autocast(kind, dtype=torch.bfloat16, cache_enabled=False)
    if precision == "tf32" and kind == "cuda":
        return _tf32()
    return contextlib.nullcontext()


def full(t: torch.Tensor) -> torch.Tensor:
    """An autocast output (bfloat16 or float16) back in float32, for the loss and the scores; any other tensor as it is."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


_tf32_lock = threading.Lock()
_tf32_open = 0          # tf32 contexts open now (the shares of a fused group train in threads, each in one)
_tf32_saved: tuple[bool, bool] = (False, True)


@contextlib.contextmanager
def _tf32():
    """TF32 on while any tf32 context is open; the first to open saves the flags, the last to close puts them back."""
    global _tf32_open, _tf32_saved
    with _tf32_lock:
        if not _tf32_open:
            _tf32_saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        _tf32_open += 1
    try:
        yield
    finally:
        with _tf32_lock:
            _tf32_open -= 1
            if not _tf32_open:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = _tf32_saved
