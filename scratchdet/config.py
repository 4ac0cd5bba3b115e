"""One frozen dataclass for the detector's geometry and loss weights.

Shared by the model (output layout), the encoder and decoder (grid geometry)
and the loss (weights), like nanoGPT's ``GPTConfig``. Change a copy with
:func:`dataclasses.replace`; the instance itself is immutable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import MappingProxyType

CONF_TARGETS = ("iou", "one")
HEADS = ("v1", "fpn")
PAD_VALUE = 114  # letterbox grey (uint8), shared by the data transforms and YoloDetector.predict

# Post-processing defaults: the one place they are set. Everything that turns
# grids into detections (predict, detect, evaluate, validation, export, the
# benchmarks) takes its defaults from here.
SCORE_THRESHOLD = 0.25  # detections shown to a user (predict, detect, export)
# detect --blur: recall first -- a missed face is a privacy failure, an extra blurred patch is cheap
BLUR_SCORE_THRESHOLD = 0.1
EVAL_SCORE_THRESHOLD = 0.01  # detections scored by AP (needs the whole PR curve)
NMS_IOU_THRESHOLD = 0.45  # greedy NMS drops boxes with IoU > this with a better one
MAX_DETECTIONS = 100  # per image, after NMS

# Pseudo-labelling defaults (scratchdet label): precision first, since a wrong label is learned
# as a face. yunet: yuface confidence in [0, 1], 0.6 as libfacedetection's opencv_dnn Python demo
# (--conf_thresh); haar: the cascade's last-stage weight, 0 keeps what the cascade itself calls a face.
TEACHER_CONF = MappingProxyType({"yunet": 0.6, "haar": 0.0})
# Smaller box side in pixels: on 60 SynthFaces test images, YuNet's boxes at conf 0.6 under 10 px
# matched a face (IoU >= 0.5) 73% of the time, those of 10-16 px 91%, larger ones 97-100%.
TEACHER_MIN_SIZE = 10

# The course's bundled model, which ``scratchdet detect`` uses without --checkpoint
# (the environment variable SCRATCHDET_MODEL names another file).
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "faces_mobilenet_v2_fpn.pt"

__all__ = ["DetectorConfig", "CONF_TARGETS", "HEADS", "PAD_VALUE", "SCORE_THRESHOLD", "EVAL_SCORE_THRESHOLD",
           "NMS_IOU_THRESHOLD", "MAX_DETECTIONS", "TEACHER_CONF", "TEACHER_MIN_SIZE", "BLUR_SCORE_THRESHOLD",
           "DEFAULT_MODEL"]


@dataclass(frozen=True)
class DetectorConfig:
    """Geometry and loss weights of a YOLO detector: the v1 grid, or the multi-scale ``fpn`` head.

    Attributes:
        image_size: side of the square training input, in pixels (H = W).
        num_cells: grid cells per side, S, at the coarsest stride. ``image_size``
            must be a multiple of it, so that every cell covers ``cell_size``
            whole pixels.
        boxes_per_cell: predictors per cell, B (``v1`` only; ``fpn`` has one per cell).
        lambda_coord: weight of the box terms (v1: x, y and sqrt(w), sqrt(h),
            paper: 5; fpn: 1 - GIoU).
        lambda_noobj: weight of the confidence term of predictors that are not
            responsible for a face (paper: 0.5).
        lambda_obj: weight of the confidence term of responsible predictors.
        conf_target: ``"iou"`` (paper: the confidence target is the IoU of the
            predicted box with its face) or ``"one"`` (target 1).
        head: ``"v1"`` (YOLO v1: one S x S grid, B boxes a cell, one face a
            cell) or ``"fpn"`` (``num_levels`` grids over a small feature
            pyramid, strides ``cell_size / 2**k``, several cells a face;
            :mod:`scratchdet.fpn`, notebook 11).
        num_levels: pyramid levels of the ``fpn`` head (1 = only the coarsest grid).
        center_radius: ``fpn``: cells whose centre lies within this many cells
            of a face's centre (in x and in y) are positives too; 0 keeps only
            the cell that holds the centre.
        level_size: ``fpn``: a face of size ``sqrt(w h)`` goes to the finest
            level whose stride times ``level_size`` exceeds it (the coarsest
            takes the rest).
    """

    image_size: int = 256
    num_cells: int = 8
    boxes_per_cell: int = 2
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5
    lambda_obj: float = 1.0
    conf_target: str = "iou"
    head: str = "v1"
    num_levels: int = 3
    center_radius: float = 1.0
    level_size: float = 3.0

    def __post_init__(self) -> None:
        for name in ("image_size", "num_cells", "boxes_per_cell", "num_levels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.image_size % self.num_cells:
            raise ValueError(
                f"image_size={self.image_size} is not divisible into num_cells="
                f"{self.num_cells} cells; choose an image_size that is a multiple of "
                f"{self.num_cells} (e.g. {self.num_cells * max(1, round(self.image_size / self.num_cells))})"
            )
        for name in ("lambda_coord", "lambda_noobj", "lambda_obj"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        for name, low in (("center_radius", 0.0), ("level_size", 1e-9)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                    or value < low:
                raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
        if self.head == "fpn" and self.cell_size % 2 ** (self.num_levels - 1):
            raise ValueError(f"num_levels={self.num_levels} needs cell_size={self.cell_size} "
                             f"(image_size / num_cells) divisible by {2 ** (self.num_levels - 1)}")
        if self.conf_target not in CONF_TARGETS:
            raise ValueError(f"conf_target must be one of {CONF_TARGETS}, got {self.conf_target!r}")

    @property
    def cell_size(self) -> int:
        """Side of one grid cell in input pixels (``image_size // num_cells``)."""
        return self.image_size // self.num_cells

    @property
    def strides(self) -> tuple[int, ...]:
        """Strides of the grids, finest first: ``(cell_size,)`` for v1, ``cell_size / 2**k`` for fpn."""
        levels = 1 if self.head == "v1" else self.num_levels
        return tuple(self.cell_size // 2 ** (levels - 1 - k) for k in range(levels))

    @property
    def channels(self) -> int:
        """Channels per cell in the network output: ``B * 5``."""
        return self.boxes_per_cell * 5

    def to_dict(self) -> dict:
        """Plain dict of the fields (for checkpoints, YAML and JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DetectorConfig":
        """Build from a dict; unknown keys give a clear error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DetectorConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)
