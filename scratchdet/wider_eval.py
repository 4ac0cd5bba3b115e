"""The WIDER FACE evaluation protocol: prediction files and easy/medium/hard AP.

What this reproduces: the official evaluation (the MATLAB ``eval_tools`` of
the WIDER FACE site and its widely used Python port, WiderFace-Evaluation's
``evaluation.py``), step by step:

* predictions are one ``.txt`` per image in a folder per event: the image
  name, the number of boxes, then ``x y w h score`` lines (pixels), and are
  read sorted by decreasing score (the MATLAB reader sorts; the Python port
  assumes sorted files); no confidence threshold is applied before AP;
* scores are min-max normalised over *all* predictions of the split (the
  range starts as [0, 1], so scores inside [0, 1] are only stretched);
* the ground truth comes from ``wider_face_val.mat`` (``event_list``,
  ``file_list``, ``face_bbx_list``, xywh) and each setting's keep lists from
  ``wider_{easy,medium,hard}_val.mat`` (``gt_list``, 1-based indices of the
  faces that count); the other faces are ignored;
* per image, each detection takes the face of highest IoU (the "+1 pixel"
  IoU of the original code, with x2 = x + w), whether or not it is matched
  already; IoU >= 0.5 with a kept face is a hit (the first hit of a face
  counts for recall, later ones are false positives), with an ignored face
  the detection is dropped (neither TP nor FP);
* images without faces or without predictions are skipped (their false
  positives do not count, a quirk of the original), but their kept faces
  count in the recall denominator;
* precision and recall at 1000 score thresholds (1 - t/1000), then VOC
  all-point AP of that curve.

What it does not: numbers agree with the official tool up to float rounding
(the original computes IoU in float32), not bit for bit. A split whose scores
are all equal has no range to normalise (the original divides by zero): here
every score becomes 1. A missing prediction file raises (the original crashes
with a ``KeyError``) unless ``allow_missing=True``, which counts it as no
detections and reports how many. The matching is vectorised: the per-detection
loop of the original has no state that changes which face a detection takes.

The AP of the curve is :func:`scratchdet.evaluation.average_precision`
(``"all_point"``); this module builds on :mod:`scratchdet.evaluation`, never
the other way round. Taught in ``notebooks/08_evaluation.ipynb``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from scratchdet.boxes import box_convert
from scratchdet.evaluation import average_precision

__all__ = ["SETTINGS", "write_wider_predictions", "read_wider_predictions", "evaluate_wider"]

SETTINGS = ("easy", "medium", "hard")
GT_FILES = {"all": "wider_face_val.mat", "easy": "wider_easy_val.mat",
            "medium": "wider_medium_val.mat", "hard": "wider_hard_val.mat"}
NUM_THRESHOLDS = 1000


def _stem_and_event(image_path: str) -> tuple[str, str]:
    parts = Path(str(image_path)).parts
    if len(parts) < 2:
        raise ValueError(f"image path must be '<event>/<image>.jpg' (as WiderRecord.path), got {image_path!r}")
    return parts[-2], Path(parts[-1]).stem


def write_wider_predictions(out_dir: str | os.PathLike, records: Iterable) -> int:
    """Write detections in the official WIDER FACE submission layout.

    Args:
        out_dir: folder to create; gets ``<event>/<image>.txt`` per image.
        records: iterable of ``(image_path, boxes, scores)``: ``image_path``
            is ``"<event>/<image>.jpg"`` (``WiderRecord.path``), ``boxes`` a
            ``Tensor[K, 4]`` (or array) of xyxy pixels of the original image,
            ``scores`` a ``Tensor[K]``.

    Returns:
        The number of files written. Each holds the image name, the count,
        then ``x y w h score`` lines by decreasing score.
    """
    written = 0
    for image_path, boxes, scores in records:
        event, stem = _stem_and_event(image_path)
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64)).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != len(boxes) or not np.isfinite(scores).all():
            raise ValueError(f"{image_path}: need one finite score per box, got {len(scores)} scores "
                             f"for {len(boxes)} boxes")
        xywh = box_convert(boxes, "xyxy", "xywh").numpy()
        order = np.argsort(-scores, kind="stable")
        lines = [stem, str(len(order))] + [
            f"{x:.2f} {y:.2f} {w:.2f} {h:.2f} {s:.7g}" for (x, y, w, h), s in zip(xywh[order], scores[order])]
        path = Path(out_dir) / event / f"{stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        written += 1
    return written


def _read_prediction_file(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected the image name and a box count on lines 1-2, got {len(lines)} lines")
    try:
        count = int(lines[1].strip())
    except ValueError:
        raise ValueError(f"{path}:2: expected the number of boxes, got {lines[1]!r}") from None
    rows = [line for line in lines[2:] if line.strip()]
    if len(rows) != count:
        raise ValueError(f"{path}:2: says {count} boxes but the file has {len(rows)} box lines")
    boxes = np.zeros((count, 5))
    for k, line in enumerate(rows):
        values = line.split()
        try:
            boxes[k] = [float(v) for v in values[:5]] if len(values) >= 5 else np.nan
        except ValueError:
            boxes[k] = np.nan
        if not np.isfinite(boxes[k]).all():
            raise ValueError(f"{path}:{k + 3}: expected 5 finite numbers 'x y w h score', got {line!r}")
    return boxes[np.argsort(-boxes[:, 4], kind="stable")]


def read_wider_predictions(pred_dir: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Read a folder written by :func:`write_wider_predictions` (or any official-layout one).

    Returns:
        ``{event: {image name without extension: float64 (K, 5) array}}`` with
        rows ``x y w h score`` (pixels) sorted by decreasing score.

    Raises:
        FileNotFoundError: no such folder; ValueError: a malformed file (names file and line).
    """
    root = Path(pred_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"WIDER FACE prediction folder not found: {root}")
    return {event.name: {f.stem: _read_prediction_file(f) for f in sorted(event.glob("*.txt"))}
            for event in sorted(root.iterdir()) if event.is_dir()}


