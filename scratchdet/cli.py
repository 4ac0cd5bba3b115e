"""The ``scratchdet`` command line: ``train``, ``evaluate``, ``detect``, ``export`` and ``demo``.

    scratchdet train --config my.yaml --backbone poolresnet --epochs 20
    scratchdet evaluate runs/train/checkpoints/best.ckpt --split test --out metrics.json
    scratchdet detect photos/ --checkpoint runs/demo/model.pt --out runs/detect
    scratchdet export runs/demo/model.pt --format onnx --out model.onnx
    scratchdet demo

``python -m scratchdet ...`` is the same. Every ``train`` flag is a field of
:class:`scratchdet.pipeline.TrainSettings` (``--image-size`` sets
``image_size``); a YAML file given with ``--config`` holds the same keys,
and flags override it. Errors in what the user gave (unknown names, missing
files, incompatible checkpoints) print one line and exit with status 2; set
``SCRATCHDET_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

__all__ = ["main", "build_parser"]


class UserError(Exception):
    """An error in what the user asked for: printed as one line, exit status 2."""


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    from scratchdet.pipeline import TrainSettings, _field_types

    types = _field_types()
    for f in fields(TrainSettings):
        flag = "--" + f.name.replace("_", "-")
        kind = types[f.name]
        extra = {"nargs": "?", "const": "true", "metavar": "BOOL"} if kind is bool else {"metavar": kind.__name__.upper()}
        parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS,
                            help=f"(default: {f.default})", **extra)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands."""
    parser = argparse.ArgumentParser(prog="scratchdet", description="YOLO face detection from scratch.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a detector (Lightning)",
                           description="Train a detector. Flags override the YAML file given with --config.")
    train.add_argument("--config", dest="config_file", default=None, help="YAML file of settings")
    _add_train_flags(train)

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint on a dataset split")
    evaluate.add_argument("checkpoint", help="a .ckpt from training or a YoloDetector.save file")
    evaluate.add_argument("--dataset", default="synthfaces", choices=("synthfaces", "wider"))
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--data-root", default="data", help="SynthFaces cache folder")
    evaluate.add_argument("--wider-root", default=None, help="WIDER FACE folder (dataset wider)")
    evaluate.add_argument("--num-images", type=int, default=None, help="first N images of the split")
    evaluate.add_argument("--score-threshold", type=float, default=0.01)
    evaluate.add_argument("--iou-threshold", type=float, default=0.45, help="NMS IoU threshold")
    evaluate.add_argument("--out", default=None, help="write the metrics JSON here (default: print only)")
    evaluate.add_argument("--wider-out", default=None,
                          help="also write predictions in the official WIDER FACE layout to this folder")
    evaluate.add_argument("--device", default="cpu")

    from scratchdet import detect, export

    detect.add_arguments(sub.add_parser("detect", help="detect faces in an image, a folder, a video or a webcam",
                                        description=detect.__doc__.splitlines()[0]))
    export.add_arguments(sub.add_parser("export", help="export a checkpoint to TorchScript or ONNX",
                                        description=export.__doc__.splitlines()[0]))

    demo = sub.add_parser("demo", help="the main job: train on SynthFaces, evaluate, detect on photos")
    demo.add_argument("--output-dir", default="runs/demo")
    demo.add_argument("--epochs", type=int, default=None, help="override the demo's epoch budget")
    demo.add_argument("--train-size", type=int, default=None, help="override the number of training images")
    demo.add_argument("--data-root", default="data", help="SynthFaces cache folder")
    demo.add_argument("--quick", action="store_true", help="a tiny run that only checks the pipeline")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _train(args: argparse.Namespace) -> None:
    from scratchdet.pipeline import load_settings, run_training

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config_file")}
    settings = load_settings(args.config_file, overrides)
    result = run_training(settings)
    print(f"best checkpoint: {result.best_checkpoint}\nlast checkpoint: {result.last_checkpoint}\n"
          f"train time: {result.train_seconds:.0f} s, {result.images_per_second:.1f} images/s")


def _evaluate(args: argparse.Namespace) -> None:
    from scratchdet.model import YoloDetector
    from scratchdet.pipeline import evaluate_model, jsonable_metrics, open_split

    if not Path(args.checkpoint).is_file():
        raise UserError(f"checkpoint {args.checkpoint!r} does not exist")
    model = YoloDetector.from_checkpoint(args.checkpoint, map_location=args.device).to(args.device)
    source = open_split(args.dataset, args.split, model.config.image_size, args.data_root, args.wider_root,
                        args.num_images)
    metrics = evaluate_model(model, source, score_threshold=args.score_threshold,
                             iou_threshold=args.iou_threshold, wider_out=args.wider_out)
    text = json.dumps(jsonable_metrics(metrics), indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        print(f"metrics written to {args.out}")
    print(text)


def _demo(args: argparse.Namespace) -> None:
    from scratchdet.demo import run_demo

    run_demo(output_dir=args.output_dir, epochs=args.epochs, train_size=args.train_size, quick=args.quick,
             progress_bar=not args.no_progress, data_root=args.data_root)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scratchdet`` command; returns the exit status."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    args = build_parser().parse_args(argv)
    from scratchdet import detect, export

    handlers = {"train": _train, "evaluate": _evaluate, "demo": _demo, "detect": detect.run, "export": export.run}
    try:
        handlers[args.command](args)
    except (UserError, ValueError, FileNotFoundError, RuntimeError, OSError) as error:
        if os.environ.get("SCRATCHDET_DEBUG"):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"scratchdet {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scratchdet {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
