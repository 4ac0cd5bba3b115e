"""heads: face detectors side by side on SynthFaces test: AP50 by face size and crowding, and latency.

    python benchmarks/heads.py [--threads 1] [--quick] [--num-images 500] [--model NAME[=PATH] ...] [--note TEXT]

Detectors, all in one run on the same images (SynthFaces ``test``, 256 px):

* ours: ``v1`` (``models/synthfaces_poolresnet_medium.pt``, the YOLO v1 head)
  plus each ``--model NAME=PATH`` (``--model NAME`` reads ``models/NAME.pt``),
  any :class:`~scratchdet.model.YoloDetector` checkpoint, through
  ``predict`` at its training size (``config.image_size``) with the AP score
  threshold ``EVAL_SCORE_THRESHOLD``;
* ``yunet``: libfacedetection's YuNet (:class:`scratchdet.baselines.YuFaceDetector`,
  ``conf=0``: every face it reports), zero-shot on the 256 px image;
* ``yunet_2x``: the same on the image upscaled 2x (bilinear), boxes mapped
  back: YuNet, trained on WIDER FACE photos, finds few faces under ~10 px.
  Both are skipped, with the reason in the JSON, when ``yuface`` is missing.

Accuracy (all-point AP at IoU 0.5): overall and per face-size bin
(:func:`scratchdet.evaluation.evaluate_by_size`, ``SIZE_BINS``: small
< 16 px, medium 16-48, large >= 48, ge24 >= 24) and per faces-per-image bin
(:func:`~scratchdet.evaluation.evaluate_by_crowd`, ``CROWD_BINS``: ``single``
is the images with exactly one face), plus AP50:95. YuNet draws WIDER FACE's
boxes, not SynthFaces' (forehead to chin): IoU 0.5 forgives that, AP50:95 not.

Latency: one SynthFaces test image (256 x 256), end to end (image in, boxes
in its pixels out) at the thresholds a user runs (ours ``SCORE_THRESHOLD``,
YuNet conf 0.5, yuface's default), at input 256 and 480 px: ours
``predict(image, image_size=size)``, YuNet on the image resized to ``size``
(``yunet_2x``: ``2 * size``). Median ms at batch 1 with torch, OpenCV and
yuface's OpenMP all at ``--threads``; the detectors are interleaved in rounds
so that a busy machine slows them alike. The load average is recorded.
Prints one JSON document (``table``: one line per detector).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from functools import partial
from importlib import metadata
from pathlib import Path

import cv2
import torch

from _timing import benchmark_parser, emit, environment, finite, median_seconds, parse_args
from scratchdet.baselines import YuFaceDetector
from scratchdet.config import EVAL_SCORE_THRESHOLD, MAX_DETECTIONS, NMS_IOU_THRESHOLD, SCORE_THRESHOLD
from scratchdet.data.synthfaces import SynthFaces
from scratchdet.evaluation import (COCO_IOU_THRESHOLDS, CROWD_BINS, SIZE_BINS, collect_predictions,
                                   evaluate_by_crowd, evaluate_by_size, evaluate_detections)
from scratchdet.model import YoloDetector
from scratchdet.profiling import count_macs, count_parameters

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = {"v1": ROOT / "models" / "synthfaces_poolresnet_medium.pt"}
DATA_SIZE = 256  # SynthFaces test images are DATA_SIZE x DATA_SIZE
LATENCY_SIZES = (256, 480)
YUNET_AP_CONF, YUNET_USER_CONF = 0.0, 0.5
YUNET_UPSCALES = {"yunet": 1, "yunet_2x": 2}
TABLE_COLUMNS = ("ap50", "ap50_small", "ap50_ge24", "ap50_single", "ap50_crowd")


class Yolo:
    """A :class:`YoloDetector` as ``detector(image, input_size=None) -> {"boxes", "scores"}`` (xyxy px)."""

    def __init__(self, model: YoloDetector, score_threshold: float) -> None:
        self.model, self.score_threshold = model, score_threshold

    def __call__(self, image, input_size: int | None = None) -> dict:
        return self.model.predict(image, input_size, score_threshold=self.score_threshold,
                                  iou_threshold=NMS_IOU_THRESHOLD, max_detections=MAX_DETECTIONS)[0]


class ResizedYuNet:
    """YuNet on the image resized to ``upscale * input_size`` on its longer side (default: ``upscale`` x).

    Boxes come back in the given image's pixels (``Tensor[K, 4]`` xyxy).
    """

    def __init__(self, detector: YuFaceDetector, upscale: int) -> None:
        self.detector, self.upscale = detector, upscale

    def __call__(self, image, input_size: int | None = None) -> dict:
        h, w = image.shape[:2]
        scale = self.upscale * (input_size or max(h, w)) / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 wants (width, height)
        if size != (w, h):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        out = self.detector(image)
        back = torch.tensor([w / size[0], h / size[1]] * 2)
        return {"boxes": out["boxes"] * back, "scores": out["scores"]}


def parse_models(specs: list[str], parser) -> dict[str, Path]:
    """``v1`` plus each ``NAME=PATH`` / ``NAME`` (``models/NAME.pt``); a missing file is a usage error."""
    models = dict(DEFAULT_MODELS)
    for spec in specs:
        name, _, path = spec.partition("=")
        path = Path(path) if path else ROOT / "models" / f"{name}.pt"
        path = (path if path.is_absolute() or path.exists() else ROOT / path).resolve()
        if not name or name in YUNET_UPSCALES:
            parser.error(f"--model {spec!r}: give NAME=PATH with a NAME other than {sorted(YUNET_UPSCALES)}")
        if not path.is_file():
            parser.error(f"--model {spec!r}: no checkpoint at {path}")
        models[name] = path
    return models


def build_detectors(models: dict[str, Path], threads: int) -> tuple[dict, dict, dict, dict]:
    """``(for AP, for latency, description, skipped)``, each keyed by detector name."""
    for_ap, for_latency, info, skipped = {}, {}, {}, {}
    for name, path in models.items():
        model = YoloDetector.from_checkpoint(path).eval()
        for_ap[name], for_latency[name] = Yolo(model, EVAL_SCORE_THRESHOLD), Yolo(model, SCORE_THRESHOLD)
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        info[name] = {"kind": "YoloDetector", "checkpoint": str(shown),
                      "backbone": model.hyperparameters.get("backbone"),
                      "preset": model.hyperparameters.get("preset"), "config": model.config.to_dict(),
                      "parameters": count_parameters(model),
                      "macs_millions": {s: round(count_macs(model, s) / 1e6, 1) for s in LATENCY_SIZES},
                      "ap_input_size": model.config.image_size, "ap_score_threshold": EVAL_SCORE_THRESHOLD,
                      "latency_score_threshold": SCORE_THRESHOLD}
    try:
        ap_yunet, user_yunet = YuFaceDetector(YUNET_AP_CONF, threads), YuFaceDetector(YUNET_USER_CONF, threads)
    except ImportError as error:
        return for_ap, for_latency, info, {name: str(error) for name in YUNET_UPSCALES}
    for name, upscale in YUNET_UPSCALES.items():
        for_ap[name] = ResizedYuNet(ap_yunet, upscale)
        for_latency[name] = ResizedYuNet(user_yunet, upscale)
        info[name] = {"kind": f"yuface {metadata.version('yuface')} (YuNet)", "upscale": upscale, "ap_input_size": upscale * DATA_SIZE,
                      "ap_detector": repr(ap_yunet), "latency_detector": repr(user_yunet)}
    return for_ap, for_latency, info, skipped


def accuracy(detector, source, num_images: int) -> dict:
    """AP50 overall, by face size and by faces per image; AP50:95; detections per image, lowest score."""
    predictions, ground_truths, seconds = collect_predictions(detector, source, num_images)
    out = evaluate_by_size(predictions, ground_truths, SIZE_BINS)
    out.update(evaluate_by_crowd(predictions, ground_truths, CROWD_BINS))
    out["ap50_95"] = evaluate_detections(predictions, ground_truths, COCO_IOU_THRESHOLDS)["ap"]
    scores = torch.cat([p["scores"].float().cpu() for p in predictions])
    out.update(detections_per_image=len(scores) / len(predictions),
               lowest_score=float(scores.min()) if len(scores) else None, seconds_per_image=seconds)
    return out


def latency(detectors: dict, image, rounds: int, repeats: int, warmup: int) -> dict:
    """Median ms per detector and input size; each round times every detector once, in turn."""
    samples = {(name, size): [] for name in detectors for size in LATENCY_SIZES}
    with torch.inference_mode():
        for r in range(rounds):
            for (name, size), times in samples.items():
                times.append(median_seconds(partial(detectors[name], image, size), repeats, warmup if r == 0 else 0))
    out = {name: {} for name in detectors}
    for (name, size), times in samples.items():
        out[name][str(size)] = round(1e3 * statistics.median(times), 2)
    return out


def table(metrics: dict, latencies: dict) -> list[str]:
    """One fixed-width line per detector: AP50 all, < 16 px, >= 24 px, single face, crowds; ms at 256, 480."""
    def cell(value) -> str:
        return f"{value:>7.3f}" if isinstance(value, float) and math.isfinite(value) else f"{'-':>7}"

    header = f"{'detector':<10}" + "".join(f"{c.removeprefix('ap50_'):>7}" for c in TABLE_COLUMNS)
    lines = [header + "".join(f"{'ms@' + str(s):>9}" for s in LATENCY_SIZES)]
    for name, m in metrics.items():
        ms = "".join(f"{latencies[name][str(s)]:>9.1f}" for s in LATENCY_SIZES)
        lines.append(f"{name:<10}" + "".join(cell(m[c]) for c in TABLE_COLUMNS) + ms)
    return lines


def main() -> None:
    parser = benchmark_parser(__doc__, "8 images, few latency repeats (a smoke run)")
    parser.add_argument("--num-images", type=int, default=500, help="first N SynthFaces test images (default: 500)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME[=PATH]",
                        help="another YoloDetector checkpoint (repeatable); NAME alone reads models/NAME.pt")
    parser.add_argument("--note", default=None, help="free text saved in the JSON (e.g. the machine was busy)")
    args = parse_args(parser)
    if args.num_images < 1:
        parser.error(f"--num-images must be >= 1, got {args.num_images}")
    num_images = min(args.num_images, 8) if args.quick else args.num_images
    rounds, repeats, warmup = (1, 2, 1) if args.quick else (5, 10, 3)
    cv2.setNumThreads(args.threads)
    load_start, start = os.getloadavg(), time.perf_counter()
    for_ap, for_latency, info, skipped = build_detectors(parse_models(args.model, parser), args.threads)
    source = SynthFaces("test", image_size=DATA_SIZE, num_images=num_images)
    metrics = {name: accuracy(detector, source, num_images) for name, detector in for_ap.items()}
    image, boxes = source[0]
    latencies = latency(for_latency, image, rounds, repeats, warmup)
    for name in info:
        info[name].update(metrics=metrics[name], latency_ms=latencies[name])
    emit(finite({
        "benchmark": "heads", "environment": {**environment(args.threads), "load_average_start": load_start,
                                              "load_average_end": os.getloadavg()},
        "note": args.note, "quick": args.quick,
        "dataset": {"name": "SynthFaces", "split": "test", "image_size": DATA_SIZE, "num_images": num_images,
                    "num_faces": metrics[next(iter(metrics))]["num_gt"], "size_bins": SIZE_BINS,
                    "crowd_bins": CROWD_BINS},
        "latency": {"image": f"SynthFaces test[0], {DATA_SIZE}x{DATA_SIZE}, {len(boxes)} faces",
                    "input_sizes": LATENCY_SIZES, "rounds": rounds, "repeats_per_round": repeats},
        "table": table(metrics, latencies), "detectors": info, "skipped": skipped,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }))


if __name__ == "__main__":
    main()
