"""Greedy non-maximum suppression, exact and vectorised, and YOLO post-processing.

Greedy NMS (as in ``torchvision.ops.nms``): sort boxes by score, keep the best,
drop every box whose IoU with it is *greater than* ``iou_threshold``, repeat
with the next box that is still there. Written as a Python loop it costs one
step per kept box. Here it is a fixed point of matrix operations instead
(Cluster-NMS, Zheng et al. 2020, arXiv 2005.03572):

* sort by score (stable, descending: ties keep their input order, exactly as
  torchvision's CPU kernel does);
* ``A[j, i] = IoU(j, i) > threshold`` for ``j < i`` (the upper triangle: only a
  better box can suppress a worse one);
* ``keep[i] = no j < i with keep[j] and A[j, i]`` is the greedy rule. Start
  from ``keep = all`` and apply the rule to every box at once until nothing
  changes. After t rounds the first t boxes are final, so it always stops;
  any fixed point *is* the greedy answer (the rule fixes box 0, then box 1, ...
  one by one), so the result is exact, not an approximation. The number of
  rounds is the length of the longest suppression chain (usually a handful).

The sorted boxes go through in blocks of ``_BLOCK`` (256):

* inside a block, one pass builds the whole block x block matrix A, and
  each round of the fixed point is one matrix-vector product
  (:func:`_dense_keep`). At YOLO's sizes (100 to 200 boxes after the score
  threshold: one block) about 20 tensor operations run, plus three per
  round; each costs a few microseconds of call overhead, and the ten that
  touch a whole K x K matrix as much again in arithmetic. The input check
  reuses the sorted scores and the box sizes, so it adds two reductions;
* then the block's kept boxes remove everything they suppress further down
  the list at once, so boxes that are already gone never enter a block.
  Memory stays at ``_BLOCK x K`` (10,000 boxes never build a
  10,000 x 10,000 matrix).

The IoU of two overlapping boxes is computed with the same float arithmetic
as torchvision's kernel (boxes apart in one direction may get a negative IoU
instead of 0: neither suppresses), and the threshold is compared as
torchvision compares it, so keep lists are equal index for index. float16 and bfloat16 boxes are upcast to float32 first (as
:mod:`scratchdet.boxes` does; their areas overflow otherwise), so they keep
what torchvision keeps for the same boxes in float32.

:func:`postprocess` decodes a grid of any size Sh x Sw (the input size at
inference; see :mod:`scratchdet.grid`) and clips to that input.
Taught in ``notebooks/07_nms.ipynb``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from scratchdet.boxes import box_area, check_boxes, clip_boxes, upcast
from scratchdet.config import MAX_DETECTIONS, NMS_IOU_THRESHOLD, SCORE_THRESHOLD, DetectorConfig
from scratchdet.grid import check_grid, decode_grid, input_hw

__all__ = ["nms", "batched_nms", "postprocess"]

_BLOCK = 256  # sorted boxes per block: bounds the IoU matrices to BLOCK x alive


def _check_threshold(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_inputs(boxes: Tensor, scores: Tensor, iou_threshold: float) -> None:
    """Types, shapes and devices (no tensor operation); :func:`_check_values` checks the values."""
    _check_threshold(iou_threshold, "iou_threshold")
    if not isinstance(scores, Tensor) or not scores.is_floating_point():
        raise TypeError(f"scores must be a floating point torch.Tensor, got "
                        f"{getattr(scores, 'dtype', type(scores).__name__)}")
    if not isinstance(boxes, Tensor) or not boxes.is_floating_point() or boxes.ndim != 2 or boxes.shape[-1] != 4:
        check_boxes(boxes, "xyxy", "boxes")  # raises the detailed error
    if scores.ndim != 1 or len(scores) != len(boxes):
        raise ValueError(f"scores must have shape [K] = [{len(boxes)}] to match boxes "
                         f"{list(boxes.shape)}, got {list(scores.shape)}")
    if scores.device != boxes.device:
        raise ValueError(f"boxes are on {boxes.device} but scores on {scores.device}")


def _check_values(boxes: Tensor, scores: Tensor, sizes: Tensor, ordered: Tensor) -> None:
    """Raise unless every box has finite corners and sizes >= 0 and every score is finite.

    Reuses what the NMS computes anyway, so the happy path costs two small
    reductions: ``sizes`` ``[2, K]`` (widths, heights: NaN or inf corners give
    NaN or inf sizes) and ``ordered`` ``[K]``, the sorted scores; one host
    sync. Only a failure looks at ``boxes`` and ``scores`` again, to name the culprit.
    """
    bounds = torch.stack((*torch.aminmax(sizes), *torch.aminmax(ordered)))  # (4,) in float32 or wider
    smallest, largest, lowest, highest = bounds.tolist()  # one host sync
    if not (smallest >= 0 and largest < math.inf and -math.inf < lowest and highest < math.inf):
        check_boxes(boxes, "xyxy", "boxes", allow_degenerate=True)
        bad = (~torch.isfinite(scores)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"scores must be finite, got scores[{i}] = {scores[i].item()}")
        # else a size overflowed (corners near the float limit): nothing is invalid


@lru_cache(maxsize=64)
def _threshold_below(iou_threshold: float, dtype: torch.dtype) -> float:
    """Largest value of ``dtype`` that is <= ``iou_threshold``.

    torchvision compares a float32 IoU with the threshold in double precision;
    ``iou > t`` (double) equals ``iou > t_down`` (float32) for every float32 iou.
    """
    t = torch.tensor(iou_threshold, dtype=dtype)
    if t.double().item() > iou_threshold:
        t = torch.nextafter(t, torch.tensor(-math.inf, dtype=dtype))
    return t.item()


@lru_cache(maxsize=32)
def _lower_thresholds(threshold: float, k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``Tensor[k, k]``: ``threshold`` below the diagonal, 2 on and above it.

    ``iou > T`` then keeps only pairs (worse i, better j < i): an IoU is at most
    1 (or NaN), never above 2. One comparison instead of a comparison and a
    ``tril``, which costs several times more at this size. Cached: k is at
    most ``_BLOCK``, and a contiguous ``T`` compares twice as fast as a slice.
    """
    lower = torch.ones(k, k, dtype=torch.bool, device=device).tril_(-1)
    return torch.where(lower, threshold, 2.0).to(dtype)


