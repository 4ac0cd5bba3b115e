"""Export a trained detector: TorchScript (the whole pipeline) and ONNX (the grid).

* **TorchScript** (:func:`export_torchscript`): letterbox, model, decoding and
  NMS in one file that needs only ``torch`` (not scratchdet, not torchvision:
  NMS is written in TorchScript here). One photo in, ``uint8 Tensor[H, W, 3]``
  RGB of any size; ``(boxes Tensor[K, 4] xyxy pixels of the photo, scores
  Tensor[K])`` out, by decreasing score, as :meth:`YoloDetector.predict`::

      detector = torch.jit.load("face.torchscript.pt")
      boxes, scores = detector(torch.from_numpy(cv2.cvtColor(cv2.imread("photo.jpg"), cv2.COLOR_BGR2RGB)))

  Model and decoding are *traced* at ``[1, 3, size, size]`` (fixed shapes);
  the wrapper is *scripted*: letterboxing depends on the photo, NMS on the data.
* **ONNX** (:func:`export_onnx`, opset :data:`ONNX_OPSET` = 18, torch's default
  ``torch.export``-based exporter): the grid model only, input ``images``
  float32 ``[N, 3, size, size]`` RGB in [0, 1] (letterboxed; the ImageNet
  normalisation is inside), output ``grid`` float32 ``[N, S, S, B*5]``, N
  dynamic. To decode, in any language: predictor b of cell (row i, column j) is
  ``grid[n, i, j, 5*b : 5*b + 5] = (x, y, sqrt_w, sqrt_h, conf)``, its box
  centre ``((j + x) / S, (i + y) / S)`` and size ``(sqrt_w**2, sqrt_h**2)``,
  times ``size`` for pixels, its score ``conf``; keep ``conf >= threshold``,
  run NMS. :func:`onnx_detect` is ``predict`` with ONNX Runtime inside.

Both are checked against the eager model (:func:`torchscript_parity`,
:func:`onnx_parity`). Taught in ``notebooks/09_inference_and_export.ipynb``.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path
from typing import Tuple

import numpy as np
import torch
from torch import Tensor, nn

from scratchdet.boxes import box_area, clip_boxes
from scratchdet.config import DetectorConfig
from scratchdet.grid import decode_grid
from scratchdet.model import PAD_VALUE, YoloDetector

__all__ = ["ONNX_OPSET", "EndToEndDetector", "export_torchscript", "load_torchscript", "export_onnx", "onnx_session",
           "onnx_detect", "torchscript_parity", "onnx_parity", "add_arguments", "run"]

ONNX_OPSET = 18
FORMATS = ("torchscript", "onnx")


class _GridToBoxes(nn.Module):
    """``Tensor[1, 3, size, size]`` -> boxes ``[S*S*B, 4]`` (xyxy input pixels, clipped), scores, areas."""

    def __init__(self, model: YoloDetector) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        boxes, scores = decode_grid(self.model(images), self.config)  # (1, S*S*B, 4), (1, S*S*B)
        boxes = clip_boxes(boxes[0], self.config.image_size)  # (S*S*B, 4)
        return boxes, scores[0], box_area(boxes)


def _letterbox(image: Tensor, size: int, pad_value: float) -> Tuple[Tensor, float, float]:
    """:func:`scratchdet.model.letterbox` in TorchScript-able form (tests check they are equal)."""
    h, w = image.shape[1], image.shape[2]
    longest = max(h, w)
    new_h, new_w = max(1, int(round(h * size / longest))), max(1, int(round(w * size / longest)))
    if new_h != h or new_w != w:
        image = nn.functional.interpolate(image[None], size=(new_h, new_w), mode="bilinear",
                                          align_corners=False, antialias=True)[0]  # (3, new_h, new_w)
    padded = nn.functional.pad(image, (0, size - new_w, 0, size - new_h), value=pad_value)
    return padded, new_w / w, new_h / h  # (3, size, size), scale_x, scale_y


def _area(boxes: Tensor) -> Tensor:
    """:func:`scratchdet.boxes.box_area` for ``Tensor[K, 4]``, kept here so the scripted code
    depends on no other module staying TorchScript-able (tests check they are equal)."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)  # (K, 2)
    return wh[:, 0] * wh[:, 1]


