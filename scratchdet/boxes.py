"""Box formats, areas and IoU: the only module that converts box formats.

Formats (all ``Tensor[M, 4]``, float):

* ``"xyxy"``   -- (x1, y1, x2, y2): top-left and bottom-right corners.
* ``"xywh"``   -- (x1, y1, w, h): top-left corner and size (WIDER FACE, COCO).
* ``"cxcywh"`` -- (cx, cy, w, h): centre and size (YOLO).

Coordinates are in pixels unless a function says "normalised", in which case
x is divided by the image width and y by the image height, so the image spans
[0, 1] x [0, 1]. Image sizes are ``(height, width)`` as in torchvision, or one
int for a square image. Every conversion goes through xyxy, as in torchvision.

Areas and IoUs of float16 / bfloat16 boxes are computed in float32, as
torchvision does (its ``_upcast``): 256 px x 256 px = 65,536 already
overflows float16 (max 65,504), which would turn every IoU of large boxes
into 0. NaN coordinates propagate to NaN IoUs, as in torchvision, so that a
NaN prediction cannot hide behind an IoU of 0.

Taught in ``notebooks/01_boxes.ipynb``.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
ImageSize = Union[int, tuple[int, int]]

__all__ = [
    "BOX_FORMATS",
    "box_convert",
    "normalize_boxes",
    "denormalize_boxes",
    "box_area",
    "box_iou",
    "box_iou_paired",
    "generalized_box_iou_paired",
    "upcast",
    "clip_boxes",
    "check_boxes",
    "image_hw",
]


def image_hw(image_size: ImageSize) -> tuple[int, int]:
    """Return ``(height, width)`` from an int (square) or a ``(height, width)`` pair."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        hw = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    if hw[0] <= 0 or hw[1] <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return hw


def _check_format(fmt: str) -> None:
    if fmt not in BOX_FORMATS:
        raise ValueError(f"box format must be one of {BOX_FORMATS}, got {fmt!r}")


def check_boxes(
    boxes: Tensor,
    fmt: str = "xyxy",
    name: str = "boxes",
    image_size: ImageSize | None = None,
    allow_degenerate: bool = False,
) -> Tensor:
    """Validate boxes at an API boundary and return them unchanged.

    Args:
        boxes: ``Tensor[M, 4]`` in format ``fmt`` (M may be 0).
        fmt: one of ``"xyxy"``, ``"xywh"``, ``"cxcywh"``.
        name: how the error message refers to the tensor.
        image_size: if given, ``(height, width)`` in pixels; boxes must lie
            inside the image (a tolerance of 1e-3 px is allowed).
        allow_degenerate: accept zero width or height (negative never).

    Raises:
        TypeError: ``boxes`` is not a floating tensor.
        ValueError: wrong shape, NaN or inf, negative (or zero) size, or a box
            outside the image; the message names the first bad box.
    """
    _check_format(fmt)
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if not boxes.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {boxes.dtype}")
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [M, 4], got {list(boxes.shape)}")
    if boxes.numel() == 0:
        return boxes
    bad = ~torch.isfinite(boxes).all(dim=1)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"{name}[{i}] is not finite: {boxes[i].tolist()}")
    xyxy = box_convert(boxes, fmt, "xyxy")
    wh = xyxy[:, 2:] - xyxy[:, :2]
    bad = (wh < 0).any(dim=1) if allow_degenerate else (wh <= 0).any(dim=1)
    if bad.any():
        i = int(bad.nonzero()[0])
        what = "negative" if allow_degenerate else "non-positive"
        raise ValueError(
            f"{name}[{i}] = {boxes[i].tolist()} ({fmt}) has {what} width or height "
            f"{wh[i].tolist()}"
        )
    if image_size is not None:
        h, w = image_hw(image_size)
        tol = 1e-3
        limit = xyxy.new_tensor([w, h, w, h])
        bad = (xyxy < -tol).any(dim=1) | (xyxy > limit + tol).any(dim=1)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(
                f"{name}[{i}] = {xyxy[i].tolist()} (xyxy) lies outside the image "
                f"of height {h} and width {w}"
            )
    return boxes


def _to_xyxy(boxes: Tensor, fmt: str) -> Tensor:
    if fmt == "xyxy":
        return boxes
    a, b, c, d = boxes.unbind(-1)
    if fmt == "xywh":
        return torch.stack((a, b, a + c, b + d), dim=-1)
    # cxcywh
    return torch.stack((a - c / 2, b - d / 2, a + c / 2, b + d / 2), dim=-1)


