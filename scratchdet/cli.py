"""The ``scratchdet`` command line: ``train``, ``evaluate``, ``detect``, ``export``, ``label`` and ``demo``.

    scratchdet train --config configs/demo.yaml --trainer.max_epochs 3 --output_dir runs/mine
    scratchdet train --output_dir runs/mine --resume --trainer.max_epochs 10
    scratchdet evaluate runs/mine/checkpoints/best.ckpt --split test --image-size 320 --out metrics.json
    scratchdet evaluate runs/mine/model.pt --dataset coco --annotations faces.json --images photos/
    scratchdet detect photos/ --checkpoint runs/demo/model.pt
    scratchdet export runs/demo/model.pt --format onnx --out model.onnx
    scratchdet label photos/ --teacher yunet   # pseudo-labels -> photos/annotations.json (COCO)
    scratchdet demo

``python -m scratchdet ...`` is the same. ``train`` is a ``LightningCLI``
(:mod:`scratchdet.recipe`): ``scratchdet train --help`` lists every key of
the config tree with its type, default and description. Every error prints
one line and exits with status 2 (1 when training diverged, 130 on Ctrl-C);
``--verbose`` (or ``SCRATCHDET_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from scratchdet import detect, export, label
from scratchdet._io import atomic_write_text, same_file
from scratchdet.config import EVAL_SCORE_THRESHOLD, NMS_IOU_THRESHOLD
from scratchdet.data.labelled import LABELLED_FORMATS
from scratchdet.demo import run_demo
from scratchdet.detect import parse_image_size
from scratchdet.model import YoloDetector
from scratchdet.pipeline import (TrainingInterrupted, evaluate_model, jsonable_metrics, open_split,
                                 run_training)
from scratchdet.training import TrainingDiverged

__all__ = ["main", "build_parser"]


class UserError(Exception):
    """An error in what the user asked for: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands (``train``'s own flags come from :mod:`scratchdet.recipe`)."""
    parser = argparse.ArgumentParser(prog="scratchdet", description="YOLO face detection from scratch.")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("train", help="train a detector (LightningCLI; scratchdet train --help lists every key)",
                   add_help=False)

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint on a dataset split")
    evaluate.add_argument("checkpoint", help="a .ckpt from training or a YoloDetector.save file")
    evaluate.add_argument("--dataset", default="synthfaces", choices=("synthfaces", "wider", *LABELLED_FORMATS))
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--data-root", default=None,
                          help="SynthFaces cache folder (default: $SCRATCHDET_DATA, the checkout's data/, "
                               "or ~/.cache/scratchdet)")
    evaluate.add_argument("--wider-root", default=None, help="WIDER FACE folder (dataset wider)")
    evaluate.add_argument("--annotations", default=None,
                          help="your own data's annotations (coco: a JSON file, voc: an XML folder, imglab: an XML "
                               "file; yolo: unused)")
    evaluate.add_argument("--images", default=None,
                          help="your own data's image folder (yolo: the dataset folder; default: --data-root)")
    evaluate.add_argument("--category", default=None,
                          help="your own data's face category or class (default: the only one)")
    evaluate.add_argument("--num-images", type=int, default=None, help="first N images of the split (at most all)")
    evaluate.add_argument("--image-size", type=parse_image_size, default=None, metavar="N|HxW",
                          help="network input size, multiples of the model's stride (default: its training size)")
    evaluate.add_argument("--score-threshold", type=float, default=EVAL_SCORE_THRESHOLD)
    evaluate.add_argument("--iou-threshold", type=float, default=NMS_IOU_THRESHOLD, help="NMS IoU threshold")
    evaluate.add_argument("--out", default=None, help="write the metrics JSON here (default: print only)")
    evaluate.add_argument("--wider-out", default=None,
                          help="also write predictions in the official WIDER FACE layout to this folder")
    evaluate.add_argument("--device", default="cpu")

    detect.add_arguments(sub.add_parser("detect", help="detect faces in an image, a folder, a video or a webcam",
                                        description=detect.__doc__.splitlines()[0]))
    export.add_arguments(sub.add_parser("export", help="export a checkpoint (pt2, ONNX)",
                                        description=export.__doc__.splitlines()[0]))
    label.add_arguments(sub.add_parser("label", help="pseudo-label your own photos with a teacher detector (COCO JSON)",
                                       description=label.__doc__.splitlines()[0]))

    demo = sub.add_parser("demo", help="the main job: train on SynthFaces, evaluate, detect on photos")
    demo.add_argument("--output-dir", default="runs/demo")
    demo.add_argument("--epochs", type=int, default=None, help="override the demo's epoch budget")
    demo.add_argument("--train-size", type=int, default=None, help="override the number of training images")
    demo.add_argument("--data-root", default=None, help="SynthFaces cache folder")
    demo.add_argument("--quick", action="store_true", help="a tiny run that only checks the pipeline")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.add_argument("--overwrite", action="store_true", help="replace an earlier demo run in --output-dir")
    return parser


