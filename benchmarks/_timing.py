"""Shared timing helpers for the benchmarks: fixed threads, warm-up, medians."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from typing import Callable

import torch


def median_seconds(fn: Callable[[], object], repeats: int = 20, warmup: int = 3,
                   min_time: float = 0.0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    With ``min_time`` > 0, each timed sample loops ``fn`` until it has run for
    at least that long and reports the per-call time, so sub-millisecond
    functions are not dominated by timer resolution.
    """
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


def environment(threads: int) -> dict:
    """What the numbers were measured on."""
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": threads,
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
    }


def emit(result: dict) -> None:
    """Print the benchmark result as one JSON document."""
    print(json.dumps(result, indent=2))


def benchmark_parser(doc: str, quick_help: str):
    """An ``argparse`` parser with the flags every benchmark has: ``--threads`` and ``--quick``."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, fixed for the run (default: 1)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return parser


def parse_args(parser):
    """Parse the command line and fix torch's thread count before anything is timed."""
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args