def _dense_keep(corners: Tensor, area: Tensor, groups: Tensor | None, threshold: float) -> Tensor:
    """Greedy keep mask ``BoolTensor[K]`` of K <= ``_BLOCK`` boxes sorted by score, all pairs at once.

    ``corners`` is ``Tensor[4, K]``, rows x1, y1, x2, y2 (contiguous rows
    broadcast several times faster than columns); ``area`` ``[K]``;
    ``groups`` ``[K]`` or None.

    ``drop[i, j]`` (float 0/1) is 1 when better box j < i would drop box i.
    The fixed point runs on ``suppressed`` (0/1): box i is suppressed when a
    kept box drops it, i.e. when ``drop[i] @ (1 - suppressed) > 0``. That is
    ``counts - drop @ suppressed`` with ``counts = drop.sum(1)``: one
    ``addmv`` and one ``clamp`` per round. Counts are small integers (at most
    ``_BLOCK`` = 256), exact in float, even with reduced-precision matmuls
    (TF32, bfloat16); the coordinates never go through a matmul.
    """
    k = corners.shape[1]
    lo, hi = corners[:2], corners[2:]  # (2, K) each
    w, h = torch.minimum(hi.unsqueeze(2), hi.unsqueeze(1)).sub_(torch.maximum(lo.unsqueeze(2), lo.unsqueeze(1)))
    inter = w.clamp_(min=0).mul_(h)  # (K, K); h < 0 gives inter <= 0, an IoU <= 0 that drops nothing
    union = torch.add(area.unsqueeze(1), area).sub_(inter)  # (K, K)
    drop = inter.div_(union).gt_(_lower_thresholds(threshold, k, corners.dtype, corners.device))  # (K, K) 0/1
    if groups is not None:
        drop.mul_(groups[:, None] == groups)
    counts = drop.sum(1)  # (K,) better boxes that would drop each box
    suppressed = counts.clamp(max=1)  # round 1: every box kept
    for _ in range(k):  # after t rounds the first t boxes are final
        new = torch.addmv(counts, drop, suppressed, alpha=-1).clamp_(max=1)  # dropped by a kept box
        if torch.equal(new, suppressed):
            break
        suppressed = new
    return suppressed.logical_not()


