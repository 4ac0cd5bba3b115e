"""The YOLO v1 grid: faces -> per-cell targets, and grid predictions -> boxes.

The network input (``config.image_size`` pixels square) is cut into S x S
cells. Following Redmon et al. (2016, section 2): "if the center of an object
falls into a grid cell, that grid cell is responsible for detecting that
object". A target cell holds ``(x, y, w, h, obj)``:

* x, y -- the face centre relative to the bounds of its cell, in [0, 1]
  (cell units: 0 = the cell's left/top edge, 1 = its right/bottom edge);
* w, h -- the face width and height relative to the whole image, in [0, 1]
  (not square-rooted: the loss takes the root, the network predicts it);
* obj  -- 1 where a face is assigned, else 0 (and x, y, w, h are 0).

Conventions (all vectorised, no Python loop over boxes or cells):

* Row i runs along y, column j along x: ``targets[i, j]``.
* A centre exactly on a cell border belongs to the cell right of / below it
  (``floor``); a centre on the right or bottom image edge belongs to the last
  cell (clamped), so x or y is then exactly 1.
* Boxes must lie inside the image (``check_boxes``, 1e-3 px tolerance; the data
  transforms clip them); they are then clipped, which only removes that slop.
* One face per cell, as in the paper, even with B predictors per cell. When
  several centres share a cell the **largest face (by area) is kept**, ties
  going to the earlier box: it is the one most likely to be learned and
  detected. The others are lost for training -- the crowd weakness of YOLO v1,
  measured by :func:`collision_stats`. :func:`assign_cells` isolates this
  rule, so a variant with more targets per cell only needs to change it.
  Areas are compared in pixels, exactly as :func:`assign_cells` does.

Training grid and inference grid. ``config.num_cells`` (S) and
``config.image_size`` describe the *training* input: targets are always
encoded, and the loss always computed, on that S x S grid (:func:`check_grid`
is strict by default). The network is convolutional, so at inference it runs
on any input whose sides are multiples of the stride ``config.cell_size``
(the training cell size in pixels), and the grid follows the input: an input
of ``(Sh * stride, Sw * stride)`` pixels gives Sh x Sw cells (non-square
too). :func:`decode_grid` decodes any such grid: centres from the cell and
the stride, ``((j + x) * stride, (i + y) * stride)``; sizes relative to the
training input, ``w = sqrt_w**2 * config.image_size``, because that is what
the weights learned (a 40 px face decodes as 40 px at any input size).

Taught in ``notebooks/03_grid_encoding.ipynb``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from scratchdet.boxes import ImageSize, box_area, box_convert, check_boxes, clip_boxes, image_hw
from scratchdet.config import DetectorConfig

__all__ = [
    "assign_cells",
    "encode_targets",
    "encode_targets_batch",
    "decode_targets",
    "cells_to_boxes",
    "decode_grid",
    "check_grid",
    "input_hw",
    "gather_boxes",
    "collision_stats",
    "collision_rates",
]


def _check_num_cells(num_cells) -> None:
    if not isinstance(num_cells, int) or isinstance(num_cells, bool) or num_cells <= 0:
        raise ValueError(f"num_cells must be a positive int, got {num_cells!r}")


def _locate(boxes: Tensor, image_wh: Tensor, num_cells: int) -> tuple[Tensor, Tensor, Tensor]:
    """xyxy pixel boxes [T, 4], image (w, h) [T, 2] or [2] -> (row, col, offsets [T, 2])."""
    cxcywh = box_convert(boxes, "xyxy", "cxcywh")  # (T, 4)
    # Multiply before dividing so that a centre on a border maps to an exact integer.
    grid_xy = cxcywh[:, :2] * num_cells / image_wh  # (T, 2) centre in cell units
    cell = grid_xy.floor().clamp(0, num_cells - 1)  # (T, 2) as (col, row)
    offsets = grid_xy - cell  # (T, 2) in [0, 1]
    cell = cell.long()
    return cell[:, 1], cell[:, 0], offsets


def _winners(cell_id: Tensor, area: Tensor, num_slots: int) -> Tensor:
    """Index of the box kept in each of ``num_slots`` cells -> LongTensor [num_slots].

    The largest area wins, then the lowest index; an empty cell gets T (= len(cell_id)).
    """
    count = len(cell_id)
    best = area.new_full((num_slots,), -1.0).scatter_reduce(0, cell_id, area, reduce="amax")
    index = torch.arange(count, device=cell_id.device)  # (T,)
    candidate = torch.where(area == best[cell_id], index, count)  # (T,) ties keep all candidates
    return torch.full((num_slots,), count, device=cell_id.device).scatter_reduce(0, cell_id, candidate, "amin")


def assign_cells(boxes: Tensor, num_cells: int, image_size: ImageSize) -> tuple[Tensor, Tensor, Tensor]:
    """Responsible cell of each face and which faces survive collisions.

    Args:
        boxes: ``Tensor[M, 4]``, xyxy pixels of an image of ``image_size``.
        num_cells: S, grid cells per side.
        image_size: ``(height, width)`` or an int (square).

    Returns:
        ``(rows, cols, kept)``: ``LongTensor[M]`` row i (y) and column j (x) of
        the cell holding each centre, and ``BoolTensor[M]``, True for the one
        face per cell that becomes the target (the largest; see module doc).
    """
    check_boxes(boxes, "xyxy", "boxes", image_size=image_size)
    _check_num_cells(num_cells)
    h, w = image_hw(image_size)
    boxes = clip_boxes(boxes, (h, w))
    rows, cols, _ = _locate(boxes, boxes.new_tensor([w, h]), num_cells)
    cell_id = rows * num_cells + cols  # (M,)
    winners = _winners(cell_id, box_area(boxes), num_cells * num_cells)  # (S*S,) pixel areas compared
    kept = winners[cell_id] == torch.arange(len(boxes), device=boxes.device)
    return rows, cols, kept


def _encode(boxes: Tensor, image_idx: Tensor, num_images: int, num_cells: int,
            image_size: tuple[int, int]) -> Tensor:
    """Validated, clipped xyxy pixel boxes [T, 4] of ``num_images`` -> targets [N, S, S, 5]."""
    h, w = image_size
    S = num_cells
    rows, cols, offsets = _locate(boxes, boxes.new_tensor([w, h]), S)
    wh = (boxes[:, 2:] - boxes[:, :2]) / boxes.new_tensor([w, h])  # (T, 2) image-normalised
    cell_id = (image_idx * S + rows) * S + cols  # (T,) flat index into N*S*S
    # Pixel areas, as assign_cells: normalised float32 areas round, so an exact tie could
    # go to whichever box rounds larger instead of the earlier one.
    winners = _winners(cell_id, box_area(boxes), num_images * S * S)  # (N*S*S,) box or T
    values = torch.cat([offsets, wh, torch.ones_like(wh[:, :1])], dim=1)  # (T, 5)
    values = torch.cat([values, values.new_zeros(1, 5)])  # (T + 1, 5): row T = empty cell
    return values[winners].view(num_images, S, S, 5)  # (N, S, S, 5)


def _target_size(config: DetectorConfig, image_size: ImageSize | None) -> tuple[int, int]:
    if not isinstance(config, DetectorConfig):
        raise TypeError(f"config must be a DetectorConfig, got {type(config).__name__}")
    return image_hw(config.image_size if image_size is None else image_size)


def encode_targets(boxes: Tensor, config: DetectorConfig, image_size: ImageSize | None = None) -> Tensor:
    """Encode the faces of one image into a YOLO target grid.

    Args:
        boxes: ``Tensor[M, 4]`` float, xyxy pixels (M may be 0).
        config: gives S (``num_cells``).
        image_size: ``(height, width)`` of the image the boxes live in;
            default the network input, ``config.image_size`` square.

    Returns:
        ``Tensor[S, S, 5]`` of ``(x, y, w, h, obj)``: x, y cell-relative,
        w, h image-normalised, obj in {0, 1}; see the module docstring for the
        border and collision rules.

    Raises:
        TypeError, ValueError: bad boxes (shape, dtype, NaN, outside the image).
    """
    hw = _target_size(config, image_size)
    check_boxes(boxes, "xyxy", "boxes", image_size=hw)
    image_idx = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
    return _encode(clip_boxes(boxes, hw), image_idx, 1, config.num_cells, hw)[0]


def encode_targets_batch(boxes: Sequence[Tensor], config: DetectorConfig,
                         image_size: ImageSize | None = None) -> Tensor:
    """Encode a batch of images at once (one scatter for the whole batch).

    Args:
        boxes: N tensors ``Tensor[M_n, 4]`` float, xyxy pixels (as the collate
            function yields them).
        config: gives S.
        image_size: ``(height, width)`` shared by the images; default
            ``config.image_size`` square.

    Returns:
        ``Tensor[N, S, S, 5]``, each image encoded as by :func:`encode_targets`.
    """
    hw = _target_size(config, image_size)
    if isinstance(boxes, Tensor) or not isinstance(boxes, Sequence):
        raise TypeError(f"boxes must be a list of Tensor[M, 4], got {type(boxes).__name__}")
    for n, b in enumerate(boxes):
        if not isinstance(b, Tensor) or b.ndim != 2 or b.shape[-1] != 4 or not b.is_floating_point():
            check_boxes(b, "xyxy", f"boxes[{n}]")  # raises the precise error
    S = config.num_cells
    if len(boxes) == 0:
        return torch.zeros(0, S, S, 5)
    counts = torch.tensor([len(b) for b in boxes], device=boxes[0].device)
    flat = torch.cat(list(boxes))  # (T, 4)
    try:
        check_boxes(flat, "xyxy", "boxes", image_size=hw)
    except ValueError:  # name the image and the box within it
        for n, b in enumerate(boxes):
            check_boxes(b, "xyxy", f"boxes[{n}]", image_size=hw)
        raise
    image_idx = torch.repeat_interleave(torch.arange(len(boxes), device=flat.device), counts)  # (T,)
    return _encode(clip_boxes(flat, hw), image_idx, len(boxes), S, hw)


def cells_to_boxes(xy: Tensor, wh: Tensor, num_cells: int) -> Tensor:
    """Cell-relative centres and image-normalised sizes -> normalised xyxy boxes.

    Args:
        xy: ``Tensor[..., S, S, K, 2]``: centre offsets inside each cell, with
            the cell's row i and column j taken from dims -4 and -3.
        wh: ``Tensor[..., S, S, K, 2]``: width and height over the image size.
        num_cells: S.

    Returns:
        ``Tensor[..., S, S, K, 4]``: xyxy in image-normalised coordinates
        (multiply by the image size for pixels). Differentiable.
    """
    if xy.ndim < 4 or xy.shape[-4:-2] != (num_cells, num_cells) or xy.shape[-1] != 2 or xy.shape != wh.shape:
        raise ValueError(
            f"xy and wh must both have shape [..., {num_cells}, {num_cells}, K, 2], "
            f"got {list(xy.shape)} and {list(wh.shape)}"
        )
    return _cells_to_boxes(xy, wh, num_cells)


def _cells_to_boxes(xy: Tensor, wh: Tensor, num_cells: int) -> Tensor:
    """:func:`cells_to_boxes` for any grid ``[..., Sh, Sw, K, 2]``, in units of a ``num_cells`` grid.

    A cell is ``1 / num_cells`` wide and high whatever Sh and Sw are, so the
    result is normalised by the *training* input: coordinates exceed 1 on a
    larger grid.
    """
    sh, sw = xy.shape[-4], xy.shape[-3]
    cols = torch.arange(sw, dtype=xy.dtype, device=xy.device).view(1, sw, 1)  # (1, Sw, 1) over (Sh, Sw, K)
    rows = torch.arange(sh, dtype=xy.dtype, device=xy.device).view(sh, 1, 1)  # (Sh, 1, 1)
    cx = (cols + xy[..., 0]) / num_cells  # (..., Sh, Sw, K)
    cy = (rows + xy[..., 1]) / num_cells
    return box_convert(torch.stack([cx, cy, wh[..., 0], wh[..., 1]], dim=-1), "cxcywh", "xyxy")


def check_grid(grid: Tensor, config: DetectorConfig, name: str, channels: int | None = None,
               batched: bool = False, any_size: bool = False) -> None:
    """Reject a grid tensor that does not fit ``config``, with a message naming it.

    Args:
        grid: ``Tensor[N, S, S, channels]`` (or ``[S, S, channels]`` unless
            ``batched``); ``[N, Sh, Sw, channels]`` with ``any_size``.
        config: gives S (and B, for the message).
        name: how the message refers to the tensor.
        channels: 5 for targets; ``None`` for predictions (``config.channels`` = B*5).
        batched: require the leading N dimension.
        any_size: accept any grid Sh x Sw with Sh, Sw >= 1 (network output at
            inference, for an input of ``(Sh, Sw) * config.cell_size`` pixels);
            the default requires the training grid S x S (targets, loss).
    """
    if not isinstance(config, DetectorConfig):
        raise TypeError(f"config must be a DetectorConfig, got {type(config).__name__}")
    if not isinstance(grid, Tensor) or not grid.is_floating_point():
        raise TypeError(f"{name} must be a floating point torch.Tensor, got "
                        f"{getattr(grid, 'dtype', type(grid).__name__)}")
    S, channels = config.num_cells, config.channels if channels is None else channels
    good_ndim = grid.ndim in ((4,) if batched else (3, 4))
    if any_size:
        if not good_ndim or grid.shape[-1] != channels or min(grid.shape[-3:-1], default=0) < 1:
            want = f"[N, Sh, Sw, {channels}]" + ("" if batched else f" or [Sh, Sw, {channels}]")
            raise ValueError(f"{name} must have shape {want} with any Sh, Sw >= 1 (B={config.boxes_per_cell} "
                             f"from the config), got {list(grid.shape)}")
    elif not good_ndim or grid.shape[-3:] != (S, S, channels):
        want = f"[N, {S}, {S}, {channels}]" + ("" if batched else f" or [{S}, {S}, {channels}]")
        raise ValueError(f"{name} must have shape {want} (S={S}, B={config.boxes_per_cell} "
                         f"from the config), got {list(grid.shape)}")


def input_hw(grid: Tensor, config: DetectorConfig) -> tuple[int, int]:
    """``(height, width)`` in pixels of the input that gives ``grid`` ``[..., Sh, Sw, C]``.

    ``(Sh * config.cell_size, Sw * config.cell_size)``: the stride is the
    training cell size; at S = ``config.num_cells`` this is the training input.
    """
    return grid.shape[-3] * config.cell_size, grid.shape[-2] * config.cell_size


def decode_targets(targets: Tensor, config: DetectorConfig,
                   image_size: ImageSize | None = None) -> Tensor | list[Tensor]:
    """The exact inverse of :func:`encode_targets` for faces in distinct cells.

    Args:
        targets: ``Tensor[S, S, 5]`` or ``Tensor[N, S, S, 5]`` of ``(x, y, w, h, obj)``.
        config: gives S.
        image_size: ``(height, width)`` in pixels; default ``config.image_size``.

    Returns:
        For one image ``Tensor[K, 4]``, the xyxy pixel boxes of the cells with
        obj = 1 in row-major cell order; for a batch, a list of N of them.
    """
    check_grid(targets, config, "targets", channels=5)
    h, w = _target_size(config, image_size)
    batch = targets if targets.ndim == 4 else targets[None]  # (N, S, S, 5)
    boxes = cells_to_boxes(batch[..., None, 0:2], batch[..., None, 2:4], config.num_cells)
    boxes = boxes[..., 0, :] * boxes.new_tensor([w, h, w, h])  # (N, S, S, 4) pixels
    obj = batch[..., 4] > 0.5  # (N, S, S)
    per_image = [b[o] for b, o in zip(boxes, obj)]  # (K_n, 4), row-major order
    return per_image if targets.ndim == 4 else per_image[0]


def decode_grid(pred: Tensor, config: DetectorConfig) -> tuple[Tensor, Tensor]:
    """Turn network output into boxes and scores (one per predictor, unfiltered).

    Works at any input size (see the module docstring): the grid Sh x Sw
    follows the input, the stride and the box sizes follow the training
    config. At Sh = Sw = ``config.num_cells`` this is the training geometry.

    Args:
        pred: ``Tensor[N, Sh, Sw, B*5]`` or ``Tensor[Sh, Sw, B*5]``, any
            Sh, Sw >= 1, per predictor ``(x, y, sqrt_w, sqrt_h, conf)`` as the
            model outputs them (x, y cell-relative).
        config: gives B, the stride ``cell_size`` and the training ``image_size``.

    Returns:
        ``(boxes, scores)``: ``Tensor[N, Sh*Sw*B, 4]`` xyxy pixels of the
        network input, ``(Sh, Sw) * config.cell_size`` (:func:`input_hw`), not
        clipped; centre ``((j + x) * stride, (i + y) * stride)``, size
        ``(sqrt_w**2, sqrt_h**2) * config.image_size``. ``Tensor[N, Sh*Sw*B]``
        = conf; predictor b of cell (i, j) is at index ``(i*Sw + j)*B + b``.
        Unbatched input gives ``[Sh*Sw*B, 4]`` and ``[Sh*Sw*B]``.
    """
    check_grid(pred, config, "pred", any_size=True)
    B, size = config.boxes_per_cell, config.image_size
    cells = pred.unflatten(-1, (B, 5))  # (..., Sh, Sw, B, 5)
    # In units of the training input (a cell is 1 / num_cells), then pixels: (col + x) / S * size
    # = (col + x) * stride, and at the training grid exactly what decode always gave.
    boxes = _cells_to_boxes(cells[..., 0:2], cells[..., 2:4].square(), config.num_cells) * size  # (..., Sh, Sw, B, 4)
    lead, count = pred.shape[:-3], pred.shape[-3] * pred.shape[-2] * B
    return boxes.reshape(*lead, count, 4), cells[..., 4].reshape(*lead, count)


def gather_boxes(source) -> tuple[list[Tensor], list[tuple[int, int]]]:
    """Load every sample's boxes and image size from a dataset source.

    Args:
        source: has ``__len__`` and ``__getitem__(i) -> (image, boxes)``,
            image ``(H, W, 3)`` array, boxes ``(M, 4)`` xyxy pixels.

    Returns:
        ``(boxes, image_sizes)``: N float32 ``Tensor[M_n, 4]`` and N ``(height, width)``.
    """
    boxes, sizes = [], []
    for i in range(len(source)):  # one step per image (loading), not per box
        image, b = source[i]
        boxes.append(torch.as_tensor(np.asarray(b, dtype=np.float32)).reshape(-1, 4))
        sizes.append(tuple(int(s) for s in np.shape(image)[:2]))
    return boxes, sizes


def _flatten_boxes(boxes: Sequence[Tensor], image_size) -> tuple[Tensor, Tensor, Tensor, int]:
    """Validate and concatenate -> (boxes [T, 4] px, image (w, h) [T, 2], image index [T], N)."""
    sizes = [image_size] * len(boxes) if isinstance(image_size, (int, tuple)) else list(image_size)
    if len(sizes) != len(boxes):
        raise ValueError(f"got {len(boxes)} box tensors but {len(sizes)} image sizes")
    boxes = [torch.as_tensor(b) if isinstance(b, np.ndarray) else b for b in boxes]
    whs = []
    for n, (b, s) in enumerate(zip(boxes, sizes)):
        h, w = image_hw(s)
        check_boxes(b, "xyxy", f"boxes[{n}]", image_size=(h, w), allow_degenerate=True)
        whs.append(torch.tensor([[float(w), float(h)]]).expand(len(b), 2))
    flat = torch.cat([torch.zeros(0, 4), *[b.float().cpu() for b in boxes]])  # (T, 4)
    counts = torch.tensor([len(b) for b in boxes], dtype=torch.long)
    return flat, torch.cat([torch.zeros(0, 2), *whs]), torch.repeat_interleave(counts), len(boxes)


def _collisions(flat: Tensor, image_wh: Tensor, image_idx: Tensor, num_images: int, num_cells,
                size_bins: Mapping[str, tuple[float, float]] | None = None) -> dict:
    _check_num_cells(num_cells)
    rows, cols, _ = _locate(flat, image_wh, num_cells)
    cell_id = (image_idx * num_cells + rows) * num_cells + cols  # (T,)
    per_cell = torch.unique(cell_id, return_counts=True)[1]  # (occupied cells,) faces in each
    faces, lost = len(cell_id), len(cell_id) - len(per_cell)
    out = {"num_cells": num_cells, "images": num_images, "faces": faces, "lost": lost,
           "lost_fraction": lost / faces if faces else 0.0, "crowded_cells": int((per_cell > 1).sum())}
    if size_bins:
        area = box_area(flat)  # (T,) pixels, zero for degenerate boxes
        slots = num_images * num_cells * num_cells
        kept = _winners(cell_id, area, slots)[cell_id] == torch.arange(faces)  # (T,) the target of its cell
        size = area.clamp(min=0).sqrt()  # (T,) face size sqrt(w*h) px
        for name, (lo, hi) in size_bins.items():
            chosen = (size >= lo) & (size <= hi)
            count = int(chosen.sum())
            out[f"faces_{name}"] = count
            out[f"lost_fraction_{name}"] = float((chosen & ~kept).sum()) / count if count else float("nan")
    return out


def collision_stats(boxes: Sequence[Tensor], num_cells: int, image_size) -> dict:
    """Count the faces lost because another face's centre shares their cell.

    Works in normalised coordinates, so S need not divide the image size.

    Args:
        boxes: N ``Tensor[M_n, 4]`` (or float arrays) xyxy pixels, e.g. from
            :func:`gather_boxes`; zero-size boxes are counted too.
        num_cells: S.
        image_size: one ``(height, width)`` tuple or int for all images, or a
            list of N of them.

    Returns:
        dict with ``num_cells``, ``images``, ``faces``, ``lost`` (faces minus
        occupied cells), ``lost_fraction`` (lost / faces, 0 without faces) and
        ``crowded_cells`` (cells holding two or more centres).
    """
    return _collisions(*_flatten_boxes(boxes, image_size), num_cells)


def collision_rates(boxes: Sequence[Tensor], image_size,
                    num_cells: Sequence[int] = (4, 5, 7, 8, 10, 14, 16, 20, 32),
                    size_bins: Mapping[str, tuple[float, float]] | None = None) -> list[dict]:
    """:func:`collision_stats` for several grid sizes S (boxes validated once), one dict per S.

    With ``size_bins`` (name -> ``(lo, hi)`` face size ``sqrt(w*h)`` px, both
    ends included, e.g. :data:`scratchdet.evaluation.SIZE_BINS`), each dict also
    has ``faces_<bin>`` and ``lost_fraction_<bin>``: the share of that bin's
    faces that are not their cell's target (the largest face of a cell is kept),
    NaN for an empty bin.
    """
    flat = _flatten_boxes(boxes, image_size)
    return [_collisions(*flat, s, size_bins) for s in num_cells]