def _unwrap(cell) -> np.ndarray:
    """A MATLAB cell element as loadmat returns it (nested 1-element object arrays) -> the array inside."""
    while isinstance(cell, np.ndarray) and cell.dtype == object and cell.size == 1:
        cell = cell.reshape(-1)[0]
    return np.asarray(cell)


def _text(cell) -> str:
    return str(_unwrap(cell).reshape(-1)[0])


def _load_gt(gt_dir: str | os.PathLike) -> list[tuple[str, list[tuple[str, np.ndarray, dict]]]]:
    """[(event, [(image name, xywh (M, 4), {setting: 0-based kept indices})])] from the four .mat files."""
    from scipy.io import loadmat  # lazy: scipy is needed only to read the official .mat ground truth

    mats = {}
    for key, name in GT_FILES.items():
        path = Path(gt_dir) / name
        if not path.is_file():
            raise FileNotFoundError(f"WIDER FACE ground truth file not found: {path} (eval_tools/ground_truth/)")
        mats[key] = loadmat(str(path))
        needed = ("event_list", "file_list", "face_bbx_list") if key == "all" else ("gt_list",)
        for field in needed:
            if field not in mats[key]:
                raise ValueError(f"{path}: no '{field}' variable (found {sorted(k for k in mats[key] if k[0] != '_')})")
    full = mats["all"]
    events = []
    for i in range(len(full["event_list"])):
        files, faces = full["file_list"][i][0].reshape(-1), full["face_bbx_list"][i][0].reshape(-1)
        keeps = {s: mats[s]["gt_list"][i][0].reshape(-1) for s in SETTINGS}
        images = []
        for j in range(len(files)):
            boxes = _unwrap(faces[j]).astype(np.float64).reshape(-1, 4)
            kept = {s: _unwrap(keeps[s][j]).astype(np.int64).reshape(-1) - 1 for s in SETTINGS}
            images.append((_text(files[j]), boxes, kept))
        events.append((_text(full["event_list"][i]), images))
    return events