def _greedy_nms(boxes: Tensor, iou_threshold: float) -> Tensor:
    """Keep mask ``BoolTensor[K]`` of greedy NMS on boxes already sorted by decreasing score.

    The IoU is :func:`scratchdet.boxes.box_iou`'s formula, compared in double
    precision as ``torchvision.ops.nms`` does; the greedy result is the fixed
    point of "a box survives unless a better, surviving box overlaps it",
    reached from "all survive" in at most K rounds (usually 2-4), as in
    :mod:`scratchdet.nms`.
    """
    area = _area(boxes)  # (K,)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])  # (K, K, 2)
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]  # (K, K)
    iou = inter / (area[:, None] + area[None, :] - inter)
    suppresses = (iou.double() > iou_threshold).triu(1)  # (K, K): better row i drops worse column j
    keep = torch.ones(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    for _ in range(boxes.shape[0]):
        new = ~(suppresses & keep[:, None]).any(0)
        if bool(torch.equal(new, keep)):
            break
        keep = new
    return keep


class EndToEndDetector(nn.Module):
    """One photo in, final detections out: what :meth:`YoloDetector.predict` does, in one module.

    Args:
        model: the detector (its config fixes the input size, S and B).
        score_threshold, iou_threshold, max_detections: as in
            :func:`scratchdet.nms.postprocess`, fixed in the exported file.

    ``forward(image uint8 Tensor[H, W, 3] RGB) -> (boxes Tensor[K, 4], scores Tensor[K])``,
    boxes xyxy in the photo's pixels, by decreasing score (ties in grid order).
    """

    def __init__(self, model: YoloDetector, score_threshold: float = 0.25, iou_threshold: float = 0.45,
                 max_detections: int = 100) -> None:
        super().__init__()
        if not isinstance(model, YoloDetector):
            raise TypeError(f"model must be a YoloDetector, got {type(model).__name__}")
        for name, value in (("score_threshold", score_threshold), ("iou_threshold", iou_threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 1:
            raise ValueError(f"max_detections must be a positive int, got {max_detections!r}")
        self.core = _GridToBoxes(model)
        self.image_size: int = model.config.image_size
        self.pad_value: float = PAD_VALUE / 255
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou_threshold)
        self.max_detections: int = max_detections

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor]:
        if image.dim() != 3 or image.shape[2] != 3 or image.dtype != torch.uint8:
            raise ValueError("image must be a uint8 Tensor[H, W, 3] (RGB), got shape "
                             + str(list(image.shape)) + " dtype " + str(image.dtype))
        height, width = image.shape[0], image.shape[1]
        padded, scale_x, scale_y = _letterbox(image.permute(2, 0, 1).float() / 255, self.image_size,
                                               self.pad_value)
        boxes, scores, areas = self.core(padded[None])  # (S*S*B, 4), (S*S*B,), (S*S*B,)
        candidates = ((scores >= self.score_threshold) & (areas > 0)).nonzero()[:, 0]
        order = torch.sort(scores[candidates], descending=True, stable=True)[1]
        candidates = candidates[order]  # by decreasing score, ties in grid order
        kept = candidates[_greedy_nms(boxes[candidates], self.iou_threshold)][:self.max_detections]
        scale = torch.tensor([scale_x, scale_y, scale_x, scale_y], dtype=boxes.dtype, device=boxes.device)
        photo = boxes[kept] / scale  # (K, 4) photo pixels
        photo = torch.stack([photo[:, 0].clamp(0, width), photo[:, 1].clamp(0, height),
                             photo[:, 2].clamp(0, width), photo[:, 3].clamp(0, height)], dim=1)
        inside = _area(photo) > 0  # boxes that lay in the padding only
        return photo[inside], scores[kept][inside]


def _ignore_export_warnings() -> None:
    """Inside ``warnings.catch_warnings()``: torch 2.14 marks ``torch.jit`` deprecated
    (it still works, and is what runs without Python) and warns while tracing."""
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\..*")


def export_torchscript(model: YoloDetector, path: str | os.PathLike, score_threshold: float = 0.25,
                       iou_threshold: float = 0.45, max_detections: int = 100) -> Path:
    """Write an :class:`EndToEndDetector` of ``model`` (on the CPU) as a TorchScript file.

    Returns:
        The path written. Load it with ``torch.jit.load(path)``; no scratchdet needed.
    """
    detector = EndToEndDetector(_cpu_eval_copy(model), score_threshold, iou_threshold, max_detections)
    size = detector.image_size
    with warnings.catch_warnings(), torch.no_grad():
        _ignore_export_warnings()
        detector.core = torch.jit.trace(detector.core, torch.rand(1, 3, size, size))
        scripted = torch.jit.script(detector)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path))
    return path


