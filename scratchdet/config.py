"""One frozen dataclass for the detector's geometry and loss weights.

Shared by the model (output layout), the encoder and decoder (grid geometry)
and the loss (weights), like nanoGPT's ``GPTConfig``. Change a copy with
:func:`dataclasses.replace`; the instance itself is immutable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

CONF_TARGETS = ("iou", "one")
PAD_VALUE = 114  # letterbox grey (uint8), shared by the data transforms and YoloDetector.predict

# Post-processing defaults: the one place they are set. Everything that turns
# grids into detections (predict, detect, evaluate, validation, export, the
# benchmarks) takes its defaults from here.
SCORE_THRESHOLD = 0.25  # detections shown to a user (predict, detect, export)
EVAL_SCORE_THRESHOLD = 0.01  # detections scored by AP (needs the whole PR curve)
NMS_IOU_THRESHOLD = 0.45  # greedy NMS drops boxes with IoU > this with a better one
MAX_DETECTIONS = 100  # per image, after NMS

__all__ = ["DetectorConfig", "CONF_TARGETS", "PAD_VALUE", "SCORE_THRESHOLD", "EVAL_SCORE_THRESHOLD",
           "NMS_IOU_THRESHOLD", "MAX_DETECTIONS"]


@dataclass(frozen=True)
class DetectorConfig:
    """Geometry and loss weights of a YOLO v1 detector.

    Attributes:
        image_size: side of the square network input, in pixels (H = W).
        num_cells: grid cells per side, S. ``image_size`` must be a multiple
            of it, so that every cell covers ``cell_size`` whole pixels.
        boxes_per_cell: predictors per cell, B.
        lambda_coord: weight of the x, y and sqrt(w), sqrt(h) terms (paper: 5).
        lambda_noobj: weight of the confidence term of predictors that are not
            responsible for a face (paper: 0.5).
        lambda_obj: weight of the confidence term of responsible predictors.
        conf_target: ``"iou"`` (paper: the confidence target is the IoU of the
            predicted box with its face) or ``"one"`` (target 1).
    """

    image_size: int = 256
    num_cells: int = 8
    boxes_per_cell: int = 2
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5
    lambda_obj: float = 1.0
    conf_target: str = "iou"

    def __post_init__(self) -> None:
        for name in ("image_size", "num_cells", "boxes_per_cell"):
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
        if self.conf_target not in CONF_TARGETS:
            raise ValueError(f"conf_target must be one of {CONF_TARGETS}, got {self.conf_target!r}")

    @property
    def cell_size(self) -> int:
        """Side of one grid cell in input pixels (``image_size // num_cells``)."""
        return self.image_size // self.num_cells

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
