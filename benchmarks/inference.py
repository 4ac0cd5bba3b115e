"""Inference: end-to-end latency per photo, eager vs TorchScript vs ONNX Runtime vs Haar, in one run.

    python benchmarks/inference.py [--threads 1] [--quick] [--sizes 256 480] [--preset medium]

One 640x480 photo (matplotlib's grace_hopper.jpg resized, or noise where it
is missing) goes through each pipeline at each input size; "end to end" is
photo in, boxes in photo pixels out:

* ``eager``: :meth:`YoloDetector.predict` (letterbox, model, decode, NMS, back to the photo);
* ``torchscript``: the :func:`scratchdet.export.export_torchscript` file (the same steps inside);
* ``onnxruntime``: :func:`scratchdet.export.onnx_detect` (torch letterbox, ONNX Runtime grid
  with ``intra_op_num_threads = --threads``, scratchdet decode and NMS);
* ``haar``: OpenCV's frontal-face cascade on the photo resized to the same longest side
  (``scratchdet.baselines.HaarFaceDetector`` where it exists).

The models are untrained PoolResNets (latency does not depend on the weights)
whose head is randomised so that about a tenth of the predictors pass the
score threshold and NMS does real work (``candidates`` in the output). At
480 px the config is S = 15 (stride 32). Each pipeline is checked against eager
first, then timed (warm-up, median of repeats); the stages (letterbox, grid
model in eager torch and ONNX Runtime, decode + NMS + back to the photo) are
also timed alone. Prints one JSON document.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from _timing import benchmark_parser, emit, environment, median_seconds, parse_args
from scratchdet import export
from scratchdet.config import DetectorConfig
from scratchdet.model import YoloDetector, letterbox

THRESHOLDS = dict(score_threshold=0.25, iou_threshold=0.45, max_detections=100)


def sample_photo() -> np.ndarray:
    """A 640x480 ``uint8`` RGB photo."""
    from scratchdet.data.photos import read_image, sample_photos

    paths = sample_photos()
    if not paths:
        return np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return cv2.resize(read_image(paths[0]), (640, 480), interpolation=cv2.INTER_AREA)


def build_model(size: int, preset: str) -> YoloDetector:
    torch.manual_seed(0)
    model = YoloDetector(DetectorConfig(image_size=size, num_cells=size // 32), preset=preset).eval()
    with torch.no_grad():
        model.head.out.weight.normal_(std=0.2)
        model.head.out.bias.normal_(std=1.0)
        model.head.out.bias[4::5] = -2.0  # about a tenth of the predictors pass the score threshold
    return model.requires_grad_(False)


def haar_detector(size: int):
    """``(photo -> boxes, name)``: the Haar cascade on the photo resized to longest side ``size``."""
    try:
        from scratchdet.baselines import HaarFaceDetector

        haar = HaarFaceDetector()
        detector, name = haar.detect, repr(haar)
    except ImportError:  # the baseline module is not there: the cascade itself
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        name = "cv2.CascadeClassifier(haarcascade_frontalface_default.xml).detectMultiScale(1.1, 5)"

        def detector(image):
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            return {"boxes": cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5)}

    def run(photo: np.ndarray):
        scale = size / max(photo.shape[:2])
        return detector(cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))

    return run, name


def check_same(name: str, got: dict, want: dict, atol: float) -> float:
    if got["boxes"].shape != want["boxes"].shape:
        raise AssertionError(f"{name}: {len(got['boxes'])} boxes, eager found {len(want['boxes'])}")
    if not len(got["boxes"]):
        return 0.0
    diff = float(max((got["boxes"] - want["boxes"]).abs().max(), (got["scores"] - want["scores"]).abs().max()))
    if diff > atol:
        raise AssertionError(f"{name}: differs from eager by {diff} > {atol}")
    return diff


def stage_times(model: YoloDetector, session, photo: np.ndarray, repeats: int, warmup: int) -> dict:
    """Stage medians (ms): pre-processing, the grid model (eager and ONNX Runtime), post-processing."""
    from scratchdet.model import _to_photo
    from scratchdet.nms import postprocess

    size = model.config.image_size

    def pre():
        return letterbox(torch.from_numpy(photo).permute(2, 0, 1).float() / 255, size)

    padded, scale = pre()
    batch = padded[None]  # (1, 3, size, size)
    grid = model(batch)  # (1, S, S, B*5)

    def post():
        return _to_photo(postprocess(grid, model.config, **THRESHOLDS)[0], scale, photo.shape[:2])

    stages = {"preprocess": pre, "model_eager": lambda: model(batch),
              "model_onnxruntime": lambda: session.run(["grid"], {"images": batch.numpy()}), "postprocess": post}
    return {k: round(1e3 * median_seconds(f, repeats, warmup), 3) for k, f in stages.items()}


def bench_size(size: int, photo: np.ndarray, args, folder: Path) -> dict:
    model = build_model(size, args.preset)
    scripted = export.load_torchscript(export.export_torchscript(model, folder / f"m{size}.pt", **THRESHOLDS))
    session = export.onnx_session(export.export_onnx(model, folder / f"m{size}.onnx"), threads=args.threads)
    image = torch.from_numpy(photo)
    pipelines = {
        "eager": lambda: model.predict(photo, **THRESHOLDS)[0],
        "torchscript": lambda: dict(zip(("boxes", "scores"), scripted(image))),
        "onnxruntime": lambda: export.onnx_detect(session, model.config, photo, **THRESHOLDS),
    }
    want = pipelines["eager"]()
    parity = {name: check_same(name, fn(), want, 1e-3 if name == "onnxruntime" else 1e-4)
              for name, fn in pipelines.items() if name != "eager"}
    haar, haar_name = haar_detector(size)
    pipelines["haar"] = lambda: haar(photo)
    with torch.inference_mode():
        ms = {name: 1e3 * median_seconds(fn, args.repeats, args.warmup) for name, fn in pipelines.items()}
        stages = stage_times(model, session, photo, args.repeats, args.warmup)
    grid = model(letterbox(image.permute(2, 0, 1).float() / 255, size)[0][None])
    return {
        "image_size": size, "num_cells": model.config.num_cells, "preset": args.preset,
        "candidates": int((grid[..., 4::5] >= THRESHOLDS["score_threshold"]).sum()), "detections": len(want["boxes"]),
        "end_to_end_ms": {k: round(v, 3) for k, v in ms.items()},
        "speedup_vs_eager": {k: round(ms["eager"] / v, 2) for k, v in ms.items() if k != "eager"},
        "stages_ms": stages, "max_abs_difference_vs_eager": parity, "haar_detector": haar_name,
    }


def main() -> None:
    parser = benchmark_parser(__doc__, "few repeats (a smoke run)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 480])
    parser.add_argument("--preset", default="medium", choices=("small", "medium", "large"))
    args = parse_args(parser)
    args.repeats, args.warmup = (3, 1) if args.quick else (30, 5)
    cv2.setNumThreads(args.threads)
    photo = sample_photo()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        rows = [bench_size(size, photo, args, Path(folder)) for size in args.sizes]
    at_480 = [r["end_to_end_ms"]["onnxruntime"] for r in rows if r["image_size"] == 480]
    emit({
        "benchmark": "inference", "environment": environment(args.threads), "photo": list(photo.shape),
        "thresholds": THRESHOLDS, "repeats": args.repeats, "quick": args.quick,
        "onnx_opset": export.ONNX_OPSET, "results": rows,
        "goal": {"pipeline": "poolresnet medium, 480 px, onnxruntime, end to end", "target_ms": 30.0,
                 "measured_ms": at_480[0] if at_480 and args.preset == "medium" else None,
                 "met": bool(at_480 and args.preset == "medium" and at_480[0] < 30.0)},
        "wall_seconds": round(time.perf_counter() - start, 1),
    })


if __name__ == "__main__":
    main()