def export_onnx(model: YoloDetector, path: str | os.PathLike, opset: int = ONNX_OPSET) -> Path:
    """Write the grid model ``images [N, 3, size, size] -> grid [N, S, S, B*5]`` as one ONNX file.

    Uses ``torch.onnx.export(dynamo=True)`` (the ``torch.export`` exporter,
    needs ``onnxscript``), weights inside the file, batch axis N dynamic.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 18:
        raise ValueError(f"opset must be an int >= 18 (the torch.export-based exporter), got {opset!r}")
    model = _cpu_eval_copy(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        _ignore_export_warnings()
        _onnx_export(model, path, opset)
    return path


def _onnx_export(model: YoloDetector, path: Path, opset: int) -> None:
    size = model.config.image_size
    try:
        torch.onnx.export(model, (torch.rand(2, 3, size, size),), str(path), input_names=["images"],
                          output_names=["grid"], opset_version=opset, dynamo=True, external_data=False,
                          dynamic_shapes={"images": {0: torch.export.Dim("batch")}}, verbose=False)
    except ImportError as error:
        raise RuntimeError(f"ONNX export needs onnx and onnxscript ({error}); pip install -e '.[dev]'") from None


def onnx_session(path: str | os.PathLike, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` on the CPU with ``threads`` intra-op threads."""
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeError("onnxruntime is not installed: pip install onnxruntime (or -e '.[dev]')") from None
    if not Path(path).is_file():
        raise FileNotFoundError(f"no ONNX file at {os.fspath(path)!r}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_detect(session, config: DetectorConfig, image: np.ndarray, score_threshold: float = 0.25,
                iou_threshold: float = 0.45, max_detections: int = 100) -> dict[str, Tensor]:
    """:meth:`YoloDetector.predict` for one photo, with ONNX Runtime running the grid model.

    Args:
        session: from :func:`onnx_session`; config: the exported model's config.
        image: numpy ``uint8 (H, W, 3)`` RGB photo of any size.

    Returns:
        ``{"boxes": Tensor[K, 4] xyxy pixels of the photo, "scores": Tensor[K]}``.
    """
    from scratchdet.model import _as_image_list, _to_photo, letterbox  # predict's own steps
    from scratchdet.nms import postprocess

    photo = _as_image_list(image)[0]  # (3, H, W) float in [0, 1]
    padded, scale = letterbox(photo, config.image_size)  # (3, size, size)
    grid = session.run(["grid"], {"images": padded[None].numpy()})[0]  # (1, S, S, B*5)
    found = postprocess(torch.from_numpy(grid), config, score_threshold, iou_threshold, max_detections)[0]
    return _to_photo(found, scale, tuple(photo.shape[-2:]))


def _cpu_eval_copy(model: YoloDetector) -> YoloDetector:
    if not isinstance(model, YoloDetector):
        raise TypeError(f"model must be a YoloDetector, got {type(model).__name__}")
    copy = YoloDetector.from_hyperparameters(model.hyperparameters)
    copy.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    return copy.requires_grad_(False).eval()


