"""Beyond YOLO v1: the ablation of notebook 11, each step of the new head added alone, same budget.

    python benchmarks/beyond_v1.py                  # 7 runs, 2 epochs of 4,000 images each (~25 min on 2 cores)
    python benchmarks/beyond_v1.py --quick          # tiny runs: checks the pipeline only
    python benchmarks/beyond_v1.py --only v1 fpn    # some runs

Every run is ``configs/demo.yaml`` (PoolResNet medium, 256 px, AdamW, warm-up
cosine) for ``--epochs`` epochs with a few keys changed (``RUNS``); each is
evaluated on the SynthFaces test split (AP50 overall, by face size, by faces
per image) and profiled (parameters, MACs, latency at 1 thread). Results go
to ``--out`` (default ``benchmarks/results/beyond_v1.json``) after every run;
a run whose keys and budget match a stored result is not trained again, so an
interrupted ablation continues. Run it alone. Prints the results as JSON.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from _timing import benchmark_parser, emit, environment, parse_args
from scratchdet._io import atomic_write_text
from scratchdet.assign import assign_levels, unassigned_share
from scratchdet.data.synthfaces import SynthFaces
from scratchdet.grid import collision_stats, gather_boxes
from scratchdet.model import YoloDetector
from scratchdet.pipeline import run_training
from scratchdet.profiling import count_macs, count_parameters, latency_ms
from scratchdet.study import evaluate_run

ROOT = Path(__file__).resolve().parents[1]
V1, FPN = {"model.config.head": "v1"}, {"model.config.head": "fpn"}
# name -> (what it adds, the keys it changes in configs/demo.yaml)
RUNS = {
    "v1": ("YOLO v1: S = 8, B = 2, one cell per face", {**V1, "model.config.num_cells": 8}),
    "v1_s16": ("v1 with a finer grid: S = 16", {**V1, "model.config.num_cells": 16}),
    "fpn_1level_centre": ("anchor-free, one grid (stride 32), centre cell only, GIoU + IoU score",
                          {**FPN, "model.config.num_levels": 1, "model.config.center_radius": 0.0}),
    "fpn_1level_neighbours": ("+ several positives (neighbour cells within 1 cell)",
                              {**FPN, "model.config.num_levels": 1, "model.config.center_radius": 1.0}),
    "fpn_3levels_centre": ("+ a feature pyramid (strides 8, 16, 32), centre cell only",
                           {**FPN, "model.config.num_levels": 3, "model.config.center_radius": 0.0}),
    "fpn": ("the new head: pyramid + several positives", {**FPN, "model.config.num_levels": 3,
                                                          "model.config.center_radius": 1.0}),
    "fpn_target_one": ("the new head with objectness target 1 instead of the IoU",
                       {**FPN, "model.config.num_levels": 3, "model.config.center_radius": 1.0,
                        "model.config.conf_target": "one"}),
}


def _unassigned(model: YoloDetector, boxes: list) -> dict:
    """Share of test faces never a training target: per level for fpn, collisions for v1."""
    config = model.config
    if config.head == "fpn":
        return unassigned_share(assign_levels(boxes, config))
    return {"all": collision_stats(boxes, config.num_cells, config.image_size)["lost_fraction"]}


def run_one(name: str, keys: dict, args, work_dir: Path, test, boxes) -> dict:
    overrides = {**keys, "trainer.max_epochs": args.epochs, "data.train_size": args.train_size,
                 "data.val_size": args.val_size, "trainer.enable_progress_bar": False, "threads": args.threads,
                 "output_dir": str(work_dir / name), "overwrite": True, "trainer.max_time": None}
    result = run_training("demo", overrides)
    model = YoloDetector.from_checkpoint(result.best_checkpoint or result.last_checkpoint).eval()
    metrics = evaluate_run(model, test)
    size = model.config.image_size
    return {
        "adds": RUNS[name][0], "keys": keys, "epochs": args.epochs, "train_size": args.train_size,
        "train_seconds": round(result.train_seconds, 1), "images_per_second": round(result.images_per_second, 1),
        "parameters": count_parameters(model), "macs": count_macs(model, size),
        "latency_ms_256": round(latency_ms(model, 256, repeats=args.repeats), 2),
        "latency_ms_480": round(latency_ms(model, 480, repeats=args.repeats), 2),
        "never_a_target": _unassigned(model, boxes), **{k: v for k, v in metrics.items()},
    }


def main() -> None:
    parser = benchmark_parser(__doc__, "tiny runs (1 epoch of 32 images, 16 test images): checks the pipeline")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of every run (the committed results: 2)")
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--val-size", type=int, default=200)
    parser.add_argument("--test-images", type=int, default=None, help="first N test images (default: all 500)")
    parser.add_argument("--only", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--out", default=None, help="results JSON (default benchmarks/results/beyond_v1.json)")
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "beyond_v1"))
    parser.add_argument("--repeats", type=int, default=20, help="latency repeats")
    args = parse_args(parser)
    if args.quick:
        args.epochs, args.train_size, args.val_size, args.test_images, args.repeats = 1, 32, 16, 16, 2
        args.only = ["v1", "fpn"]
        work = Path(tempfile.mkdtemp(prefix="beyond_v1_"))
        args.work_dir, out = str(work / "runs"), work / "beyond_v1.json"
    else:
        out = Path(args.out or ROOT / "benchmarks" / "results" / "beyond_v1.json")
    results = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    test = SynthFaces("test", image_size=256, num_images=args.test_images)
    boxes = [torch.as_tensor(b, dtype=torch.float32) for b in gather_boxes(test)[0]]
    for name in args.only:
        stored = results["runs"].get(name)
        if stored and stored["keys"] == RUNS[name][1] and (stored["epochs"], stored["train_size"]) == \
                (args.epochs, args.train_size) and stored.get("num_images") == len(test):
            continue
        start = time.perf_counter()
        results["runs"][name] = run_one(name, RUNS[name][1], args, Path(args.work_dir), test, boxes)
        results["runs"][name]["wall_seconds"] = round(time.perf_counter() - start, 1)
        results["environment"] = environment(args.threads)
        atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    results["environment"] = environment(args.threads)
    results["benchmark"] = "beyond_v1"
    emit(results)


if __name__ == "__main__":
    main()
