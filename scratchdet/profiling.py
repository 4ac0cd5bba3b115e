"""Cost of a model: parameters, multiply-accumulates and wall time (medians).

Shared by ``benchmarks/`` and the study (:mod:`scratchdet.study`). Timings on
a shared CPU are noisy: fix the thread count, warm up, and report medians.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["median_seconds", "count_macs", "count_parameters", "latency_ms", "environment"]


def environment(threads: int | None) -> dict:
    """What numbers were measured on: Python, torch, thread count, CPU."""
    return {"python": sys.version.split()[0], "torch": torch.__version__, "threads": threads,
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "processor": platform.processor() or "unknown"}


def median_seconds(fn: Callable[[], object], repeats: int = 20, warmup: int = 3, min_time: float = 0.0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    With ``min_time`` > 0, each timed sample loops ``fn`` until it has run for
    at least that long and reports the per-call time, so sub-millisecond
    functions are not dominated by timer resolution.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        samples.append(elapsed / calls)
    return statistics.median(samples)


def count_macs(model: torch.nn.Module, image_size: int) -> int:
    """MACs of one eval forward pass of one ``image_size`` x ``image_size`` image.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per MAC:
    convolutions and matrix products; activations and pooling are free).
    """
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter, torch.inference_mode():
            model(torch.rand(1, 3, image_size, image_size))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def latency_ms(model: torch.nn.Module, image_size: int, batch_size: int = 1, repeats: int = 20,
               threads: int | None = 1) -> float:
    """Median milliseconds of one eval forward pass of ``Tensor[batch_size, 3, image_size, image_size]``.

    ``threads`` fixes torch's CPU threads for the measurement (restored after);
    ``None`` keeps the current setting.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    was_training = model.training
    model.eval()
    images = torch.rand(batch_size, 3, image_size, image_size, device=next(model.parameters()).device)
    try:
        with torch.inference_mode():
            seconds = median_seconds(lambda: model(images), repeats=repeats, warmup=2)
    finally:
        model.train(was_training)
        torch.set_num_threads(previous)
    return seconds * 1e3
