"""The study, end to end: train every run, evaluate, profile, write results JSON + figures.

    python benchmarks/experiments.py                      # FULL_PLAN, ~105 min on 2 cores
    python benchmarks/experiments.py --plan reduced       # a few minutes
    python benchmarks/experiments.py --parts loss_weights small_faces
    python benchmarks/experiments.py --quick --threads 1  # tiny models: checks the pipeline only

Parts (``scratchdet.study.PARTS``): ``backbones`` (ResNet vs PoolResNet vs
MobileNetV3, random init, same data and budget), ``pretrained`` (MobileNetV2
ImageNet vs scratch; skipped with the command that runs it when the weights
are not in the torch hub cache), ``loss_weights`` (lambda_coord x lambda_noobj
grid: AP50, false positives per image), ``small_faces`` (AP by face size and
faces per image, grid collisions per S, the finer-grid improvement).

Writes ``--out`` (default ``benchmarks/results/experiments.json``; with
``--quick`` a temporary folder) with every run's record, and the figures to
``--figures`` (default ``docs/study/``: ``summary.png``, one figure per part,
and ``examples.jpg``, the baseline and the finer grid on crowded test images).
Each run keeps its checkpoints and a ``record.json`` in ``--work-dir``; a
second call reuses records with the same
settings (``--no-reuse`` retrains), so an interrupted study continues.
Training uses ``--threads`` CPU threads (default 2); latency is measured at
1 thread. Run it alone: two torch processes on 2 cores slow each other down
many times. Prints one JSON document (the summary) to stdout.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from _timing import benchmark_parser, emit, environment, parse_args
from scratchdet.data.synthfaces import SynthFaces
from scratchdet.study import (FULL_PLAN, PARTS, REDUCED_PLAN, StudyPlan, plot_examples, plot_study, run_study,
                              save_results)

ROOT = Path(__file__).resolve().parents[1]
# Tiny models on 64 px images: the whole pipeline in seconds, numbers meaningless.
QUICK_PLAN = StudyPlan(
    name="quick",
    base={**FULL_PLAN.base, "preset": "small", "image_size": 64, "num_cells": 2, "epochs": 1, "train_size": 8,
          "val_size": 4, "batch_size": 4},
    backbones=("poolresnet", "mobilenet_v3"), lambda_coord=(5.0,), lambda_noobj=(0.5, 2.0),
    improvement={"num_cells": 4}, improvement_label="finer grid (S=4)", baseline_seeds=(0,),
    collision_cells=(2, 4), test_images=4, latency_repeats=2,
)
PLANS = {"full": FULL_PLAN, "reduced": REDUCED_PLAN}


def main() -> None:
    parser = benchmark_parser(__doc__, "tiny models, 64 px, 8 training images: checks the pipeline only")
    parser.set_defaults(threads=2)
    parser.add_argument("--plan", choices=sorted(PLANS), default="full")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--work-dir", default=None, help="one folder per run (default runs/study/<plan>)")
    parser.add_argument("--out", default=None, help="results JSON (default benchmarks/results/experiments.json)")
    parser.add_argument("--figures", default=None, help="folder for the PNG figures (default docs/study)")
    parser.add_argument("--data-root", default=None, help="SynthFaces cache folder (default <repo>/data)")
    parser.add_argument("--no-reuse", action="store_true", help="retrain runs that already have a record")
    args = parse_args(parser)
    plan = QUICK_PLAN if args.quick else PLANS[args.plan]
    parts = [p for p in args.parts if not (args.quick and p == "pretrained")]  # small presets have no weights
    scratch = Path(tempfile.mkdtemp(prefix="scratchdet-study-")) if args.quick else None
    plan = dataclasses.replace(plan, base={**plan.base, "threads": args.threads,
                                           "data_root": args.data_root or str(ROOT / "data")})
    work = Path(args.work_dir) if args.work_dir else (scratch or ROOT / "runs" / "study") / plan.name
    out = Path(args.out) if args.out else (scratch or ROOT / "benchmarks" / "results") / "experiments.json"
    figures = Path(args.figures) if args.figures else (scratch / "figures" if scratch else ROOT / "docs" / "study")

    start = time.perf_counter()
    results = run_study(plan, work, parts, reuse=not args.no_reuse,
                        progress=lambda line: print(line, file=sys.stderr, flush=True))
    save_results(results, out)
    plot_study(results, figures)
    if "small_faces" in parts:
        test = SynthFaces("test", image_size=plan.base["image_size"], root=plan.base["data_root"],
                          num_images=plan.test_images)
        plot_examples(results, work, test, out_png=figures / "examples.jpg")
    print(f"results: {out}\nfigures: {figures}/", file=sys.stderr)
    emit({
        "benchmark": "experiments",
        "environment": environment(args.threads),
        "quick": args.quick,
        "plan": plan.name,
        "parts": results["parts"],
        "skipped_parts": results["skipped_parts"],
        "runs": len(results["runs"]),
        "train_wall_seconds": results["train_wall_seconds"],
        "seconds": round(time.perf_counter() - start, 1),
        "results": str(out),
        "summary": results["summary"],
    })


if __name__ == "__main__":
    main()