def _from_xyxy(boxes: Tensor, fmt: str) -> Tensor:
    if fmt == "xyxy":
        return boxes
    x1, y1, x2, y2 = boxes.unbind(-1)
    if fmt == "xywh":
        return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``Tensor[..., 4]`` boxes between ``xyxy``, ``xywh`` and ``cxcywh``.

    Works in any frame (pixels or normalised): the frame is unchanged. Always
    returns a new tensor, so callers may modify the result in place.
    """
    _check_format(in_fmt)
    _check_format(out_fmt)
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape [..., 4], got {list(boxes.shape)}")
    if in_fmt == out_fmt:
        return boxes.clone()
    return _from_xyxy(_to_xyxy(boxes, in_fmt), out_fmt)


def _scale(image_size: ImageSize, like: Tensor) -> Tensor:
    h, w = image_hw(image_size)
    return like.new_tensor([w, h, w, h])


def normalize_boxes(boxes: Tensor, image_size: ImageSize) -> Tensor:
    """Pixel boxes ``Tensor[..., 4]`` (any format) -> image-normalised, same format.

    x and w are divided by the width, y and h by the height of ``image_size``
    (``(height, width)`` or an int).
    """
    return boxes / _scale(image_size, boxes)


def denormalize_boxes(boxes: Tensor, image_size: ImageSize) -> Tensor:
    """Image-normalised boxes ``Tensor[..., 4]`` (any format) -> pixels, same format."""
    return boxes * _scale(image_size, boxes)


def upcast(boxes: Tensor) -> Tensor:
    """float16 / bfloat16 -> float32 (exact); any other dtype unchanged.

    For products of coordinates (areas, IoUs), as torchvision's ``_upcast``.
    """
    return boxes.float() if boxes.dtype in (torch.float16, torch.bfloat16) else boxes


def box_area(boxes: Tensor) -> Tensor:
    """Area of xyxy boxes: ``Tensor[..., 4] -> Tensor[...]``.

    Degenerate boxes (x2 < x1 or y2 < y1) have area 0, never a negative one.
    float16 and bfloat16 boxes give float32 areas (see the module docstring).
    """
    boxes = upcast(boxes)
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union of xyxy boxes ``[..., 4]`` that broadcast together (float32 or wider)."""
    boxes1, boxes2 = upcast(boxes1), upcast(boxes2)
    top_left = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, box_area(boxes1) + box_area(boxes2) - inter


def _safe_divide(inter: Tensor, union: Tensor) -> Tensor:
    """``inter / union``, but 0 where the union is exactly 0 (two empty boxes).

    NaN stays NaN (``NaN == 0`` is False). Finite boxes never have a negative
    union, and an empty union means an empty intersection, so dividing by 1
    there gives 0. The divisor, not the quotient, is replaced, so that the
    gradient has no 0 / 0 either.
    """
    return inter / torch.where(union == 0, 1.0, union)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over union of two sets of xyxy boxes.

    Args:
        boxes1: ``Tensor[M, 4]``, xyxy, any frame.
        boxes2: ``Tensor[K, 4]``, xyxy, same frame.

    Returns:
        ``Tensor[M, K]``: IoU in [0, 1], float32 for float16 / bfloat16 boxes.
        A pair whose union is empty (two zero-area boxes) has IoU 0, not NaN;
        a box with a NaN coordinate has NaN IoUs, as in torchvision.
    """
    for name, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        if b.ndim != 2 or b.shape[-1] != 4:
            raise ValueError(f"{name} must have shape [M, 4], got {list(b.shape)}")
    inter, union = _inter_union(boxes1[:, None, :], boxes2[None, :, :])  # (M, K) each
    return _safe_divide(inter, union)


def box_iou_paired(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of corresponding xyxy boxes: ``Tensor[..., 4]`` x ``Tensor[..., 4]`` -> ``Tensor[...]``.

    The leading dimensions broadcast (e.g. ``(N, S, S, B, 4)`` against
    ``(N, S, S, 1, 4)``); unlike :func:`box_iou` it does not form all pairs.
    Zero-area pairs give 0, a NaN coordinate gives NaN, float16 / bfloat16
    boxes give float32 IoUs, all as in :func:`box_iou`.
    """
    if boxes1.shape[-1:] != (4,) or boxes2.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape [..., 4], got {list(boxes1.shape)} and {list(boxes2.shape)}")
    return _safe_divide(*_inter_union(boxes1, boxes2))


def generalized_box_iou_paired(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of corresponding xyxy boxes: ``Tensor[..., 4]`` x ``Tensor[..., 4]`` -> ``Tensor[...]`` in [-1, 1].

    ``IoU - (C - union) / C`` with ``C`` the area of the smallest box that
    encloses both (Rezatofighi et al. 2019): unlike IoU it still ranks, and
    still has a gradient for, boxes that do not overlap. As
    ``torchvision.ops.generalized_box_iou`` but for pairs; the leading
    dimensions broadcast.
    """
    if boxes1.shape[-1:] != (4,) or boxes2.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape [..., 4], got {list(boxes1.shape)} and {list(boxes2.shape)}")
    inter, union = _inter_union(boxes1, boxes2)
    boxes1, boxes2 = upcast(boxes1), upcast(boxes2)
    enclosing = torch.cat([torch.minimum(boxes1[..., :2], boxes2[..., :2]),
                           torch.maximum(boxes1[..., 2:], boxes2[..., 2:])], dim=-1)  # (..., 4)
    hull = box_area(enclosing)
    return _safe_divide(inter, union) - _safe_divide(hull - union, hull)


def clip_boxes(boxes: Tensor, image_size: ImageSize) -> Tensor:
    """Clip xyxy pixel boxes ``Tensor[..., 4]`` to the image ``(height, width)``.

    Returns a new tensor; boxes fully outside become degenerate (zero area),
    so follow with :func:`box_area` ``> 0`` to drop them.
    """
    h, w = image_hw(image_size)
    x = boxes[..., 0::2].clamp(0, w)
    y = boxes[..., 1::2].clamp(0, h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)