def _train(argv: list[str]) -> int:
    try:
        result = run_training(args=argv)
    except TrainingInterrupted as stop:
        print(f"scratchdet train: {stop}\nresume with: {stop.resume_command}", file=sys.stderr)
        return 130
    print(f"best checkpoint: {result.best_checkpoint}\nlast checkpoint: {result.last_checkpoint}\n"
          f"config: {Path(result.output_dir) / 'config.yaml'}")
    if result.steps_this_run == 0:
        print(f"nothing to train: the run already finished its {result.trainer.max_epochs} epochs; "
              f"pass --trainer.max_epochs N (more) to train longer")
    else:
        print(f"train time: {result.train_seconds:.0f} s, {result.images_per_second:.1f} images/s")
    if len(result.images_per_rank) > 1:
        print(f"training images per rank: {result.images_per_rank}")
    return 0


def _evaluate(args: argparse.Namespace) -> None:
    if not Path(args.checkpoint).is_file():
        raise UserError(f"checkpoint {args.checkpoint!r} does not exist")
    if args.out and same_file(args.checkpoint, args.out):
        raise UserError(f"--out {args.out!r} is the checkpoint being evaluated; choose another file")
    model = YoloDetector.from_checkpoint(args.checkpoint, map_location=args.device).to(args.device)
    source = open_split(args.dataset, args.split, model.config.image_size, args.data_root, args.wider_root,
                        args.num_images, annotations=args.annotations, images=args.images, category=args.category)
    metrics = evaluate_model(model, source, score_threshold=args.score_threshold, iou_threshold=args.iou_threshold,
                             wider_out=args.wider_out, image_size=args.image_size)
    text = json.dumps(jsonable_metrics(metrics), indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
        print(f"metrics written to {args.out}")
    print(text)


def _demo(args: argparse.Namespace) -> None:
    run_demo(output_dir=args.output_dir, epochs=args.epochs, train_size=args.train_size, quick=args.quick,
             progress_bar=not args.no_progress, data_root=args.data_root, overwrite=args.overwrite)


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    if not text:
        return type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else f"{lines[0]} {' '.join(lines[1:3])}"[:500]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scratchdet`` command; returns the exit status."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv or bool(os.environ.get("SCRATCHDET_DEBUG"))
    argv = [a for a in argv if a != "--verbose"]
    command = argv[0] if argv and not argv[0].startswith("-") else None
    try:
        if command == "train":  # LightningCLI parses its own flags (and --help)
            return _train(argv[1:])
        args = build_parser().parse_args(argv)
        handlers = {"evaluate": _evaluate, "demo": _demo, "detect": detect.run, "export": export.run,
                    "label": label.run}
        handlers[args.command](args)
    except KeyboardInterrupt:
        if verbose:
            raise
        print(f"scratchdet {command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as error:  # noqa: BLE001 - the CLI's boundary: one line per error, traceback on --verbose
        if verbose:
            raise
        hint = "" if isinstance(error, (UserError, TrainingDiverged)) else " (--verbose for the traceback)"
        print(f"scratchdet {command}: error: {_one_line(error)}{hint}", file=sys.stderr)
        return 1 if isinstance(error, TrainingDiverged) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
