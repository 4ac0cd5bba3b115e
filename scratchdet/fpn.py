"""The multi-scale head: a small feature pyramid, one anchor-free grid per level, and its decoding.

YOLO v1 predicts B boxes in each cell of one coarse grid. This head (``head:
fpn`` in the config) follows the steps the YOLO family took for small objects
close together:

* **a feature pyramid** (FPN, YOLO v3): the backbone's last ``num_levels``
  resolutions (strides 8, 16 and 32 for the demo's PoolResNet), the coarser
  ones upsampled and added to the finer ones, so fine grids see context;
* **one prediction per cell and level, anchor-free** (YOLOX, FCOS): per cell
  ``(obj, tx, ty, tw, th)``; the centre is ``(col + 0.5 + (2 sigmoid(tx) - 1))
  * stride`` (anywhere within one cell of the cell's centre, which is what
  the neighbour positives of :mod:`scratchdet.assign` need), the size
  ``exp(tw) * stride``, the score ``sigmoid(obj)``. Everything is relative to
  the level's stride, so the same weights work at any input size;
* the loss (:mod:`scratchdet.fpn_loss`): 1 - GIoU for boxes, binary cross
  entropy for the score, whose target is the IoU of the predicted box with its
  face (a quality score, as v1's confidence), trained on every positive cell.

Shapes: per level ``raw`` is ``Tensor[N, 5, H_l, W_l]`` (``H_l = H / stride_l``);
:func:`decode_levels` turns the list into ``Tensor[N, K, 5]`` candidates
``(x1, y1, x2, y2, score)`` in input pixels, ``K = sum_l H_l W_l``, which
:func:`scratchdet.nms.postprocess` filters and suppresses like v1's boxes.
Taught in ``notebooks/11_beyond_v1.ipynb``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchdet.config import DetectorConfig

__all__ = ["FPNHead", "decode_level", "decode_levels", "OUTPUTS", "CONF_PRIOR", "MAX_LOG_SIZE"]

OUTPUTS = 5  # (obj, tx, ty, tw, th) per cell
CONF_PRIOR = 0.01  # initial score of every cell (bias = logit of it), as v1's head
MAX_LOG_SIZE = 8.0  # tw, th are clamped here before exp: boxes up to e^8 strides


def _conv(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.LeakyReLU(0.1))


class FPNHead(nn.Module):
    """Backbone pyramid -> one raw grid per level.

    Args:
        in_channels: channels of the backbone's levels, finest first.
        channels: width of the pyramid and of the heads.
        config: gives the initial box size (``level_size`` strides, halved).

    ``forward(features)`` takes ``num_levels`` tensors ``Tensor[N, C_l, H_l, W_l]``
    (each level half the size of the previous) and returns as many
    ``Tensor[N, 5, H_l, W_l]``.
    """

    def __init__(self, in_channels: Sequence[int], channels: int, config: DetectorConfig) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(_conv(c, channels, 1) for c in in_channels)
        self.heads = nn.ModuleList(nn.Sequential(_conv(channels, channels, 3), nn.Conv2d(channels, OUTPUTS, 1))
                                   for _ in in_channels)
        size = math.log(max(config.level_size / 2, 1.0))  # a typical face of a level, in strides
        for head in self.heads:
            out = head[-1]
            nn.init.normal_(out.weight, std=0.01)
            with torch.no_grad():
                out.bias.copy_(torch.tensor([math.log(CONF_PRIOR / (1 - CONF_PRIOR)), 0.0, 0.0, size, size]))

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        maps = [lateral(f) for lateral, f in zip(self.lateral, features)]  # (N, C, H_l, W_l) each
        for k in range(len(maps) - 2, -1, -1):  # top-down: coarse context into finer levels
            maps[k] = maps[k] + F.interpolate(maps[k + 1], scale_factor=2.0, mode="nearest")
        return [head(m) for head, m in zip(self.heads, maps)]  # the head's 3x3 conv also smooths the sum


def decode_level(raw: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """One level's raw grid -> boxes and scores.

    Args:
        raw: ``Tensor[N, 5, H_l, W_l]``, channels ``(obj, tx, ty, tw, th)``.
        stride: the level's stride in input pixels.

    Returns:
        ``(boxes Tensor[N, H_l * W_l, 4] xyxy input pixels, scores Tensor[N, H_l * W_l])``,
        cells in row-major order.
    """
    n, _, rows, cols = raw.shape
    raw = raw.permute(0, 2, 3, 1)  # (N, H_l, W_l, 5)
    y = torch.arange(rows, device=raw.device, dtype=raw.dtype).view(1, rows, 1)
    x = torch.arange(cols, device=raw.device, dtype=raw.dtype).view(1, 1, cols)
    cx = (x + 0.5 + 2 * raw[..., 1].sigmoid() - 1) * stride  # (N, H_l, W_l)
    cy = (y + 0.5 + 2 * raw[..., 2].sigmoid() - 1) * stride
    half_w = raw[..., 3].clamp(max=MAX_LOG_SIZE).exp() * (stride / 2)
    half_h = raw[..., 4].clamp(max=MAX_LOG_SIZE).exp() * (stride / 2)
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)  # (N, H_l, W_l, 4)
    return boxes.reshape(n, -1, 4), raw[..., 0].sigmoid().reshape(n, -1)


def decode_levels(raws: Sequence[Tensor], config: DetectorConfig) -> Tensor:
    """All levels -> candidates ``Tensor[N, K, 5]`` ``(x1, y1, x2, y2, score)`` in input pixels.

    Args:
        raws: one ``Tensor[N, 5, H_l, W_l]`` per level, finest first (strides ``config.strides``).
        config: the model's config.

    Returns:
        ``Tensor[N, K, 5]``, ``K = sum_l H_l W_l``, levels finest first, cells row-major.
    """
    if len(raws) != len(config.strides):
        raise ValueError(f"expected {len(config.strides)} levels (strides {config.strides}), got {len(raws)}")
    parts = []
    for raw, stride in zip(raws, config.strides):
        boxes, scores = decode_level(raw, stride)
        parts.append(torch.cat([boxes, scores[..., None]], dim=-1))  # (N, H_l * W_l, 5)
    return torch.cat(parts, dim=1)
