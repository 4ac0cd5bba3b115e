"""real_photos: face detectors on labelled real photos (AP50 and PR curves) and on SynthFaces test.

    python benchmarks/real_photos.py [--photos DIR] [--model NAME[=PATH] ...] [--sizes 256 384 480 640]
                                     [--synth-images 500] [--no-baselines] [--curves] [--threads 2] [--quick]

Measures the sim-to-real gap of notebook 12. ``--photos`` is a COCO-format
folder (``annotations.json`` + the images it names); the default is the
course's real-photo dev set ``../shared/realdev`` next to the checkout, which
is **for measuring only**: nothing here trains or picks a threshold on it.

Detectors, on the same photos in one run:

* ours: each ``--model NAME=PATH`` (``--model NAME`` reads ``models/NAME.pt``;
  default: every ``models/*.pt``), through ``predict`` at each input size in
  ``--sizes`` (the photo letterboxed to that longer side) and at ``multi``
  (:data:`scratchdet.config.MULTI_SCALE_SIZES` merged, if the model's
  ``predict`` supports it), score threshold ``EVAL_SCORE_THRESHOLD``;
* ``haar``: OpenCV's frontal-face cascade on the photo at its own size;
* ``yunet``: libfacedetection's YuNet (``conf=0``) on the photo at its own
  size; skipped, with the reason, when ``yuface`` is missing.

Accuracy: all-point AP at IoU 0.5 (:func:`scratchdet.evaluation.evaluate_detections`),
plus, for our models, SynthFaces test AP50 overall and by face size at the
training size (``--synth-images`` images; 0 skips it). ``--curves`` adds each
detector's precision-recall curve (at its best size for ours). Prints one
JSON document. ``--quick`` checks the code on 3 photos, 2 sizes and 8
SynthFaces images; without a ``--photos`` folder it writes 3 SynthFaces test
images as a stand-in COCO folder (a check of the code, not a measurement).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from _timing import benchmark_parser, emit, environment, finite, parse_args
from scratchdet.baselines import HaarFaceDetector, YuFaceDetector
from scratchdet.config import EVAL_SCORE_THRESHOLD
from scratchdet.data.coco import CocoFaces
from scratchdet.data.synthfaces import SynthFaces
from scratchdet.evaluation import SIZE_BINS, collect_predictions, evaluate_by_size, evaluate_detections
from scratchdet.model import YoloDetector

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = ROOT.parent / "shared" / "realdev"
DEFAULT_SIZES = (256, 384, 480, 640)


def stand_in_photos(count: int = 3) -> Path:
    """A temporary COCO folder of ``count`` SynthFaces test images (for ``--quick`` without real photos)."""
    folder = Path(tempfile.mkdtemp(prefix="real_photos_quick_"))
    source = SynthFaces("test", image_size=256, num_images=count)
    images, annotations = [], []
    for i in range(count):
        image, boxes = source[i]
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        images.append({"id": i, "file_name": f"{i}.png", "width": 256, "height": 256})
        annotations += [{"id": len(annotations) + k, "image_id": i, "category_id": 1, "iscrowd": 0,
                         "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]}
                        for k, (x1, y1, x2, y2) in enumerate(boxes.tolist())]
    (folder / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "face"}]}))
    return folder


def open_photos(folder: Path, quick: bool, parser) -> CocoFaces:
    """The COCO photos of ``folder``; with ``quick`` and no such folder, :func:`stand_in_photos`."""
    if not (folder / "annotations.json").is_file():
        if not quick:
            parser.error(f"--photos {folder}: no annotations.json there (a COCO-format folder is needed)")
        folder = stand_in_photos()
    return CocoFaces(folder / "annotations.json")


def parse_models(specs: list[str], parser) -> dict[str, Path]:
    """``NAME=PATH`` / ``NAME`` (``models/NAME.pt``); none: every ``models/*.pt``. A missing file is a usage error."""
    if not specs:
        return {p.stem: p for p in sorted((ROOT / "models").glob("*.pt"))}
    models = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        path = Path(path) if path else ROOT / "models" / f"{name}.pt"
        path = (path if path.is_absolute() or path.exists() else ROOT / path).resolve()
        if not name or name in ("haar", "yunet"):
            parser.error(f"--model {spec!r}: give NAME=PATH with a NAME other than haar / yunet")
        if not path.is_file():
            parser.error(f"--model {spec!r}: no checkpoint at {path}")
        models[name] = path
    return models


def curve(result: dict, points: int = 101) -> dict:
    """A precision-recall curve thinned to at most ``points`` points (for plotting from the JSON)."""
    recall, precision = np.asarray(result["recall"]), np.asarray(result["precision"])
    if len(recall) > points:
        keep = np.unique(np.linspace(0, len(recall) - 1, points).round().astype(int))
        recall, precision = recall[keep], precision[keep]
    return {"recall": recall.tolist(), "precision": precision.tolist()}


def photo_ap(detector, photos, with_curve: bool) -> dict:
    """AP50 of ``detector(image) -> {"boxes", "scores"}`` on the photos (+ its PR curve)."""
    predictions, ground_truths, seconds = collect_predictions(detector, photos)
    result = evaluate_detections(predictions, ground_truths, iou_thresholds=(0.5,))
    out = {"ap50": result["ap50"], "tp": result["tp"], "fp": result["fp"], "num_gt": result["num_gt"],
           "seconds_per_image": seconds}
    if with_curve:
        out["curve"] = curve(result)
    return out


def ours(path: Path, photos, sizes, synth_images: int, with_curves: bool) -> dict:
    """One checkpoint: realdev AP50 at each input size (+ ``multi``), SynthFaces test AP50 by size."""
    model = YoloDetector.from_checkpoint(path).eval()
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    out = {"checkpoint": str(shown), "backbone": model.hyperparameters.get("backbone"),
           "pretrained_init": model.hyperparameters.get("pretrained"), "head": model.config.head,
           "training_size": model.config.image_size, "photos": {}}
    best = None
    for size in list(sizes) + (["multi"] if hasattr(model, "predict_multiscale") else []):
        if size == "multi":
            def detector(image):
                return model.predict_multiscale(image, score_threshold=EVAL_SCORE_THRESHOLD)[0]
        else:
            def detector(image, size=size):
                return model.predict(image, size, score_threshold=EVAL_SCORE_THRESHOLD)[0]
        result = photo_ap(detector, photos, with_curves)
        out["photos"][str(size)] = result
        if best is None or result["ap50"] > out["photos"][best]["ap50"]:
            best = str(size)
    if with_curves:
        curves = {k: v.pop("curve") for k, v in out["photos"].items()}
        out["curve"] = {"size": best, **curves[best]}
    if synth_images:
        source = SynthFaces("test", image_size=model.config.image_size, num_images=synth_images)
        predictions, ground_truths, _ = collect_predictions(
            lambda image: model.predict(image, score_threshold=EVAL_SCORE_THRESHOLD)[0], source)
        by_size = evaluate_by_size(predictions, ground_truths, SIZE_BINS)
        out["synthfaces"] = {k: by_size[k] for k in ("ap50", "ap50_small", "ap50_medium", "ap50_large", "ap50_ge24")
                             if k in by_size}
    return out


def baselines(photos, threads: int, with_curves: bool) -> tuple[dict, dict]:
    """Haar and YuNet on the photos at their own size: ``(results, skipped)``."""
    results, skipped = {"haar": photo_ap(HaarFaceDetector().detect, photos, with_curves)}, {}
    try:
        yunet = YuFaceDetector(0.0, threads)
    except ImportError as error:
        skipped["yunet"] = str(error)
    else:
        results["yunet"] = photo_ap(yunet, photos, with_curves)
    return results, skipped


def main() -> None:
    parser = benchmark_parser(__doc__, "the first 3 photos, 8 SynthFaces images, sizes 256 and 480")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS,
                        help="COCO folder: annotations.json + images (default: ../shared/realdev)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME[=PATH]",
                        help="a YoloDetector checkpoint (repeatable); default: every models/*.pt")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="input sizes (longer side)")
    parser.add_argument("--synth-images", type=int, default=500, help="SynthFaces test images (0: skip)")
    parser.add_argument("--no-baselines", action="store_true", help="skip Haar and YuNet")
    parser.add_argument("--curves", action="store_true", help="add precision-recall curves")
    parser.add_argument("--note", default=None, help="free text saved in the JSON")
    args = parse_args(parser)
    photos = open_photos(args.photos, args.quick, parser)
    if args.quick:
        photos = [photos[i] for i in range(min(3, len(photos)))]
        args.sizes, args.synth_images = [256, 480], min(args.synth_images, 8)
    cv2.setNumThreads(args.threads)
    start = time.perf_counter()
    detectors = {name: ours(path, photos, args.sizes, args.synth_images, args.curves)
                 for name, path in parse_models(args.model, parser).items()}
    skipped = {}
    if not args.no_baselines:
        found, skipped = baselines(photos, args.threads, args.curves)
        detectors.update(found)
    table = []
    for name, d in detectors.items():
        if "photos" in d:
            cells = " ".join(f"{s}:{r['ap50']:.3f}" for s, r in d["photos"].items())
            synth = d.get("synthfaces", {}).get("ap50")
            table.append(f"{name:<40} {cells}" + (f"  synth:{synth:.3f}" if synth is not None else ""))
        else:
            table.append(f"{name:<40} native:{d['ap50']:.3f}")
    emit(finite({
        "benchmark": "real_photos", "environment": environment(args.threads), "note": args.note,
        "quick": args.quick, "photos": {"folder": str(args.photos), "num_images": len(photos),
                                        "num_faces": int(sum(len(b) for _, b in photos))},
        "ap": "all-point AP at IoU 0.5, score >= EVAL_SCORE_THRESHOLD for ours", "table": table,
        "detectors": detectors, "skipped": skipped, "wall_seconds": round(time.perf_counter() - start, 1),
        "load_average_end": os.getloadavg(),
    }))


if __name__ == "__main__":
    main()