def _overlaps(a: Tensor, b: Tensor, area_a: Tensor, area_b: Tensor, threshold: float) -> Tensor:
    """``Tensor[P, Q]`` of 0/1: IoU(a[:, p], b[:, q]) > threshold, in torchvision's float arithmetic.

    ``a`` and ``b`` are boxes by coordinate, ``Tensor[4, P]`` and ``Tensor[4, Q]``
    (rows x1, y1, x2, y2: contiguous rows broadcast ~10x faster than columns).
    Same formula as :func:`scratchdet.boxes.box_iou`, without its guard for an
    empty union: 0 / 0 = NaN compares False, so such a pair never suppresses.
    The in-place ``gt_`` (float 0/1) is several times faster here than ``>``
    into a bool tensor.
    """
    w = torch.minimum(a[2, :, None], b[2, None, :]).sub_(torch.maximum(a[0, :, None], b[0, None, :]))
    h = torch.minimum(a[3, :, None], b[3, None, :]).sub_(torch.maximum(a[1, :, None], b[1, None, :]))
    inter = w.clamp_(min=0).mul_(h.clamp_(min=0))  # (P, Q)
    union = (area_a[:, None] + area_b[None, :]).sub_(inter)  # (P, Q)
    return inter.div_(union).gt_(threshold)


def _hits(coords: Tensor, area: Tensor, rows: Tensor, cols: Tensor, groups: Tensor | None,
          threshold: float) -> tuple[Tensor, Tensor]:
    """Pairs (p, q) with IoU(rows[p], cols[q]) > threshold in the same group, as two index tensors."""
    over = _overlaps(coords[:, rows], coords[:, cols], area[rows], area[cols], threshold)  # (P, Q)
    p, q = over.nonzero(as_tuple=True)  # (E,) few: a box overlaps few others
    if groups is not None:
        same = groups[rows[p]] == groups[cols[q]]
        p, q = p[same], q[same]
    return p, q


def _sorted_nms(coords: Tensor, area: Tensor, groups: Tensor | None, threshold: float) -> Tensor:
    """Kept sorted positions ``LongTensor[k]`` of boxes already sorted by score.

    ``coords`` is ``Tensor[4, K]`` (rows x1, y1, x2, y2), ``area`` ``[K]``.

    Block by block over the boxes still alive: greedy NMS inside the block
    (:func:`_dense_keep`), then the block's kept boxes suppress every later
    box at once, so suppressed boxes never enter a block.
    """
    alive = torch.arange(len(area), device=area.device)  # sorted positions not yet dropped
    kept = []
    while len(alive):
        block, alive = alive[:_BLOCK], alive[_BLOCK:]
        block_groups = None if groups is None else groups[block]
        new = block[_dense_keep(coords.index_select(1, block), area[block], block_groups, threshold)]
        kept.append(new)
        if len(alive):
            hit, _ = _hits(coords, area, alive, new, groups, threshold)
            survive = torch.ones_like(alive, dtype=torch.bool)
            survive[hit] = False
            alive = alive[survive]
    return torch.cat(kept) if kept else alive


