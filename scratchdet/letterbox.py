"""The letterbox: fit a photo into the network input without distorting it, and back.

A photo ``(H, W)`` is resized by one factor so that it fits in the input
``(height, width)`` (aspect ratio kept), then padded at the bottom and the
right with grey (``config.PAD_VALUE``). Padding only at the bottom right means
the way back is a plain per-axis scale with no offset::

    x_input = x_photo * scale_x        x_photo = x_input / scale_x

One convention everywhere: sizes are ``(height, width)`` and so is the scale,
``(scale_y, scale_x)``. :func:`letterbox_shape` is the pure geometry (whole
pixels, Python's ``round``, as Albumentations' ``LongestMaxSize``), shared by
the torch :func:`letterbox` (``predict``, ``detect``, the exported wrappers)
and the Albumentations eval transform (:mod:`scratchdet.data.transforms`).
Taught in ``notebooks/09_inference_and_export.ipynb``.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch.nn.functional as F
from torch import Tensor

from scratchdet.boxes import clip_boxes, image_hw
from scratchdet.config import PAD_VALUE

__all__ = ["letterbox_shape", "letterbox_scale", "letterbox", "unletterbox_boxes", "check_input_size"]

Size = Union[int, Tuple[int, int]]


def _check_hw(size, name: str) -> tuple[int, int]:
    """``int`` or ``(height, width)`` of positive ints -> ``(height, width)``, or a clear error."""
    hw = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if (not isinstance(hw, (tuple, list)) or len(hw) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw)):
        raise ValueError(f"{name} must be a positive int or (height, width) of positive ints, got {size!r}")
    return int(hw[0]), int(hw[1])


def check_input_size(size: Size, stride: int) -> tuple[int, int]:
    """A network input size as ``(height, width)``, checked to be multiples of ``stride``.

    Args:
        size: an int (square) or ``(height, width)`` in pixels.
        stride: the model's cell size (``config.cell_size``); the grid is
            ``(height / stride, width / stride)`` cells.

    Raises:
        ValueError: not positive ints, or not multiples of ``stride`` (the
            message names the nearest sizes that work).
    """
    h, w = _check_hw(size, "image_size")
    if h % stride or w % stride:
        near = tuple(max(stride, stride * round(v / stride)) for v in (h, w))
        raise ValueError(f"image_size {size!r} must be a multiple of the model's stride {stride} "
                         f"(config.cell_size) in height and width; e.g. {near}")
    return h, w


def letterbox_shape(image_size: Size, size: Size) -> tuple[int, int]:
    """``(new_h, new_w)``: a photo of ``image_size`` resized to fit in ``size``, aspect kept.

    Args:
        image_size: the photo's ``(H, W)`` (or an int for square).
        size: the letterbox ``(height, width)`` (or an int for square).

    The factor is ``min(height / H, width / W)``; each side is rounded to whole
    pixels (Python's ``round``, at least 1), which is Albumentations'
    ``LongestMaxSize`` arithmetic for a square ``size``.
    """
    h, w = _check_hw(image_size, "image_size")
    th, tw = _check_hw(size, "size")
    factor = min(th / h, tw / w)
    return min(th, max(1, round(h * factor))), min(tw, max(1, round(w * factor)))


def letterbox_scale(image_size: Size, size: Size) -> tuple[float, float]:
    """``(scale_y, scale_x)`` that :func:`letterbox` applies (rounded sides, so they may differ a little)."""
    h, w = _check_hw(image_size, "image_size")
    new_h, new_w = letterbox_shape((h, w), size)
    return new_h / h, new_w / w


def letterbox(image: Tensor, size: Size) -> tuple[Tensor, tuple[float, float]]:
    """Resize ``Tensor[3, H, W]`` to fit in ``size``, pad bottom-right with ``PAD_VALUE`` grey.

    Args:
        image: float ``Tensor[3, H, W]`` RGB in [0, 1].
        size: an int (square) or ``(height, width)``.

    Bilinear with antialiasing (OpenCV's resize in the Albumentations path
    differs by a grey level or so; the geometry is identical).

    Returns:
        ``(Tensor[3, height, width], (scale_y, scale_x))``; a photo pixel
        ``(x, y)`` lands at ``(x * scale_x, y * scale_y)``.
    """
    if not isinstance(image, Tensor) or image.ndim != 3:
        raise ValueError(f"image must be a Tensor[3, H, W], got {getattr(image, 'shape', type(image).__name__)}")
    th, tw = _check_hw(size, "size")
    h, w = image.shape[-2:]
    new_h, new_w = letterbox_shape((h, w), (th, tw))
    if (new_h, new_w) != (h, w):
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear",
                              align_corners=False, antialias=True)[0]  # (3, new_h, new_w)
    padded = F.pad(image, (0, tw - new_w, 0, th - new_h), value=PAD_VALUE / 255)  # (3, th, tw)
    return padded, (new_h / h, new_w / w)


def unletterbox_boxes(boxes: Tensor, scale: tuple[float, float], image_size: Size) -> Tensor:
    """The inverse of :func:`letterbox` for boxes: letterbox pixels -> photo pixels.

    Args:
        boxes: ``Tensor[M, 4]`` xyxy pixels of the letterboxed input.
        scale: ``(scale_y, scale_x)`` from :func:`letterbox` or :func:`letterbox_scale`.
        image_size: the photo's ``(H, W)`` (or an int for square).

    Returns:
        ``Tensor[M, 4]`` xyxy pixels of the photo, clipped to it (a box that
        lay in the padding only comes back with zero area).
    """
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a Tensor[M, 4] xyxy, got {getattr(boxes, 'shape', type(boxes).__name__)}")
    sy, sx = scale
    return clip_boxes(boxes / boxes.new_tensor([sx, sy, sx, sy]), image_hw(image_size))
