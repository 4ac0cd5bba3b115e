"""Shared timing helpers for the benchmarks: fixed threads, warm-up, medians."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from scratchdet.profiling import environment, median_seconds  # noqa: F401  (re-exported for the benchmarks)


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


def finite(value):
    """JSON without NaN/Infinity: non-finite floats (an empty bin's AP, an open bin's end) become None; 4 places."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4) if math.isfinite(value) else None
    return value