def _run(boxes: Tensor, scores: Tensor, groups: Tensor | None, iou_threshold: float,
         check_values: bool = False) -> Tensor:
    """Inputs of checked types and shapes -> kept indices ``LongTensor[k]`` by decreasing score.

    ``check_values``: also check the values (:func:`_check_values`), from the
    sizes and sorted scores computed here anyway. Inputs that require grad are
    detached (the result is indices); cheaper per call than ``torch.no_grad()``.
    """
    if boxes.requires_grad or scores.requires_grad:
        boxes, scores = boxes.detach(), scores.detach()
    boxes = upcast(boxes)  # exact; float16 areas overflow at 256 x 256 px
    ordered, order = torch.sort(scores, descending=True, stable=True)  # (K,) each
    corners = boxes.t().index_select(1, order)  # (4, K) by decreasing score
    sizes = corners[2:] - corners[:2]  # (2, K) widths, heights
    if check_values and len(order):
        _check_values(boxes, scores, sizes, ordered)
    area = sizes.prod(0)  # (K,) (x2 - x1) * (y2 - y1), as torchvision
    groups = None if groups is None else groups.index_select(0, order)
    threshold = _threshold_below(iou_threshold, boxes.dtype)
    if len(order) <= _BLOCK:  # one block (YOLO's sizes): skip the block bookkeeping
        return order.masked_select(_dense_keep(corners, area, groups, threshold))
    return order[_sorted_nms(corners, area, groups, threshold)]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression; returns what ``torchvision.ops.nms`` returns.

    Args:
        boxes: ``Tensor[K, 4]`` float, xyxy, any frame (pixels usually).
            Zero-size boxes are allowed (they suppress nothing); negative sizes are not.
            float16 and bfloat16 are compared in float32.
        scores: ``Tensor[K]`` float, finite.
        iou_threshold: in [0, 1]; a box is dropped when its IoU with a kept,
            better-scored box is greater than this.

    Returns:
        ``LongTensor[k]``: indices of the kept boxes, by decreasing score (ties
        in input order).

    Raises:
        TypeError, ValueError: bad boxes, scores of another length, NaN or inf
            scores, or a threshold outside [0, 1].
    """
    _check_inputs(boxes, scores, iou_threshold)
    return _run(boxes, scores, None, iou_threshold, check_values=True)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each group (image or class): boxes of different groups never interact.

    torchvision adds an offset ``idx * (max coordinate + 1)`` to the boxes so
    that groups cannot overlap and runs one NMS. Here the suppression matrix
    is masked with ``idxs[j] == idxs[i]`` instead: the same keep list, without
    moving coordinates far from 0 (which rounds IoUs differently in float32).

    Args:
        boxes: ``Tensor[K, 4]`` float, xyxy.
        scores: ``Tensor[K]`` float, finite.
        idxs: ``LongTensor[K]`` (any integer dtype): group of each box.
        iou_threshold: in [0, 1].

    Returns:
        ``LongTensor[k]``: kept indices by decreasing score (ties in input order).
    """
    _check_inputs(boxes, scores, iou_threshold)
    if not isinstance(idxs, Tensor) or idxs.is_floating_point() or idxs.is_complex() or idxs.dtype == torch.bool:
        raise TypeError(f"idxs must be an integer torch.Tensor, got {getattr(idxs, 'dtype', type(idxs).__name__)}")
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs must have shape [K] = [{len(boxes)}], got {list(idxs.shape)}")
    return _run(boxes, scores, idxs.to(boxes.device), iou_threshold, check_values=True)


def _check_postprocess(grid_predictions: Tensor, config: DetectorConfig, score_threshold: float,
                       iou_threshold: float, max_detections: int, input_size) -> None:
    if not isinstance(config, DetectorConfig):
        raise TypeError(f"config must be a DetectorConfig, got {type(config).__name__}")
    if config.head == "v1":
        check_grid(grid_predictions, config, "grid_predictions", batched=True, any_size=True)
    else:
        if not isinstance(grid_predictions, Tensor) or grid_predictions.dim() != 3 \
                or grid_predictions.shape[-1] != 5:
            raise ValueError(f"the {config.head} head's output must be Tensor[N, K, 5] (x1, y1, x2, y2, score), "
                             f"got {list(getattr(grid_predictions, 'shape', []))}")
        if input_size is None:
            raise ValueError(f"postprocess needs input_size=(H, W) for the {config.head} head's candidates")
    if not torch.isfinite(grid_predictions).all():
        raise ValueError("grid_predictions contains NaN or inf (check the model's output)")
    _check_threshold(score_threshold, "score_threshold")
    _check_threshold(iou_threshold, "iou_threshold")
    if isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 1:
        raise ValueError(f"max_detections must be a positive int, got {max_detections!r}")


