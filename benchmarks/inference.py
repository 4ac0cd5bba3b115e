"""Inference: latency per photo of eager vs torch.export (.pt2) vs ONNX Runtime, one model at two input sizes.

    python benchmarks/inference.py [--threads 1] [--quick] [--sizes 256 480] [--preset medium]

One model (an untrained PoolResNet trained-size 256, S = 8, stride 32) runs at
each input size: the grid follows the input (480 px -> S = 15). One 640x480
photo (matplotlib's grace_hopper.jpg resized) goes through each pipeline;
"end to end" is photo in, boxes in photo pixels out, and every pipeline is the
one :func:`scratchdet.model.predict_with` path (the one letterbox, the one
``postprocess``); only the grid model differs:

* ``eager``: :meth:`YoloDetector.predict`;
* ``pt2``: :func:`scratchdet.export.load_exported` of the ``torch.export`` file;
* ``onnxruntime``: :func:`scratchdet.export.load_exported` of the ONNX file
  (``intra_op_num_threads = --threads``);
* ``haar``: OpenCV's frontal-face cascade on the photo resized to the same
  longest side (:class:`scratchdet.baselines.HaarFaceDetector`), for scale.

The head is randomised so that some predictors pass the score threshold and
NMS does real work (``candidates``). Each pipeline is checked against eager
first, then timed (warm-up, median of repeats); the grid model alone is timed
too (``grid_ms``). Prints one JSON document.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from _timing import benchmark_parser, emit, environment, median_seconds, parse_args
from scratchdet.baselines import HaarFaceDetector
from scratchdet.config import MAX_DETECTIONS, NMS_IOU_THRESHOLD, SCORE_THRESHOLD, DetectorConfig
from scratchdet.data.photos import read_image, sample_photos
from scratchdet.export import ONNX_OPSET, export_onnx, export_pt2, load_exported
from scratchdet.letterbox import letterbox
from scratchdet.model import YoloDetector

THRESHOLDS = dict(score_threshold=SCORE_THRESHOLD, iou_threshold=NMS_IOU_THRESHOLD, max_detections=MAX_DETECTIONS)
TRAINING_SIZE = 256


def sample_photo() -> np.ndarray:
    """A 640x480 ``uint8`` RGB photo (noise where the sample photo is missing)."""
    paths = sample_photos()
    if not paths:
        return np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return cv2.resize(read_image(paths[0]), (640, 480), interpolation=cv2.INTER_AREA)


def build_model(preset: str) -> YoloDetector:
    torch.manual_seed(0)
    model = YoloDetector(DetectorConfig(image_size=TRAINING_SIZE, num_cells=TRAINING_SIZE // 32), preset=preset)
    with torch.no_grad():
        model.head.out.weight.normal_(std=0.2)
        model.head.out.bias.normal_(std=1.0)
        model.head.out.bias[4::5] = -2.0  # a few predictors pass the score threshold
    return model.eval().requires_grad_(False)


def max_difference(name: str, got: dict, want: dict, atol: float = 1e-3) -> float:
    if got["boxes"].shape != want["boxes"].shape:
        raise AssertionError(f"{name}: {len(got['boxes'])} boxes, eager found {len(want['boxes'])}")
    if not len(got["boxes"]):
        return 0.0
    diff = float(max((got["boxes"] - want["boxes"]).abs().max(), (got["scores"] - want["scores"]).abs().max()))
    if diff > atol:
        raise AssertionError(f"{name}: differs from eager by {diff} > {atol}")
    return diff


def bench_size(size: int, photo: np.ndarray, model: YoloDetector, exported: dict, args) -> dict:
    haar = HaarFaceDetector()
    scale = size / max(photo.shape[:2])
    pipelines = {"eager": lambda: model.predict(photo, size, **THRESHOLDS)[0]}
    pipelines.update({name: (lambda e=e: e.predict(photo, size, **THRESHOLDS)[0]) for name, e in exported.items()})
    want = pipelines["eager"]()
    parity = {name: max_difference(name, fn(), want) for name, fn in pipelines.items() if name != "eager"}
    pipelines["haar"] = lambda: haar.detect(cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    batch = letterbox(torch.from_numpy(photo).permute(2, 0, 1).float() / 255, size)[0][None]  # (1, 3, size, size)
    grids = {"eager": model, **{name: e.grid for name, e in exported.items()}}
    with torch.inference_mode():
        ms = {name: 1e3 * median_seconds(fn, args.repeats, args.warmup) for name, fn in pipelines.items()}
        grid_ms = {name: round(1e3 * median_seconds(lambda f=f: f(batch), args.repeats, args.warmup), 3)
                   for name, f in grids.items()}
        grid = model(batch)  # (1, S, S, B*5)
    return {
        "input_size": size, "grid": list(grid.shape[1:3]),
        "candidates": int((grid[..., 4::5] >= THRESHOLDS["score_threshold"]).sum()), "detections": len(want["boxes"]),
        "end_to_end_ms": {k: round(v, 3) for k, v in ms.items()},
        "speedup_vs_eager": {k: round(ms["eager"] / v, 2) for k, v in ms.items() if k != "eager"},
        "grid_ms": grid_ms, "max_abs_difference_vs_eager": parity, "haar_detector": repr(haar),
    }


def main() -> None:
    parser = benchmark_parser(__doc__, "few repeats (a smoke run)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 480])
    parser.add_argument("--preset", default="medium", choices=("small", "medium", "large"))
    args = parse_args(parser)
    args.repeats, args.warmup = (3, 1) if args.quick else (30, 5)
    cv2.setNumThreads(args.threads)
    photo, model = sample_photo(), build_model(args.preset)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        exported = {"pt2": load_exported(export_pt2(model, Path(folder) / "m.pt2")),
                    "onnxruntime": load_exported(export_onnx(model, Path(folder) / "m.onnx"), threads=args.threads)}
        rows = [bench_size(size, photo, model, exported, args) for size in args.sizes]
    emit({
        "benchmark": "inference", "environment": environment(args.threads), "photo": list(photo.shape),
        "model": {"backbone": "poolresnet", "preset": args.preset, "config": model.config.to_dict()},
        "thresholds": THRESHOLDS, "repeats": args.repeats, "quick": args.quick, "onnx_opset": ONNX_OPSET,
        "results": rows, "wall_seconds": round(time.perf_counter() - start, 1),
    })


if __name__ == "__main__":
    main()
