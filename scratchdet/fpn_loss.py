"""The loss of the multi-scale head, per level, as a dict of named terms (like :func:`scratchdet.loss.yolo_loss`).

For every level ``l`` the raw grid ``Tensor[N, 5, H_l, W_l]`` is decoded
(:func:`scratchdet.fpn.decode_level`) and compared with the faces that
:func:`scratchdet.assign.assign_levels` gave to its cells:

* ``box``: ``1 - GIoU`` of the predicted box of every positive cell with its
  face (GIoU, not L2 on coordinates: scale-free, so a 10 px face and a
  100 px face weigh the same), times ``lambda_coord``;
* ``obj``: binary cross-entropy of the score of every positive cell against
  the IoU of its box with its face (``conf_target="iou"``: a quality score,
  so in a crowd the best-placed boxes outrank the rest at NMS) or 1, times
  ``lambda_obj``;
* ``noobj``: binary cross-entropy of every other cell's score against 0,
  times ``lambda_noobj``.

Each term is summed over the batch and divided by the number of positive
cells (at least 1), as in YOLOX. ``total`` is their sum; ``level_<l>`` the
total of each level (logged to see which scale learns). Non-finite
predictions give a non-finite ``total`` (the training loop stops on it).
Taught in ``notebooks/11_beyond_v1.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from scratchdet.assign import Assignment, assign_levels
from scratchdet.boxes import box_iou_paired, generalized_box_iou_paired
from scratchdet.config import DetectorConfig
from scratchdet.fpn import OUTPUTS, decode_level

__all__ = ["fpn_loss", "TERMS"]

TERMS = ("box", "obj", "noobj", "total")


def _check(raws: Sequence[Tensor], config: DetectorConfig) -> None:
    if len(raws) != len(config.strides):
        raise ValueError(f"expected {len(config.strides)} levels (strides {config.strides}), got {len(raws)}")
    for k, (raw, stride) in enumerate(zip(raws, config.strides)):
        if raw.dim() != 4 or raw.shape[1] != OUTPUTS:
            raise ValueError(f"level {k} must be Tensor[N, {OUTPUTS}, H, W], got {list(raw.shape)}")
    n, _, rows, cols = raws[-1].shape
    for k, (raw, stride) in enumerate(zip(raws, config.strides)):
        ratio = config.strides[-1] // stride
        if tuple(raw.shape) != (n, OUTPUTS, rows * ratio, cols * ratio):
            raise ValueError(f"level {k} (stride {stride}) must be {[n, OUTPUTS, rows * ratio, cols * ratio]}, "
                             f"got {list(raw.shape)}")


def fpn_loss(raws: Sequence[Tensor], boxes: Sequence[Tensor] | Assignment, config: DetectorConfig) -> dict[str, Tensor]:
    """The multi-scale loss of a batch.

    Args:
        raws: one ``Tensor[N, 5, H_l, W_l]`` per level, finest first (the head's raw output).
        boxes: one ``Tensor[M_i, 4]`` xyxy pixels per image, or their
            :class:`~scratchdet.assign.Assignment` (to reuse it).
        config: strides, assignment rules and loss weights.

    Returns:
        ``{"box", "obj", "noobj", "total", "level_0", ...}``, scalar tensors.
    """
    _check(raws, config)
    stride_max = config.strides[-1]
    input_hw = (raws[-1].shape[2] * stride_max, raws[-1].shape[3] * stride_max)
    assignment = boxes if isinstance(boxes, Assignment) else assign_levels(boxes, config, input_hw)
    zero = raws[0].sum() * 0.0  # keeps the graph (and NaN) for empty terms
    sums = {"box": zero, "obj": zero, "noobj": zero}
    per_level = []
    num_pos = sum(int((grid >= 0).sum()) for grid in assignment.cells)
    for raw, stride, owner in zip(raws, config.strides, assignment.cells):
        pred_boxes, _ = decode_level(raw, stride)  # (N, H_l * W_l, 4)
        logits = raw[:, 0].reshape(len(raw), -1)  # (N, H_l * W_l)
        owner = owner.reshape(len(raw), -1)  # (N, H_l * W_l)
        positive = owner >= 0
        faces = assignment.faces[owner[positive]]  # (P_l, 4)
        pred = pred_boxes[positive]  # (P_l, 4)
        box = (1.0 - generalized_box_iou_paired(pred, faces)).sum()
        if config.conf_target == "iou":
            target = box_iou_paired(pred.detach(), faces).clamp(0, 1)
        else:
            target = torch.ones(len(faces), dtype=logits.dtype, device=logits.device)
        obj = F.binary_cross_entropy_with_logits(logits[positive], target.to(logits.dtype), reduction="sum")
        noobj = F.binary_cross_entropy_with_logits(logits[~positive], torch.zeros_like(logits[~positive]),
                                                   reduction="sum")
        terms = {"box": config.lambda_coord * box, "obj": config.lambda_obj * obj, "noobj": config.lambda_noobj * noobj}
        per_level.append(sum(terms.values()))
        for name, value in terms.items():
            sums[name] = sums[name] + value
    scale = 1.0 / max(num_pos, 1)
    out = {name: value * scale for name, value in sums.items()}
    out["total"] = out["box"] + out["obj"] + out["noobj"]
    out.update({f"level_{k}": value * scale for k, value in enumerate(per_level)})
    return out
