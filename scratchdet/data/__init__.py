"""Data: dataset sources, box-aware augmentation, and batches.

* ``synthfaces`` -- SynthFaces, the generated default dataset (no download).
* ``wider``      -- the WIDER FACE reader, source and download helper.
* ``transforms`` -- Albumentations pipelines that move boxes with the image.
* ``datamodule`` -- ``DetectionDataset``, ``collate_detections``, ``FaceDataModule``.

A source yields ``(image uint8 (H, W, 3) RGB, boxes float32 (M, 4) xyxy
pixels)``; the torch dataset yields ``(Tensor[3, H, W] in [0, 1], Tensor[M, 4])``.
Taught in ``notebooks/02_data.ipynb``.
"""

from scratchdet.data.datamodule import DATASETS, DetectionDataset, FaceDataModule, collate_detections
from scratchdet.data.synthfaces import SynthFaces, dataset_statistics
from scratchdet.data.transforms import (
    DetectionTransform,
    eval_transforms,
    letterbox_scale,
    train_transforms,
    unletterbox_boxes,
)
from scratchdet.data.wider import (
    ParseReport,
    WiderFace,
    WiderFormatError,
    WiderRecord,
    download_wider,
    find_wider_root,
    parse_wider_annotations,
    parse_wider_filelist,
)

__all__ = [
    "DATASETS",
    "DetectionDataset",
    "DetectionTransform",
    "FaceDataModule",
    "ParseReport",
    "SynthFaces",
    "WiderFace",
    "WiderFormatError",
    "WiderRecord",
    "collate_detections",
    "dataset_statistics",
    "download_wider",
    "eval_transforms",
    "find_wider_root",
    "letterbox_scale",
    "parse_wider_annotations",
    "parse_wider_filelist",
    "train_transforms",
    "unletterbox_boxes",
]
