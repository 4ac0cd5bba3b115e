"""Pictures: boxes on images, grid overlays, image grids and curves.

Images may be numpy ``uint8`` arrays ``(H, W, 3)`` RGB or torch tensors
``[3, H, W]`` (float in [0, 1] or uint8); ``draw_boxes`` and ``draw_grid``
return a new numpy ``uint8`` ``(H, W, 3)`` RGB array and never modify their
input. ``plot_boxes`` draws vector boxes on a matplotlib axis instead, and
``drawn_boxes`` reads them back, so a figure can assert on what it shows. Boxes
are xyxy pixels of that image (``Tensor[M, 4]`` or an ``(M, 4)`` array);
colours are RGB 0-255.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import cv2
import numpy as np
import torch

__all__ = ["to_numpy_image", "draw_boxes", "draw_grid", "plot_boxes", "drawn_boxes", "show_images", "plot_curves"]

GREEN = (0, 230, 60)
RED = (255, 40, 40)
YELLOW = (255, 220, 0)
HALO = (0, 0, 0)  # drawn under every box and label, so any colour reads on any scene (green boxes on grass)


def to_numpy_image(image) -> np.ndarray:
    """Return a contiguous ``uint8 (H, W, 3)`` RGB copy of a numpy or tensor image.

    Accepts ``(H, W, 3)`` / ``(H, W)`` numpy arrays (uint8, or float in [0, 1])
    and ``[3, H, W]`` / ``[H, W]`` tensors (float in [0, 1], or uint8).
    """
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu()
        if array.ndim == 3:
            if array.shape[0] not in (1, 3):
                raise ValueError(f"tensor image must be [3, H, W], got {list(array.shape)}")
            array = array.permute(1, 2, 0)  # (H, W, C)
        array = array.numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(f"image must be a numpy array or torch tensor, got {type(image).__name__}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"image must be (H, W, 3) or (H, W), got shape {array.shape}")
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array).copy()


def _as_numpy_boxes(boxes) -> np.ndarray:
    if boxes is None:
        return np.zeros((0, 4), np.float32)
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def draw_boxes(
    image,
    boxes,
    scores=None,
    color: tuple[int, int, int] = GREEN,
    thickness: int | None = None,
    labels: Sequence[str] | None = None,
    halo: bool = True,
) -> np.ndarray:
    """Draw xyxy pixel boxes (with optional scores or labels) on a copy of ``image``.

    Args:
        image: numpy ``(H, W, 3)`` RGB or tensor ``[3, H, W]``.
        boxes: ``Tensor[M, 4]`` / ``(M, 4)`` array, xyxy pixels of ``image``.
        scores: optional ``Tensor[M]``; drawn as ``0.87`` above each box.
        color: RGB colour of boxes and text.
        thickness: line width in pixels; default scales with the image size (at least 2).
        labels: optional text per box (overrides scores).
        halo: draw each box and label over a black outline one pixel wider on
            each side, so the colour contrasts with any background.

    Returns:
        ``uint8 (H, W, 3)`` RGB array.
    """
    canvas = to_numpy_image(image)
    boxes = _as_numpy_boxes(boxes)
    if scores is not None and len(scores) != len(boxes):
        raise ValueError(f"got {len(boxes)} boxes but {len(scores)} scores")
    if labels is not None and len(labels) != len(boxes):
        raise ValueError(f"got {len(boxes)} boxes but {len(labels)} labels")
    h, w = canvas.shape[:2]
    thickness = thickness or max(2, round(max(h, w) / 320))  # 2 px: a 1 px line vanishes at 100% zoom
    font_scale = max(0.3, max(h, w) / 1000)
    for i, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(int)):
        text = labels[i] if labels is not None else (f"{float(scores[i]):.2f}" if scores is not None else None)
        origin = (x1, max(y1 - 3, 8))
        if halo:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), HALO, thickness + 2, cv2.LINE_AA)
            if text:
                cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, HALO, 3, cv2.LINE_AA)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        if text:
            cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, color, 1, cv2.LINE_AA)
    return canvas


def draw_grid(image, num_cells: int, color: tuple[int, int, int] = YELLOW,
              cells: np.ndarray | torch.Tensor | None = None, alpha: float = 0.5) -> np.ndarray:
    """Overlay an ``S x S`` grid on a copy of ``image``; optionally shade cells.

    Args:
        image: numpy ``(H, W, 3)`` RGB or tensor ``[3, H, W]``.
        num_cells: S, grid cells per side.
        color: RGB colour of the grid lines and shading.
        cells: optional boolean ``(S, S)`` mask (row i = y, column j = x) of
            cells to shade, e.g. the cells responsible for a face.
        alpha: opacity of the shading; shaded cells also get a one-pixel
            border in ``color`` outlined in black, drawn over the grid lines,
            so they stand out on busy scenes.
    """
    if not isinstance(num_cells, int) or num_cells <= 0:
        raise ValueError(f"num_cells must be a positive int, got {num_cells!r}")
    canvas = to_numpy_image(image)
    h, w = canvas.shape[:2]
    ys = np.linspace(0, h, num_cells + 1)
    xs = np.linspace(0, w, num_cells + 1)
    shaded = []  # (top-left, bottom-right) pixel corners of each shaded cell
    if cells is not None:
        mask = np.asarray(cells.cpu() if isinstance(cells, torch.Tensor) else cells, dtype=bool)
        if mask.shape != (num_cells, num_cells):
            raise ValueError(f"cells must have shape ({num_cells}, {num_cells}), got {mask.shape}")
        shaded = [((int(xs[j]), int(ys[i])), (int(xs[j + 1]) - 1, int(ys[i + 1]) - 1))
                  for i, j in zip(*np.nonzero(mask))]
        overlay = canvas.copy()
        for corner, opposite in shaded:
            cv2.rectangle(overlay, corner, opposite, color, -1)
        canvas = cv2.addWeighted(overlay, alpha, canvas, 1 - alpha, 0)
    for x in xs:
        cv2.line(canvas, (int(round(x)), 0), (int(round(x)), h), color, 1)
    for y in ys:
        cv2.line(canvas, (0, int(round(y))), (w, int(round(y))), color, 1)
    for corner, opposite in shaded:  # a black-outlined border over the grid lines
        cv2.rectangle(canvas, corner, opposite, HALO, 3)
        cv2.rectangle(canvas, corner, opposite, color, 1)
    return canvas


def show_images(images: Sequence, titles: Sequence[str] | None = None, ncols: int = 4,
                size: float = 3.0, suptitle: str | None = None):
    """Show images in a grid of matplotlib axes and return the ``Figure``."""
    import matplotlib.pyplot as plt  # lazy: only the figures need matplotlib; drawing boxes is OpenCV

    if len(images) == 0:
        raise ValueError("show_images needs at least one image")
    ncols = max(1, min(ncols, len(images)))
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(to_numpy_image(images[k]))
            if titles is not None:
                ax.set_title(titles[k], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_curves(history: Mapping[str, Sequence[float]], x: Sequence[float] | None = None,
                xlabel: str = "step", title: str | None = None, logy: bool = False):
    """Plot named curves (e.g. loss terms per epoch) on one axis; return the ``Figure``."""
    import matplotlib.pyplot as plt  # lazy, as in show_images

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in history.items():
        xs = x if x is not None else range(len(values))
        ax.plot(list(xs)[: len(values)], list(values), label=name)
    ax.set_xlabel(xlabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _mpl_color(color: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(v / 255 for v in color)


def plot_boxes(ax, boxes, color: tuple[int, int, int] = GREEN, scores=None, linewidth: float = 2.0,
               fontsize: float = 10.0) -> None:
    """Draw xyxy pixel boxes on a matplotlib axis that shows their image (``ax.imshow``).

    Unlike :func:`draw_boxes` (pixels burnt into a copy of the image), these are
    vector rectangles: sharp at any zoom, with score labels at ``fontsize``
    points whatever the image size, and readable back with :func:`drawn_boxes`,
    so a figure can assert on what it shows. Each box and label has a black halo.

    Args:
        ax: a matplotlib ``Axes`` showing the image with ``imshow``'s default
            extent (pixel ``i`` covers ``[i - 0.5, i + 0.5]``).
        boxes: ``Tensor[K, 4]`` / ``(K, 4)`` array, xyxy pixels (box edges).
        color: RGB 0-255, as the other drawing functions.
        scores: optional ``Tensor[K]``; drawn as ``0.87`` above each box.
    """
    from matplotlib import patheffects
    from matplotlib.patches import Rectangle

    boxes = _as_numpy_boxes(boxes)
    if scores is not None and len(scores) != len(boxes):
        raise ValueError(f"got {len(boxes)} boxes but {len(scores)} scores")
    rgb = _mpl_color(color)
    halo = [patheffects.Stroke(linewidth=linewidth + 2.5, foreground="black"), patheffects.Normal()]
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=rgb,
                               linewidth=linewidth, path_effects=halo))
        if scores is not None:
            ax.text(x1 - 0.5, y1 - 2, f"{float(scores[k]):.2f}", color=rgb, fontsize=fontsize, va="bottom",
                    path_effects=[patheffects.withStroke(linewidth=3, foreground="black")])


def drawn_boxes(ax, color: tuple[int, int, int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The xyxy pixel boxes :func:`plot_boxes` drew on ``ax`` in ``color``, in drawing order.

    Returns:
        ``Tensor[K, 4]`` of ``dtype`` (``K = 0`` when none), for asserts such as
        ``torch.equal(drawn_boxes(ax, RED), faces)``.
    """
    from matplotlib.patches import Rectangle

    rgb = _mpl_color(color)
    rects = [p for p in ax.patches if isinstance(p, Rectangle) and tuple(p.get_edgecolor()[:3]) == rgb]
    return torch.tensor([[p.get_x() + 0.5, p.get_y() + 0.5, p.get_x() + 0.5 + p.get_width(),
                          p.get_y() + 0.5 + p.get_height()] for p in rects], dtype=dtype).reshape(-1, 4)
