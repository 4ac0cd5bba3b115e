"""Target assignment for the multi-scale head: which level and which cells answer for each face.

YOLO v1 gives a face to the one cell that holds its centre, on one grid; when
two faces share that cell, one of them is never a target (notebook 03). The
YOLO lineage answered with three steps, each a rule here:

1. **Several scales** (YOLO v3, FPN): grids at strides ``config.strides``
   (8, 16 and 32 px for a 256 px input with S = 8 and three levels). A face of
   size ``s = sqrt(w h)`` goes to the finest level whose ``stride *
   level_size`` exceeds ``s``, so small faces get small cells.
2. **Several positives** (YOLO v5's neighbour cells, YOLOX's centre
   sampling): on its level, every cell whose centre lies within
   ``center_radius`` cells of the face's centre (in x and in y) answers for
   the face, not only the cell that holds the centre (which always does).
3. **Conflicts**: a cell claimed by several faces of one image goes to the
   face whose centre is nearest to the cell's centre (then the smaller face,
   then the earlier one), so in a crowd each face keeps the cells around its
   own centre.

:func:`assign_levels` does this for a whole batch without a Python loop over
faces; ``tests/test_assign.py`` checks it against a loop. Taught in
``notebooks/11_beyond_v1.ipynb``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from scratchdet.boxes import check_boxes
from scratchdet.config import DetectorConfig

__all__ = ["Assignment", "face_levels", "assign_levels", "unassigned_share"]


class Assignment(NamedTuple):
    """What :func:`assign_levels` returns.

    Attributes:
        faces: ``Tensor[F, 4]`` xyxy pixels, every face of the batch in order.
        image_index: ``Tensor[F]`` long, the image of each face.
        level: ``Tensor[F]`` long, the level each face goes to (0 = finest).
        cells: one ``LongTensor[N, H_l, W_l]`` per level: the face (index into
            ``faces``) each cell answers for, ``-1`` for background.
    """

    faces: Tensor
    image_index: Tensor
    level: Tensor
    cells: list[Tensor]


def face_levels(boxes: Tensor, config: DetectorConfig) -> Tensor:
    """The level of each face: the finest whose ``stride * level_size`` exceeds ``sqrt(w h)``.

    Args:
        boxes: ``Tensor[F, 4]`` xyxy pixels.
        config: gives ``strides`` and ``level_size``.

    Returns:
        ``LongTensor[F]`` in ``[0, len(config.strides))``.
    """
    size = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()  # (F,)
    limits = torch.tensor(config.strides[:-1], dtype=size.dtype, device=size.device) * config.level_size
    return torch.bucketize(size, limits, right=True)  # (F,) number of limits <= size


def _flatten(boxes: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    if len(boxes) == 0:
        raise ValueError("boxes must hold one Tensor[M, 4] per image, got an empty batch")
    for i, b in enumerate(boxes):
        check_boxes(b, name=f"boxes[{i}]", allow_degenerate=True)
    faces = torch.cat([b.reshape(-1, 4).float() for b in boxes])  # (F, 4)
    image = torch.repeat_interleave(torch.arange(len(boxes)), torch.tensor([len(b) for b in boxes]))  # (F,)
    return faces, image.to(faces.device)


def assign_levels(boxes: Sequence[Tensor], config: DetectorConfig, input_hw: tuple[int, int] | None = None
                  ) -> Assignment:
    """Assign every face of a batch to a pyramid level and to the cells that answer for it.

    Args:
        boxes: one ``Tensor[M_i, 4]`` (xyxy pixels of the network input) per image.
        config: strides, ``center_radius``, ``level_size``.
        input_hw: ``(H, W)`` of the network input (default: the training size).

    Returns:
        An :class:`Assignment`; the cells of level ``l`` form an
        ``(H / stride_l) x (W / stride_l)`` grid.
    """
    height, width = (config.image_size, config.image_size) if input_hw is None else input_hw
    faces, image = _flatten(boxes)
    level = face_levels(faces, config)  # (F,)
    device, n = faces.device, len(boxes)
    reach = int(config.center_radius)  # neighbours to look at on each side of the centre cell
    offsets = torch.arange(-reach, reach + 1, device=device)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    dy, dx = dy.reshape(-1), dx.reshape(-1)  # (C,) candidate cell offsets
    cells = []
    for k, stride in enumerate(config.strides):
        rows, cols = height // stride, width // stride
        grid = torch.full((n * rows * cols,), -1, dtype=torch.long, device=device)
        face_id = (level == k).nonzero(as_tuple=True)[0]  # (F_k,)
        if len(face_id):
            box = faces[face_id]
            cx, cy = (box[:, 0] + box[:, 2]) / (2 * stride), (box[:, 1] + box[:, 3]) / (2 * stride)  # in cells
            row = cy.floor().long().clamp(0, rows - 1)[:, None] + dy  # (F_k, C)
            col = cx.floor().long().clamp(0, cols - 1)[:, None] + dx  # (F_k, C)
            # distance from the face centre to each candidate cell's centre, in cells
            dist_x, dist_y = (col + 0.5 - cx[:, None]).abs(), (row + 0.5 - cy[:, None]).abs()
            centre = (dy == 0) & (dx == 0)  # the cell that holds the centre always answers
            ok = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
            ok &= centre | ((dist_x < config.center_radius) & (dist_y < config.center_radius))
            area = ((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))[:, None].expand_as(row)
            key = (image[face_id][:, None] * rows + row) * cols + col  # (F_k, C) cell of the batch
            cost = dist_x.square() + dist_y.square()
            key, cost, area = key[ok], cost[ok], area[ok]
            owner = face_id[:, None].expand_as(row)[ok]
            # Winner per cell: nearest centre, then smaller face, then earlier face (stable sorts, last key first).
            order = torch.sort(owner, stable=True).indices
            order = order[torch.sort(area[order], stable=True).indices]
            order = order[torch.sort(cost[order], stable=True).indices]
            order = order[torch.sort(key[order], stable=True).indices]
            key, owner = key[order], owner[order]
            first = torch.ones_like(key, dtype=torch.bool)
            first[1:] = key[1:] != key[:-1]
            grid[key[first]] = owner[first]
        cells.append(grid.view(n, rows, cols))
    return Assignment(faces, image, level, cells)


def unassigned_share(assignment: Assignment) -> dict[str, float]:
    """The share of faces that no cell answers for (never a training target), per level and overall.

    Returns:
        ``{"all": share, "level_0": share, ...}`` in [0, 1]; a level without
        faces has share 0.
    """
    num_faces = len(assignment.faces)
    assigned = torch.zeros(num_faces, dtype=torch.bool, device=assignment.faces.device)
    for grid in assignment.cells:
        ids = grid[grid >= 0]
        assigned[ids] = True
    out = {"all": float((~assigned).float().mean()) if num_faces else 0.0}
    for k in range(len(assignment.cells)):
        on_level = assignment.level == k
        out[f"level_{k}"] = float((~assigned[on_level]).float().mean()) if on_level.any() else 0.0
    return out
