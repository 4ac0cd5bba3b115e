"""Every benchmark runs (``--quick``) and prints one JSON document: they must not rot.

This checks that they work, never how fast anything is.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
NAMES = sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_"))


def test_every_benchmark_is_listed():
    assert {"boxes", "synthfaces", "grid", "nms", "backbones", "inference", "experiments", "heads", "real_photos",
            "sim_to_real"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_quick_run_prints_json(name):
    proc = subprocess.run([sys.executable, f"{name}.py", "--quick", "--threads", "1"], cwd=BENCHMARKS,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    start = proc.stdout.index("{")  # some benchmarks print progress lines to stdout first
    result = json.loads(proc.stdout[start:])
    assert result["environment"]["threads"] == 1
