"""Shared timing helpers for the benchmarks: fixed threads, warm-up, medians."""

from __future__ import annotations

import json
import platform
import sys

import torch

from scratchdet.profiling import median_seconds  # noqa: F401  (re-exported for the benchmarks)


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
