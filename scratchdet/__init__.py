"""scratchdet: face detection from scratch, the YOLO (v1) way.

Symbol legend, used in shape comments throughout the package:
    N  images in a batch            M  boxes (faces) in one image
    S  grid cells per side          B  boxes predicted per cell
    S_h, S_w  grid rows and columns at an input of H x W (H / stride, W / stride)
    H, W  image height and width in pixels
Boxes are ``Tensor[M, 4]`` in xyxy pixel coordinates unless a docstring says
otherwise; image sizes are ``(height, width)``. The network output is
``Tensor[N, S, S, B*5]`` at the training size (``Tensor[N, S_h, S_w, B*5]`` at
any other): for each predictor ``(x, y, sqrt_w, sqrt_h, conf)``, x and y
relative to the cell, w and h relative to the training input size.

The main names are importable from here (lazily, so ``import scratchdet`` is
cheap): ``from scratchdet import DetectorConfig, YoloDetector, box_iou, batched_nms``.
No name exported here is also a submodule's name, so ``scratchdet.X`` is one
thing: the function ``nms`` is ``from scratchdet.nms import nms`` (``scratchdet.nms``
is the module). The WIDER FACE protocol is :mod:`scratchdet.wider_eval`, the
study of the last chapter :mod:`scratchdet.study`.
"""

from __future__ import annotations

from scratchdet._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "boxes": ("box_area", "box_convert", "box_iou", "box_iou_paired", "check_boxes", "clip_boxes"),
    "config": ("DetectorConfig",),
    "grid": ("decode_grid", "encode_targets", "encode_targets_batch"),
    "loss": ("yolo_loss",),
    "backbones": ("get_backbone",),
    "model": ("YoloDetector",),
    "nms": ("batched_nms", "postprocess"),  # not "nms": scratchdet.nms is the module
    "evaluation": ("evaluate_by_size", "evaluate_detections", "evaluate_detector"),
    "training": ("YoloModule",),
    "pipeline": ("run_training",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
__all__ = ["__version__", *__all__]