def _normalise_scores(preds: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    scores = [p[:, 4] for event in preds.values() for p in event.values() if len(p)]
    lo = min([1.0] + [float(s.min()) for s in scores])
    hi = max([0.0] + [float(s.max()) for s in scores])
    out = {}
    for event, images in preds.items():
        out[event] = {}
        for name, p in images.items():
            p = np.array(p, dtype=np.float64).reshape(-1, 5)
            p[:, 4] = (p[:, 4] - lo) / (hi - lo) if hi > lo else 1.0
            out[event][name] = p[np.argsort(-p[:, 4], kind="stable")]
    return out


def _overlaps_plus_one(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU [K, M] of xywh boxes with the original code's inclusive-pixel (+1) convention."""
    p = np.concatenate([pred[:, :2], pred[:, :2] + pred[:, 2:4]], axis=1)  # (K, 4) x1, y1, x2 = x + w, y2
    g = np.concatenate([gt[:, :2], gt[:, :2] + gt[:, 2:4]], axis=1)  # (M, 4)
    iw = np.minimum(p[:, None, 2], g[None, :, 2]) - np.maximum(p[:, None, 0], g[None, :, 0]) + 1  # (K, M)
    ih = np.minimum(p[:, None, 3], g[None, :, 3]) - np.maximum(p[:, None, 1], g[None, :, 1]) + 1
    area_p = (p[:, 2] - p[:, 0] + 1) * (p[:, 3] - p[:, 1] + 1)
    area_g = (g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1)
    inter = iw * ih
    union = area_p[:, None] + area_g[None, :] - inter
    return np.where((iw > 0) & (ih > 0), inter / np.where(union == 0, 1, union), 0.0)


def _image_pr(pred: np.ndarray, gt: np.ndarray, kept: np.ndarray, iou_threshold: float) -> np.ndarray:
    """(NUM_THRESHOLDS, 2): proposals counted and faces found at each score threshold, one image."""
    counts = np.zeros(len(gt), bool)
    counts[kept] = True
    overlaps = _overlaps_plus_one(pred, gt)  # (K, M)
    best, face = overlaps.max(axis=1), overlaps.argmax(axis=1)  # (K,) first max, as np.argmax
    hit = best >= iou_threshold
    proposal = ~(hit & ~counts[face])  # hits on ignored faces are not proposals
    found = hit & counts[face]
    first = np.zeros(len(pred), bool)
    if found.any():
        _, where = np.unique(face[found], return_index=True)
        first[np.flatnonzero(found)[where]] = True  # first hit of each kept face
    recall, proposals = np.cumsum(first), np.cumsum(proposal)  # (K,) after each detection
    thresholds = 1 - (np.arange(NUM_THRESHOLDS) + 1) / NUM_THRESHOLDS
    above = np.searchsorted(-pred[:, 4], -thresholds, side="right")  # detections with score >= t
    pr = np.zeros((NUM_THRESHOLDS, 2))
    some = above > 0
    pr[some, 0], pr[some, 1] = proposals[above[some] - 1], recall[above[some] - 1]
    return pr


def evaluate_wider(predictions: str | os.PathLike | Mapping, gt_dir: str | os.PathLike, iou_threshold: float = 0.5,
                   allow_missing: bool = False) -> dict:
    """Easy / medium / hard AP of WIDER FACE val predictions, as the official tool computes them.

    Args:
        predictions: a folder in the official layout, or what
            :func:`read_wider_predictions` returns.
        gt_dir: folder with ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``.
        iou_threshold: 0.5 in the official protocol.
        allow_missing: treat images without a prediction file as having no
            detections (counted in ``missing``) instead of raising.

    Returns:
        dict: ``easy``, ``medium``, ``hard`` (AP), ``precision`` and ``recall``
        (``{setting: (1000,) array}``, by decreasing threshold), ``num_faces``
        (``{setting: faces that count}``), ``num_images``, ``missing``.
    """
    preds = read_wider_predictions(predictions) if not isinstance(predictions, Mapping) else predictions
    preds = _normalise_scores(preds)
    events, empty = _load_gt(gt_dir), np.zeros((0, 5))
    missing = [f"{e}/{name}" for e, images in events for name, _, _ in images if name not in preds.get(e, {})]
    if missing and not allow_missing:
        raise ValueError(f"no predictions for {len(missing)} images, e.g. {missing[:3]}; "
                         f"write one file per image (empty ones say 0 boxes) or pass allow_missing=True")
    out = {"precision": {}, "recall": {}, "num_faces": {}, "missing": len(missing),
           "num_images": sum(len(images) for _, images in events)}
    for setting in SETTINGS:
        curve, faces = np.zeros((NUM_THRESHOLDS, 2)), 0
        for event, images in events:
            for name, gt, kept in images:
                faces += len(kept[setting])
                pred = preds.get(event, {}).get(name, empty)
                if len(gt) and len(pred):
                    curve += _image_pr(pred, gt, kept[setting], iou_threshold)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision, recall = curve[:, 1] / curve[:, 0], curve[:, 1] / faces
        out[setting] = average_precision(recall, precision, "all_point")
        out["precision"][setting], out["recall"][setting], out["num_faces"][setting] = precision, recall, faces
    return out
