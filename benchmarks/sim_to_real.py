"""sim_to_real: the sim-to-real levers of notebook 12, each trained alone and together, measured on real photos.

    python benchmarks/sim_to_real.py [--levers NAME ...] [--photos DIR] [--threads 2] [--quick]

Every lever is ``configs/photos.yaml`` (the bundled model's recipe) with a few
keys changed (from a fine-tuned backbone and basic augmentation), trained under one budget, :data:`LEVER_BUDGET` (2 epochs of
2,000 SynthFaces images: the same images for every lever, so a busy machine
changes the times, not the results; the training time and images per second
are recorded, a frozen backbone is about twice as fast). Each trained run is
then measured by ``benchmarks/real_photos.py``'s :func:`ours`: AP50 on the
real photos (``--photos``, default ``../shared/realdev``, **measured only**:
no lever, size or threshold is chosen by training on it) at input sizes 256,
384, 480 and 640, and SynthFaces test AP50 by face size.

Results go to ``benchmarks/results/sim_to_real.json`` one lever at a time, as
each finishes (an interrupted run continues where it stopped; a lever whose
recipe changed trains again). Training output: ``runs/levers/<name>/``. Never
run it beside another training on a 2-core machine. Progress goes to stderr;
the results are printed as one JSON document at the end. ``--quick`` trains two
levers for one step each (16 images, no ImageNet weights) into a temporary
folder, measures on stand-in photos if ``--photos`` is missing, and writes nothing.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from _timing import benchmark_parser, emit, environment, finite, parse_args
from real_photos import DEFAULT_PHOTOS, DEFAULT_SIZES, open_photos, ours

from scratchdet._io import atomic_write_text
from scratchdet.pipeline import run_training

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sim_to_real.json"
BASE = "photos"
LEVER_BUDGET = {"trainer.max_time": None, "trainer.max_epochs": 2, "data.train_size": 2000,
                "model.freeze_backbone": 0, "data.photometric": "basic"}  # each lever changes what it names
# name -> (what it tests, recipe keys on top of configs/photos.yaml + LEVER_BUDGET)
LEVERS = {
    "poolresnet_scratch": ("the course's own backbone from scratch (the demo's)",
                           {"model.backbone": "poolresnet", "model.pretrained": False}),
    "mobilenet_scratch": ("MobileNetV2 from scratch: the architecture without ImageNet",
                          {"model.pretrained": False}),
    "mobilenet_imagenet": ("MobileNetV2 from ImageNet weights, all layers fine-tuned", {}),
    "mobilenet_frozen": ("ImageNet weights kept: backbone frozen, only the fpn head learns",
                         {"model.freeze_backbone": -1}),
    "mobilenet_partial": ("ImageNet layers up to stride 16 frozen (the fpn's two finer taps), the rest fine-tuned",
                          {"model.freeze_backbone": 14}),
    "mobilenet_partial_photo": ("partly frozen + photographic augmentation",
                                {"model.freeze_backbone": 14, "data.photometric": "photo"}),
    "mobilenet_partial_photo_8k": ("partly frozen + photo, twice the images (4 epochs of 2,000)",
                                   {"model.freeze_backbone": 14, "data.photometric": "photo",
                                    "trainer.max_epochs": 4}),
    "mobilenet_partial_photo_24k": ("partly frozen + photo, six times the images (4 epochs of 6,000)",
                                    {"model.freeze_backbone": 14, "data.photometric": "photo",
                                     "trainer.max_epochs": 4, "data.train_size": 6000}),
    "mobilenet_imagenet_photo": ("fine-tuned + photographic augmentation", {"data.photometric": "photo"}),
    "mobilenet_frozen_photo": ("frozen + photographic augmentation",
                               {"model.freeze_backbone": -1, "data.photometric": "photo"}),
    "mobilenet_imagenet_v1": ("fine-tuned, YOLO v1's single grid instead of the fpn head",
                              {"model.config.head": "v1"}),
}


def train_lever(name: str, overrides: dict, work_dir: Path, threads: int, quick: bool) -> dict:
    """Train one lever (or reuse its finished run); returns ``{"checkpoint", "train_seconds", ...}``."""
    out = work_dir / name
    record = out / "train.json"
    recipe = {**LEVER_BUDGET, **overrides}
    if record.is_file():
        done = json.loads(record.read_text())
        if done.get("recipe") == recipe:
            return done
    settings = {**recipe, "output_dir": str(out), "overwrite": True, "threads": threads,
                "trainer.enable_progress_bar": False}
    if quick:
        settings.update({"model.pretrained": False, "data.train_size": 16, "data.val_size": 8,
                         "trainer.max_epochs": 1, "trainer.max_time": None})
    result = run_training(BASE, settings)
    done = {"recipe": recipe, "checkpoint": str(result.last_checkpoint), "train_seconds": result.train_seconds,
            "images_per_second": result.images_per_second, "steps": result.steps_this_run}
    atomic_write_text(record, json.dumps(done, indent=2))
    return done


def main() -> None:
    parser = benchmark_parser(__doc__, "a few smoke-sized steps per lever, into a temporary folder, nothing saved")
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS), metavar="NAME",
                        help=f"which levers (default: all): {', '.join(LEVERS)}")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="COCO folder of real photos")
    parser.add_argument("--synth-images", type=int, default=500, help="SynthFaces test images")
    args = parse_args(parser)
    photos = open_photos(args.photos, args.quick, parser)
    if args.quick:
        args.levers = [args.levers[0], args.levers[-1]]
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() and not args.quick else {"levers": {}}
    work_dir = Path(tempfile.mkdtemp()) if args.quick else ROOT / "runs" / "levers"
    for name in args.levers:
        what, overrides = LEVERS[name]
        recipe = {**LEVER_BUDGET, **overrides}
        if results["levers"].get(name, {}).get("recipe") == recipe and not args.quick:
            continue
        start = time.perf_counter()
        trained = train_lever(name, overrides, work_dir, args.threads, args.quick)
        measured = ours(Path(trained["checkpoint"]), photos, (256, 384) if args.quick else DEFAULT_SIZES,
                        8 if args.quick else args.synth_images, with_curves=False)
        results["levers"][name] = finite({"what": what, "recipe": recipe, **trained, **measured,
                                          "wall_seconds": time.perf_counter() - start})
        print(json.dumps({"lever": name, "photos_ap50": {s: r["ap50"] for s, r in measured["photos"].items()},
                          "synthfaces_ap50": measured.get("synthfaces", {}).get("ap50")}), file=sys.stderr, flush=True)
        results.update(benchmark="sim_to_real", base=f"configs/{BASE}.yaml", budget=LEVER_BUDGET,
                       photos={"folder": str(args.photos), "num_images": len(photos)},
                       environment=environment(args.threads), quick=args.quick)
        if not args.quick:
            atomic_write_text(RESULTS, json.dumps(results, indent=2))
    results.setdefault("environment", environment(args.threads))
    emit(results)


if __name__ == "__main__":
    main()