@torch.no_grad()
def postprocess(grid_predictions: Tensor, config: DetectorConfig, score_threshold: float = SCORE_THRESHOLD,
                iou_threshold: float = NMS_IOU_THRESHOLD, max_detections: int = MAX_DETECTIONS,
                input_size: tuple[int, int] | None = None) -> list[dict[str, Tensor]]:
    """Network output -> final detections per image, for the whole batch at once.

    Steps: decode every predictor (:func:`scratchdet.grid.decode_grid`), clip
    the boxes to the input image and drop those left with zero area, keep
    scores ``>= score_threshold``, run :func:`batched_nms` with the image index
    as the group, keep the ``max_detections`` best per image.

    The ``fpn`` head (:mod:`scratchdet.fpn`) decodes inside the network: its
    output is already boxes and scores, and only the decoding step differs.

    Args:
        grid_predictions: v1: ``Tensor[N, Sh, Sw, B*5]``, the activated model
            output for inputs of ``(Sh, Sw) * config.cell_size`` pixels, any
            Sh, Sw >= 1 (Sh = Sw = S at the training size). fpn:
            ``Tensor[N, K, 5]`` candidates ``(x1, y1, x2, y2, score)``.
        config: gives B, the stride and the training input size (box sizes).
        score_threshold: minimum confidence in [0, 1]; use
            :data:`~scratchdet.config.EVAL_SCORE_THRESHOLD` for AP evaluation.
        iou_threshold: NMS threshold in [0, 1].
        max_detections: most detections kept per image.
        input_size: ``(H, W)`` of the network input; needed for the fpn head
            (v1 reads it from the grid's shape).

    Returns:
        A list of N dicts ``{"boxes": Tensor[K, 4], "scores": Tensor[K]}``:
        xyxy pixels of the network input (clipped to its
        ``(Sh * cell_size, Sw * cell_size)``), sorted by decreasing score.
    """
    _check_postprocess(grid_predictions, config, score_threshold, iou_threshold, max_detections, input_size)
    n_images = len(grid_predictions)
    if config.head == "v1":
        boxes, scores = decode_grid(grid_predictions, config)  # (N, Sh*Sw*B, 4), (N, Sh*Sw*B)
        input_size = input_hw(grid_predictions, config)
    else:
        boxes, scores = grid_predictions[..., :4], grid_predictions[..., 4]  # (N, K, 4), (N, K)
    boxes = clip_boxes(boxes, input_size)
    image, slot = ((scores >= score_threshold) & (box_area(boxes) > 0)).nonzero(as_tuple=True)
    boxes, scores = boxes[image, slot], scores[image, slot]  # (T, 4), (T,)
    keep = _run(boxes, scores, image, iou_threshold)  # batched_nms, inputs already checked
    keep = keep[torch.sort(image[keep], stable=True).indices]  # grouped by image, score order kept
    counts = torch.bincount(image[keep], minlength=n_images)  # (N,)
    first = torch.cumsum(counts, 0) - counts  # (N,) where each image's run starts
    rank = torch.arange(len(keep), device=keep.device) - torch.repeat_interleave(first, counts)
    keep = keep[rank < max_detections]
    sizes = counts.clamp(max=max_detections).tolist()
    return [{"boxes": b, "scores": s} for b, s in zip(boxes[keep].split(sizes), scores[keep].split(sizes))]
