"""Average precision of a face detector: matching, precision/recall, AP.

1. Per image, detections by decreasing score are matched to faces, by one
   of two rules (``matching``, :data:`MATCHING_RULES`):

   * ``"coco"`` (pycocotools, torchmetrics; our default): each detection
     takes the best face *not yet matched* with IoU >= threshold;
   * ``"voc"`` (the PASCAL VOC devkit): each detection looks only at its
     highest-IoU face (taken or not, first on ties) and needs IoU > threshold
     with it; if that face is taken already it is a false positive.

   A match is a true positive (TP); a detection without one is a false
   positive (FP), as is a duplicate on a face already taken. The rules
   differ in crowds: a duplicate that also overlaps a free neighbour well
   enough takes it under ``"coco"`` but is an FP under ``"voc"``.
2. Pool all images' detections, sort by score: precision = TP / (TP + FP)
   and recall = TP / faces after each one trace the precision/recall curve.
3. AP is the area under it once precision is made non-increasing (the
   envelope, a running max from the right): ``"all_point"`` integrates
   exactly, ``"11_point"`` samples recall 0, 0.1, ..., 1, ``"coco101"``
   samples 0, 0.01, ..., 1 (:data:`AP_METHODS`).

Which combination is which benchmark's AP: ``matching="voc"`` +
``"all_point"`` is the VOC 2010+ devkit, ``"voc"`` + ``"11_point"`` the VOC
2007 devkit, ``"coco"`` + ``"coco101"`` COCO (pycocotools). The default,
``"coco"`` + ``"all_point"``, is COCO's matching with VOC 2010+'s area.
WIDER FACE's official tool matches as ``"voc"`` does (but with IoU >= 0.5)
and has its own curve: :mod:`scratchdet.wider_eval`. The IoU here is
continuous (no "+1 pixel"); ``"voc"`` follows the devkit's Python port
(``voc_eval.py``: ``ovmax > ovthresh``); the MATLAB ``VOCevaldet.m`` asks
for ``>=``, which differs only at an IoU exactly at the threshold.

*Ignored* faces are neither required nor punished: a detection matched to one
is neither TP nor FP. Under ``"coco"`` detections prefer faces that count;
under ``"voc"`` a detection whose best face is ignored is ignored (the
devkit's "difficult" objects), however many such detections there are.
A ``size_range`` ignores faces outside it and, as COCO's area ranges do,
unmatched detections outside it. Face size is ``sqrt(w * h)`` pixels; a range
includes both ends, so (0, 32), (32, 96), (96, inf) are COCO's small, medium,
large. ``method="coco101"`` with :data:`COCO_IOU_THRESHOLDS` and at most 100
detections per image reproduces torchmetrics' ``map_50`` / ``map`` (tests:
1e-3 asked, ~1e-7 measured); ``"all_point"`` integrates the same curve
without sampling it, so it differs slightly (~0.01 on small sets).

The COCO match is sequential (a face taken is gone for the next detection):
a loop over one image's detections that can match at all, vectorised over IoU
thresholds. The VOC match has no such state (a detection's face does not
depend on earlier ones) and is vectorised whole. Evaluation runs in numpy
float64 on the CPU; inputs may be tensors or arrays. The WIDER FACE protocol
(prediction files, easy/medium/hard AP) builds on this module in
:mod:`scratchdet.wider_eval`. Taught in ``notebooks/08_evaluation.ipynb``.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from scratchdet.boxes import box_area, box_iou, check_boxes
from scratchdet.config import SCORE_THRESHOLD

__all__ = [
    "COCO_IOU_THRESHOLDS", "SIZE_BINS", "CROWD_BINS", "AP_METHODS", "MATCHING_RULES", "MatchResult",
    "match_detections", "precision_recall", "average_precision", "evaluate_detections",
    "evaluate_by_size", "evaluate_by_crowd", "operating_point", "collect_predictions", "evaluate_detector",
]

COCO_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50, 0.55, ..., 0.95
SIZE_BINS = {"small": (0.0, 16.0), "medium": (16.0, 48.0), "large": (48.0, math.inf), "ge24": (24.0, math.inf)}
CROWD_BINS = {"single": (1, 1), "few": (2, 5), "group": (6, 15), "crowd": (16, math.inf)}
AP_METHODS = ("all_point", "11_point", "coco101")
MATCHING_RULES = ("coco", "voc")  # best free face with IoU >= t; the VOC devkit's best face, IoU > t
# torchmetrics passes pycocotools float32 recall points (torch.linspace): 0.7 is 0.69999999,
# so a recall of exactly 7/10 reaches it; numpy's float64 0.7000000000000001 would not.
_COCO_RECALLS = torch.linspace(0.0, 1.0, 101).double().numpy()


class MatchResult(NamedTuple):
    """One image's detections matched to its faces; all fields by decreasing score.

    ``order`` (``LongTensor[K]``, detection indices, ties in input order),
    ``scores`` (``Tensor[K]`` float64), ``tp`` and ``ignored`` (``BoolTensor[K]``;
    FP = ``~tp & ~ignored``), ``gt_index`` (``LongTensor[K]``, matched face or -1).
    """

    order: Tensor
    scores: Tensor
    tp: Tensor
    ignored: Tensor
    gt_index: Tensor


def _as_boxes(boxes, name: str) -> Tensor:
    """xyxy boxes as a float64 CPU tensor (integer arrays and empty lists are fine)."""
    if isinstance(boxes, (np.ndarray, list, tuple)):
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64))
    if isinstance(boxes, Tensor) and boxes.numel() == 0:
        boxes = boxes.reshape(0, 4)
    if isinstance(boxes, Tensor) and not boxes.is_floating_point():
        boxes = boxes.double()
    check_boxes(boxes, "xyxy", name, allow_degenerate=True)
    return boxes.detach().cpu().double()


def _as_scores(scores, count: int, name: str) -> np.ndarray:
    scores = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64)
    if scores.shape != (count,):
        raise ValueError(f"{name} must have shape [K] = [{count}] to match the boxes, got {list(scores.shape)}")
    if not np.isfinite(scores).all():
        i = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise ValueError(f"{name} must be finite, got {name}[{i}] = {scores[i]}")
    return scores


def _thresholds(iou_thresholds) -> np.ndarray:
    values = np.atleast_1d(np.asarray(iou_thresholds, dtype=np.float64))
    if values.ndim != 1 or len(values) == 0 or not ((values >= 0) & (values <= 1)).all():
        raise ValueError(f"IoU thresholds must be numbers in [0, 1], got {iou_thresholds!r}")
    return values


def _check_matching(matching) -> None:
    if not isinstance(matching, str) or matching not in MATCHING_RULES:
        raise ValueError(f"matching must be one of {MATCHING_RULES}, got {matching!r}")


def _last_argmax(values: np.ndarray) -> np.ndarray:
    """Index of the last maximum along the last axis (pycocotools' tie rule)."""
    return values.shape[-1] - 1 - np.argmax(values[..., ::-1], axis=-1)


def _match_coco(ious: np.ndarray, gt_ignore: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """Greedy COCO matching of score-sorted detections; returns tp, ignored, gt_index, each (T, K)."""
    T, (K, M) = len(thresholds), ious.shape
    tp, ignored = np.zeros((T, K), bool), np.zeros((T, K), bool)
    gt_index, taken = np.full((T, K), -1), np.zeros((T, M), bool)
    if K == 0 or M == 0:
        return tp, ignored, gt_index
    rows = np.arange(T)
    for d in np.flatnonzero(ious.max(axis=1) >= thresholds.min()):  # detections that can match
        free = ~taken & (ious[d] >= thresholds[:, None])  # (T, M)
        for pick in (free & ~gt_ignore, free & gt_ignore):  # faces that count first
            m = _last_argmax(np.where(pick, ious[d], -1.0))  # (T,)
            hit = pick[rows, m] & (gt_index[:, d] < 0)
            gt_index[hit, d], taken[rows[hit], m[hit]] = m[hit], True
            ignored[hit, d], tp[hit, d] = gt_ignore[m[hit]], ~gt_ignore[m[hit]]
    return tp, ignored, gt_index


def _match_voc(ious: np.ndarray, gt_ignore: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """The VOC devkit's matching of score-sorted detections; returns tp, ignored, gt_index, each (T, K).

    Each detection's face is its highest-IoU face (the first on ties, as ``np.argmax``), taken or not,
    so no state carries from one detection to the next: a TP is the first detection to claim a face.
    """
    T, (K, M) = len(thresholds), ious.shape
    tp, ignored, gt_index = np.zeros((T, K), bool), np.zeros((T, K), bool), np.full((T, K), -1)
    if K == 0 or M == 0:
        return tp, ignored, gt_index
    best = np.argmax(ious, axis=1)  # (K,)
    hit = ious[np.arange(K), best][None, :] > thresholds[:, None]  # (T, K); a NaN IoU is no hit
    ignored = hit & gt_ignore[best][None, :]
    claims = hit & ~ignored
    rows, cols = np.nonzero(claims)  # row-major: by threshold, then by score
    _, first = np.unique(rows * M + best[cols], return_index=True)  # first claim of each (threshold, face)
    tp[rows[first], cols[first]] = True
    gt_index = np.where(tp | ignored, best[None, :], -1)
    return tp, ignored, gt_index


_MATCHERS = {"coco": _match_coco, "voc": _match_voc}


def _sizes(boxes: Tensor) -> np.ndarray:
    return box_area(boxes).sqrt().numpy()


def _match_image(pred, gt_boxes, thresholds, size_range, gt_ignore, max_detections, matching, where):
    boxes = _as_boxes(pred["boxes"], f"predictions{where}['boxes']")
    scores = _as_scores(pred["scores"], len(boxes), f"predictions{where}['scores']")
    gt = _as_boxes(gt_boxes, f"ground_truths{where}")
    order = np.argsort(-scores, kind="stable")[:max_detections]
    boxes, scores = boxes[torch.from_numpy(order)], scores[order]
    ignore = np.zeros(len(gt), bool) if gt_ignore is None else np.asarray(gt_ignore, bool).ravel()
    if ignore.shape != (len(gt),):
        raise ValueError(f"gt_ignore{where} must have one flag per face ({len(gt)}), got shape {list(ignore.shape)}")
    if size_range is not None:
        lo, hi = size_range
        ignore = ignore | (_sizes(gt) < lo) | (_sizes(gt) > hi)
    tp, ignored, gt_index = _MATCHERS[matching](box_iou(boxes, gt).numpy(), ignore, thresholds)
    if size_range is not None:  # unmatched detections outside the range do not count
        ignored |= (gt_index < 0) & ((_sizes(boxes) < lo) | (_sizes(boxes) > hi))[None, :]
    return order, scores, tp, ignored, gt_index, int((~ignore).sum())


def match_detections(pred_boxes, pred_scores, gt_boxes, iou_threshold: float = 0.5,
                     gt_ignore=None, matching: str = "coco") -> MatchResult:
    """Match one image's detections to its faces, best score first.

    Args:
        pred_boxes: ``Tensor[K, 4]`` xyxy pixels (or an array).
        pred_scores: ``Tensor[K]``, finite.
        gt_boxes: ``Tensor[M, 4]`` xyxy pixels, same image.
        iou_threshold: in [0, 1]; a match needs IoU >= this (``"coco"``) or
            IoU > this (``"voc"``).
        gt_ignore: optional ``BoolTensor[M]``: faces that are neither required
            nor punished (see the module notes).
        matching: ``"coco"`` (best face not yet matched) or ``"voc"`` (the
            VOC devkit: the best face; a duplicate if it is taken), see the
            module notes.

    Returns:
        A :class:`MatchResult`, every field in decreasing score order.
    """
    _check_matching(matching)
    thresholds = _thresholds(iou_threshold)
    if len(thresholds) != 1:
        raise ValueError(f"iou_threshold must be one number, got {iou_threshold!r}")
    order, scores, tp, ignored, gt_index, _ = _match_image(
        {"boxes": pred_boxes, "scores": pred_scores}, gt_boxes, thresholds, None, gt_ignore, None, matching, "")
    return MatchResult(torch.from_numpy(order), torch.from_numpy(scores), torch.from_numpy(tp[0]),
                       torch.from_numpy(ignored[0]), torch.from_numpy(gt_index[0]))


def precision_recall(scores, tp, num_gt: int, ignored=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision/recall curve of detections pooled over a dataset.

    Args:
        scores: ``(D,)`` scores of all detections (any order).
        tp: ``(D,)`` bool, true positive flags (from :func:`match_detections`).
        num_gt: number of faces that count (not ignored).
        ignored: optional ``(D,)`` bool; ignored detections are left out.

    Returns:
        ``(precision, recall, scores)``: float64 arrays, one entry per
        non-ignored detection in decreasing score order (stable).
    """
    scores, tp = np.asarray(scores, np.float64).ravel(), np.asarray(tp, bool).ravel()
    keep = ~np.asarray(ignored, bool).ravel() if ignored is not None else np.ones(len(tp), bool)
    if not (len(scores) == len(tp) == len(keep)):
        raise ValueError(f"scores, tp and ignored must have one length, got {len(scores)}, {len(tp)}, {len(keep)}")
    if isinstance(num_gt, bool) or not isinstance(num_gt, (int, np.integer)) or num_gt < 0:
        raise ValueError(f"num_gt must be an int >= 0, got {num_gt!r}")
    order = np.argsort(-scores, kind="stable")
    order = order[keep[order]]
    tps = np.cumsum(tp[order])
    precision = tps / np.arange(1, len(order) + 1)
    recall = tps / num_gt if num_gt else np.full(len(order), np.nan)
    return precision, recall, scores[order]


def average_precision(recall, precision, method: str = "all_point") -> float:
    """Area under a precision/recall curve, after the precision envelope.

    The envelope replaces each precision by the best one at that recall or
    beyond (a running max from the right); the methods differ only in how
    they take the area, not in how detections were matched (``matching``
    of :func:`evaluate_detections` decides that).

    Args:
        recall: ``(D,)`` non-decreasing recall (from :func:`precision_recall`).
        precision: ``(D,)`` precision at the same points.
        method: ``"all_point"``: the exact area (the VOC 2010+ devkit's and
            WIDER FACE's area; with ``matching="voc"`` it is VOC 2010+ AP);
            ``"11_point"``: the mean at recall 0, 0.1, ..., 1 (with
            ``matching="voc"``, VOC 2007 AP); ``"coco101"``: the mean at
            recall 0, 0.01, ..., 1 (with ``matching="coco"``, COCO AP as
            pycocotools and torchmetrics compute it).

    Returns:
        AP in [0, 1]; 0 for an empty curve, NaN if recall is NaN (no faces).
    """
    if method not in AP_METHODS:
        raise ValueError(f"method must be one of {AP_METHODS}, got {method!r}")
    recall, precision = np.asarray(recall, np.float64).ravel(), np.asarray(precision, np.float64).ravel()
    if recall.shape != precision.shape:
        raise ValueError(f"recall and precision must have one length, got {len(recall)} and {len(precision)}")
    if np.isnan(recall).any():
        return math.nan
    if method == "all_point":
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
        step = np.flatnonzero(mrec[1:] != mrec[:-1])  # where recall changes
        return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))
    if not len(precision):
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    if method == "11_point":  # the VOC 2007 devkit's recall points, float steps included
        return float(np.mean([envelope[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.arange(0.0, 1.1, 0.1)]))
    where = np.searchsorted(recall, _COCO_RECALLS, side="left")  # coco101
    sampled = np.zeros(101)
    sampled[where < len(envelope)] = envelope[where[where < len(envelope)]]
    return float(sampled.mean())


def _check_lists(predictions, ground_truths) -> None:
    if not isinstance(predictions, Sequence) or not isinstance(ground_truths, Sequence):
        raise TypeError("predictions and ground_truths must be lists (one entry per image)")
    if len(predictions) != len(ground_truths):
        raise ValueError(f"got predictions for {len(predictions)} images but ground truth for {len(ground_truths)}")
    for i, pred in enumerate(predictions):
        if not isinstance(pred, Mapping) or "boxes" not in pred or "scores" not in pred:
            raise TypeError(f"predictions[{i}] must be a dict with 'boxes' and 'scores', got {type(pred).__name__}")


def _pool(predictions, ground_truths, thresholds, size_range, gt_ignore, max_detections, matching):
    """Match every image; return all scores (D,), tp and ignored (T, D), and the faces that count."""
    if gt_ignore is not None and len(gt_ignore) != len(ground_truths):
        raise ValueError(f"gt_ignore must have one entry per image ({len(ground_truths)}), got {len(gt_ignore)}")
    empty = np.zeros((len(thresholds), 0), bool)
    scores, tps, ignored, num_gt = [np.zeros(0)], [empty], [empty], 0
    for i, (pred, gt) in enumerate(zip(predictions, ground_truths)):
        ign = None if gt_ignore is None else gt_ignore[i]
        _, s, tp, ig, _, n = _match_image(pred, gt, thresholds, size_range, ign, max_detections, matching, f"[{i}]")
        scores.append(s), tps.append(tp), ignored.append(ig)
        num_gt += n
    return np.concatenate(scores), np.concatenate(tps, axis=1), np.concatenate(ignored, axis=1), num_gt


def evaluate_detections(predictions: Sequence[Mapping], ground_truths: Sequence, iou_thresholds=COCO_IOU_THRESHOLDS,
                        method: str = "all_point", size_range: tuple[float, float] | None = None,
                        gt_ignore: Sequence | None = None, max_detections: int | None = None,
                        matching: str = "coco") -> dict:
    """AP of a detector over a dataset.

    ``matching`` and ``method`` together name the benchmark: ``"voc"`` +
    ``"all_point"`` = VOC 2010+ devkit, ``"voc"`` + ``"11_point"`` = VOC 2007
    devkit, ``"coco"`` + ``"coco101"`` (+ COCO's thresholds and
    ``max_detections=100``) = COCO; the default ``"coco"`` + ``"all_point"``
    is COCO matching with the exact area.

    Args:
        predictions: per image ``{"boxes": Tensor[K, 4], "scores": Tensor[K]}``,
            xyxy pixels (e.g. :func:`scratchdet.nms.postprocess` output).
        ground_truths: per image ``Tensor[M, 4]`` (or array) xyxy pixels.
        iou_thresholds: one or more IoU thresholds; default 0.50:0.05:0.95.
        method: AP method, see :func:`average_precision`.
        size_range: ``(lo, hi)`` face size ``sqrt(w*h)`` in pixels to evaluate;
            other faces (and unmatched detections) are ignored.
        gt_ignore: optional per image ``(M,)`` bool of faces to ignore.
        max_detections: keep only the best this many per image (COCO: 100).
        matching: ``"coco"`` or ``"voc"``, see :func:`match_detections`.

    Returns:
        dict: ``ap`` (mean over thresholds), ``ap_per_iou`` ({threshold: AP}),
        ``ap50`` (if 0.5 is a threshold), ``ap50_95`` (if the thresholds are
        COCO's), ``precision``/``recall``/``scores`` arrays at the first
        threshold, ``tp``, ``fp`` (at the first threshold), ``num_gt``,
        ``num_detections``, ``num_images``, ``method``, ``matching``. AP is NaN
        with no faces.
    """
    _check_lists(predictions, ground_truths)
    _check_matching(matching)
    thresholds = _thresholds(iou_thresholds)
    if size_range is not None and not (len(size_range) == 2 and 0 <= size_range[0] <= size_range[1]):
        raise ValueError(f"size_range must be (lo, hi) face sizes in pixels with 0 <= lo <= hi, got {size_range!r}")
    scores, tps, ignored, num_gt = _pool(predictions, ground_truths, thresholds, size_range, gt_ignore,
                                         max_detections, matching)
    per_iou, curves = {}, []
    for t, tp, ig in zip(thresholds, tps, ignored):
        curves.append(precision_recall(scores, tp, num_gt, ig))
        ap = average_precision(curves[-1][1], curves[-1][0], method) if num_gt else math.nan
        per_iou[round(float(t), 4)] = ap
    precision, recall, sorted_scores = curves[0]
    out = {"ap": float(np.mean(list(per_iou.values()))), "ap_per_iou": per_iou,
           "precision": precision, "recall": recall, "scores": sorted_scores,
           "tp": int(tps[0][~ignored[0]].sum()), "fp": int((~tps[0] & ~ignored[0]).sum()),
           "num_gt": num_gt, "num_detections": len(scores), "num_images": len(predictions), "method": method,
           "matching": matching}
    if 0.5 in per_iou:
        out["ap50"] = per_iou[0.5]
    if tuple(per_iou) == COCO_IOU_THRESHOLDS:
        out["ap50_95"] = out["ap"]
    return out


def evaluate_by_size(predictions: Sequence[Mapping], ground_truths: Sequence,
                     bins: Mapping[str, tuple[float, float]] = SIZE_BINS, iou_threshold: float = 0.5,
                     method: str = "all_point", matching: str = "coco") -> dict:
    """AP at one IoU threshold, overall and per face-size bin.

    Args:
        predictions, ground_truths: as in :func:`evaluate_detections`.
        bins: name -> ``(lo, hi)`` face size ``sqrt(w*h)`` in pixels, both ends
            included (default: small < 16 px, medium 16-48, large >= 48, ge24 >= 24).
        iou_threshold: default 0.5.
        method: AP method, see :func:`average_precision`.
        matching: ``"coco"`` or ``"voc"``, see :func:`match_detections`.

    Returns:
        dict with ``ap50`` (all faces) and ``ap50_<bin>`` for each bin, plus
        ``num_gt`` and ``num_gt_<bin>`` (faces per bin). Keys say ``ap50``
        whatever ``iou_threshold`` is. A bin with no faces has AP NaN.
    """
    overall = evaluate_detections(predictions, ground_truths, (iou_threshold,), method, matching=matching)
    out = {"ap50": overall["ap"], "num_gt": overall["num_gt"]}
    for name, size_range in bins.items():
        result = evaluate_detections(predictions, ground_truths, (iou_threshold,), method, size_range=size_range,
                                     matching=matching)
        out[f"ap50_{name}"], out[f"num_gt_{name}"] = result["ap"], result["num_gt"]
    return out


def evaluate_by_crowd(predictions: Sequence[Mapping], ground_truths: Sequence,
                      bins: Mapping[str, tuple[float, float]] = CROWD_BINS, iou_threshold: float = 0.5,
                      method: str = "all_point", matching: str = "coco") -> dict:
    """AP per bin of faces per image (single portraits vs crowds).

    Each bin evaluates only the images whose face count lies in ``(lo, hi)``
    (both ends included; default single = 1, few = 2-5, group = 6-15, crowd >= 16).
    ``method`` and ``matching`` as in :func:`evaluate_detections`.

    Returns:
        dict with ``ap50_<bin>`` and ``num_images_<bin>`` for each bin.
    """
    _check_lists(predictions, ground_truths)
    _check_matching(matching)
    counts = [len(_as_boxes(gt, f"ground_truths[{i}]")) for i, gt in enumerate(ground_truths)]
    out = {}
    for name, (lo, hi) in bins.items():
        chosen = [i for i, c in enumerate(counts) if lo <= c <= hi]
        result = evaluate_detections([predictions[i] for i in chosen], [ground_truths[i] for i in chosen],
                                     (iou_threshold,), method, matching=matching)
        out[f"ap50_{name}"], out[f"num_images_{name}"] = result["ap"], len(chosen)
    return out


def operating_point(predictions: Sequence[Mapping], ground_truths: Sequence, score_threshold: float = SCORE_THRESHOLD,
                    iou_threshold: float = 0.5, matching: str = "coco") -> dict:
    """What a user of the detector at one score threshold sees: hits, misses, false alarms.

    AP summarises the whole precision/recall curve; a deployed detector keeps
    only detections scoring at least ``score_threshold`` (the default of
    :meth:`~scratchdet.model.YoloDetector.predict`, ``config.SCORE_THRESHOLD``). Detections are matched as
    for AP (:func:`match_detections`), so a duplicate of a found face is a
    false positive.

    Args:
        predictions, ground_truths: as in :func:`evaluate_detections`.
        score_threshold: keep detections with score >= this.
        iou_threshold: a match needs IoU >= this (``"coco"``), > this (``"voc"``).
        matching: ``"coco"`` or ``"voc"``, see :func:`match_detections`.

    Returns:
        dict: ``score_threshold``, ``tp``, ``fp``, ``fn`` (faces missed),
        ``precision`` (NaN without detections), ``recall`` (NaN without faces),
        ``fp_per_image`` and ``num_images``.
    """
    if not (isinstance(score_threshold, (int, float)) and math.isfinite(score_threshold)):
        raise ValueError(f"score_threshold must be a finite number, got {score_threshold!r}")
    _check_lists(predictions, ground_truths)
    _check_matching(matching)
    kept = []
    for i, pred in enumerate(predictions):
        boxes = _as_boxes(pred["boxes"], f"predictions[{i}]['boxes']")
        scores = _as_scores(pred["scores"], len(boxes), f"predictions[{i}]['scores']")
        keep = scores >= score_threshold
        kept.append({"boxes": boxes[torch.from_numpy(keep)], "scores": scores[keep]})
    result = evaluate_detections(kept, ground_truths, (iou_threshold,), matching=matching)
    tp, fp, num_gt = result["tp"], result["fp"], result["num_gt"]
    return {"score_threshold": float(score_threshold), "tp": tp, "fp": fp, "fn": num_gt - tp,
            "precision": tp / (tp + fp) if tp + fp else math.nan, "recall": tp / num_gt if num_gt else math.nan,
            "fp_per_image": fp / len(predictions) if predictions else math.nan, "num_images": len(predictions)}


def collect_predictions(detector: Callable, source, max_images: int | None = None) -> tuple[list, list, float]:
    """Run ``detector(image) -> {"boxes", "scores"}`` on a dataset source.

    Args:
        detector: takes an ``uint8 (H, W, 3)`` RGB image, returns xyxy pixel
            boxes of that image and scores (e.g. ``HaarFaceDetector().detect``).
        source: ``source[i] -> (image, boxes)`` (SynthFaces, WiderFace).
        max_images: evaluate only the first this many.

    Returns:
        ``(predictions, ground_truths, seconds_per_image)``.
    """
    count = len(source) if max_images is None else min(len(source), max_images)
    predictions, ground_truths, start = [], [], time.perf_counter()
    for i in range(count):
        image, boxes = source[i]
        predictions.append(detector(image))
        ground_truths.append(torch.as_tensor(np.asarray(boxes, np.float32)).reshape(-1, 4))
    return predictions, ground_truths, (time.perf_counter() - start) / max(count, 1)


def evaluate_detector(detector: Callable, source, max_images: int | None = None,
                      size_bins: Mapping[str, tuple[float, float]] = SIZE_BINS, method: str = "all_point",
                      matching: str = "coco") -> dict:
    """The metrics the course reports for a detector on a dataset split.

    ``method`` and ``matching`` as in :func:`evaluate_detections`.

    Returns:
        dict of floats and ints: ``ap50``, ``ap50_95``, ``ap50_<size bin>``,
        ``ap50_<crowd bin>``, ``num_gt``, ``num_images``,
        ``seconds_per_image`` (wall time of reading the images and detecting).
    """
    _check_matching(matching)
    predictions, ground_truths, seconds = collect_predictions(detector, source, max_images)
    by_iou = evaluate_detections(predictions, ground_truths, COCO_IOU_THRESHOLDS, method, matching=matching)
    out = evaluate_by_size(predictions, ground_truths, size_bins, method=method, matching=matching)
    out.update(evaluate_by_crowd(predictions, ground_truths, method=method, matching=matching))
    out.update(ap50_95=by_iou["ap50_95"], num_images=len(predictions), seconds_per_image=seconds)
    return out
