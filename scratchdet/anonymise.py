"""Anonymise faces: blur or pixelate each detected box, enlarged by a margin (``scratchdet detect --blur``).

    out = blur_faces(image, boxes)                      # Gaussian blur, 25 % margin
    out = blur_faces(image, boxes, method="pixelate")   # about 6 blocks across a face

The strength follows the face: the Gaussian's sigma and the pixelation block
are fractions of the box's longer side, so a 300 px face is as unrecognisable
as a 30 px one, and a 1 px box still gets a (tiny) blur. Only the enlarged
boxes change; every other pixel of the copy is the input's byte for byte.
This is a helper, not a privacy guarantee: a face the detector misses stays
visible.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from scratchdet.data.photos import as_box_array, check_rgb_image

__all__ = ["BLUR_METHODS", "BLUR_MARGIN", "GAUSSIAN_SIGMA", "PIXELATE_BLOCKS", "blur_faces"]

BLUR_METHODS = ("gaussian", "pixelate")
BLUR_MARGIN = 0.25  # each side grows by this fraction of the box's width (x) or height (y): hair, ears, chin
GAUSSIAN_SIGMA = 0.2  # sigma of the blur, as a fraction of the box's longer side (at least 1 px)
PIXELATE_BLOCKS = 6  # blocks across the box's longer side (a block is at least 3 px)
_WORK_SIGMA = 3.0  # the Gaussian runs on a copy shrunk until sigma is about this (a fixed cost a face)


def blur_faces(image: np.ndarray, boxes: np.ndarray, margin: float = BLUR_MARGIN,
               method: str = "gaussian") -> np.ndarray:
    """A copy of ``image`` with each box, enlarged by ``margin``, blurred (``image`` is not changed).

    Args:
        image: ``uint8 (H, W, 3)`` (RGB or BGR: the channels are treated alike).
        boxes: ``(K, 4)`` xyxy pixels, ``x1 <= x2`` and ``y1 <= y2``; K may be 0; boxes
            partly or wholly outside the image are clipped (or skipped).
        margin: fraction of a box's width (height) added left and right (above and below), >= 0.
        method: ``"gaussian"`` (sigma ``GAUSSIAN_SIGMA`` x the longer side, >= 1 px) or ``"pixelate"``
            (``PIXELATE_BLOCKS`` blocks across the longer side, >= 3 px each).

    Returns:
        ``uint8 (H, W, 3)``: pixels outside every enlarged box are the input's.

    Raises:
        ValueError: a wrong dtype or shape, a non-finite or inverted box, a negative
            margin, or an unknown method (the message names the value).
    """
    boxes = _check_inputs(image, boxes, margin, method)
    out = image.copy()
    height, width = image.shape[:2]
    for box in boxes:  # a loop over faces: each has its own kernel; the pixels are OpenCV's
        side = max(box[2] - box[0], box[3] - box[1], 1.0)  # the face's scale in pixels (>= 1 for dots)
        x1, y1, x2, y2 = _enlarged(box, margin, width, height)
        if x2 > x1 and y2 > y1:  # a box wholly outside the image leaves nothing to blur
            region = out[y1:y2, x1:x2]  # (h, w, 3); later boxes see earlier blurs where they overlap
            out[y1:y2, x1:x2] = _gaussian(region, side) if method == "gaussian" else _pixelate(region, side)
    return out


def _check_inputs(image, boxes, margin, method) -> np.ndarray:
    """Boundary checks; returns the boxes as ``float64 (K, 4)``."""
    check_rgb_image(image)
    array = as_box_array(boxes, np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"boxes must be finite, got {array[~np.isfinite(array).all(axis=1)][0].tolist()}")
    inverted = (array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1])
    if inverted.any():
        raise ValueError(f"boxes must be xyxy with x1 <= x2 and y1 <= y2, got {array[inverted][0].tolist()}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) \
            or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0 (a fraction of the box size), got {margin!r}")
    if method not in BLUR_METHODS:
        raise ValueError(f"method must be one of {BLUR_METHODS}, got {method!r}")
    return array


def _enlarged(box: np.ndarray, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds ``x1, y1, x2, y2`` (exclusive ends) of the enlarged box, clipped to the image."""
    dx, dy = margin * (box[2] - box[0]), margin * (box[3] - box[1])
    x1, y1 = math.floor(box[0] - dx), math.floor(box[1] - dy)
    x2, y2 = max(math.ceil(box[2] + dx), x1 + 1), max(math.ceil(box[3] + dy), y1 + 1)  # a 0 px box: its pixel
    return (min(max(x1, 0), width), min(max(y1, 0), height), min(max(x2, 0), width), min(max(y2, 0), height))


def _gaussian(region: np.ndarray, side: float) -> np.ndarray:
    """Blur with sigma ``GAUSSIAN_SIGMA * side`` (at least 1), computed on a shrunk copy when sigma is large."""
    sigma = max(1.0, GAUSSIAN_SIGMA * side)
    h, w = region.shape[:2]
    shrink = max(1.0, sigma / _WORK_SIGMA)
    small = cv2.resize(region, (max(1, round(w / shrink)), max(1, round(h / shrink))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / shrink, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _pixelate(region: np.ndarray, side: float) -> np.ndarray:
    """Blocks of ``side / PIXELATE_BLOCKS`` pixels (at least 3), each the mean of its pixels."""
    block = max(3.0, side / PIXELATE_BLOCKS)
    h, w = region.shape[:2]
    small = cv2.resize(region, (max(1, math.ceil(w / block)), max(1, math.ceil(h / block))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