def load_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """``torch.jit.load`` on the CPU, without torch 2.14's deprecation warning, with a clear error."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no TorchScript file at {os.fspath(path)!r}")
    with warnings.catch_warnings():
        _ignore_export_warnings()
        return torch.jit.load(str(path), map_location="cpu")


def torchscript_parity(model: YoloDetector, path: str | os.PathLike, images: list[np.ndarray]) -> dict:
    """Compare the TorchScript file with ``model.predict`` (same thresholds) on photos.

    Args:
        images: numpy ``uint8 (H, W, 3)`` RGB photos of any sizes.

    Returns:
        ``{"images", "same_counts" (bool), "max_abs_box", "max_abs_score"}``.
    """
    scripted = load_torchscript(path)
    model = _cpu_eval_copy(model)
    same, box_diff, score_diff = True, 0.0, 0.0
    for image in images:
        boxes, scores = scripted(torch.from_numpy(np.ascontiguousarray(image)))
        expected = model.predict(image, scripted.score_threshold, scripted.iou_threshold, scripted.max_detections)[0]
        if len(boxes) != len(expected["boxes"]):
            same = False
            continue
        if len(boxes):
            box_diff = max(box_diff, float((boxes - expected["boxes"]).abs().max()))
            score_diff = max(score_diff, float((scores - expected["scores"]).abs().max()))
    return {"images": len(images), "same_counts": same, "max_abs_box": box_diff, "max_abs_score": score_diff}


def onnx_parity(model: YoloDetector, path: str | os.PathLike, batch_size: int = 2, seed: int = 0) -> dict:
    """Max absolute difference between ONNX Runtime and eager grids on a random batch."""
    model = _cpu_eval_copy(model)
    size = model.config.image_size
    images = torch.rand(batch_size, 3, size, size, generator=torch.Generator().manual_seed(seed))
    grid = onnx_session(path).run(["grid"], {"images": images.numpy()})[0]
    with torch.no_grad():
        expected = model(images).numpy()
    return {"batch_size": batch_size, "shape": list(grid.shape),
            "max_abs_grid": float(np.abs(grid - expected).max())}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``scratchdet export CHECKPOINT --format torchscript|onnx [--out FILE]``."""
    parser.add_argument("checkpoint", help="a .ckpt from training or a YoloDetector.save file")
    parser.add_argument("--format", default="torchscript", choices=FORMATS,
                        help="torchscript: photo -> boxes, NMS inside; onnx: images -> grid (default: torchscript)")
    parser.add_argument("--out", default=None,
                        help="file to write (default: next to the checkpoint, .torchscript.pt or .onnx)")
    parser.add_argument("--score-threshold", type=float, default=0.25, help="torchscript only (default: 0.25)")
    parser.add_argument("--iou-threshold", type=float, default=0.45, help="torchscript only (default: 0.45)")
    parser.add_argument("--max-detections", type=int, default=100, help="torchscript only (default: 100)")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help=f"onnx only (default: {ONNX_OPSET})")
    parser.add_argument("--no-check", action="store_true", help="skip the parity check against the eager model")


def run(args: argparse.Namespace) -> None:
    """Export as ``args`` say, then print the parity check against the eager model."""
    from scratchdet.detect import load_detector

    if args.format not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {args.format!r}")
    model = load_detector(args.checkpoint, "cpu")
    suffix = ".torchscript.pt" if args.format == "torchscript" else ".onnx"
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(suffix)
    if args.format == "torchscript":
        path = export_torchscript(model, out, args.score_threshold, args.iou_threshold, args.max_detections)
    else:
        path = export_onnx(model, out, args.opset)
    print(f"wrote {path} ({args.format}, input size {model.config.image_size}, "
          f"S={model.config.num_cells}, B={model.config.boxes_per_cell})")
    if not args.no_check:
        _check_parity(model, path, args.format)


def _check_parity(model: YoloDetector, path: Path, fmt: str) -> None:
    """Print the parity of the file with the eager model; ``RuntimeError`` beyond 1e-4."""
    if fmt == "torchscript":
        from scratchdet.data.photos import read_image, sample_photos

        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((480, 640), (300, 200))]
        result = torchscript_parity(model, path, images + [read_image(p) for p in sample_photos()])
        ok = result["same_counts"] and max(result["max_abs_box"], result["max_abs_score"]) < 1e-4
    else:
        result = onnx_parity(model, path)
        ok = result["max_abs_grid"] < 1e-4
    print(f"parity vs eager: {result}; within 1e-4: {ok}")
    if not ok:
        raise RuntimeError(f"exported {fmt} model differs from the eager model: {result}")
