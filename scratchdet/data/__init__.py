"""Data: dataset sources, box-aware augmentation, and batches.

* ``synthfaces`` -- SynthFaces, the generated default dataset (no download).
* ``wider``      -- the WIDER FACE reader, source and download helper.
* ``transforms`` -- Albumentations pipelines that move boxes with the image.
* ``datamodule`` -- ``DetectionDataset``, ``collate_detections``, ``FaceDataModule``.
* ``formats``    -- what the own-data readers share: ``FormatError``, ``FormatReport``, ``LabelledImages``.
* ``coco``, ``yolo_txt``, ``voc`` -- your own data: ``CocoFaces``, ``YoloTxtFaces``, ``VocFaces``, ``ImglabFaces``.
* ``labelled``   -- ``open_labelled``: one of those by name, with the data module's conventions.
* ``photos``     -- ``read_image`` (refuses truncated files) and the sample photos that ship with matplotlib.
* ``cache``      -- ``default_data_root``: where the SynthFaces cache lives.

A source yields ``(image uint8 (H, W, 3) RGB, boxes float32 (M, 4) xyxy
pixels)``; the torch dataset yields ``(Tensor[3, H, W] in [0, 1], Tensor[M, 4])``.
Names are imported lazily, so ``from scratchdet.data import SynthFaces`` does
not load Lightning or Albumentations.
Taught in ``notebooks/02_data.ipynb``.
"""

from __future__ import annotations

from scratchdet._lazy import lazy_exports

_EXPORTS = {
    "synthfaces": ("SPLIT_SIZES", "SceneMeta", "SynthFaces", "dataset_statistics", "generate_image",
                   "generate_sample"),
    "wider": ("ParseReport", "WiderFace", "WiderFormatError", "WiderRecord", "download_wider",
              "find_wider_root", "parse_wider_annotations", "parse_wider_filelist"),
    "transforms": ("DetectionTransform", "eval_transforms", "letterbox_scale", "train_transforms",
                   "unletterbox_boxes"),
    "formats": ("FormatError", "FormatReport", "LabelledImage", "LabelledImages"),
    "coco": ("CocoFaces",),
    "yolo_txt": ("YoloTxtFaces", "yolo_folders"),
    "voc": ("ImglabFaces", "VocFaces"),
    "labelled": ("LABELLED_FORMATS", "open_labelled"),
    "datamodule": ("DATASETS", "DetectionDataset", "FaceDataModule", "collate_detections"),
    "photos": ("check_complete", "read_image", "sample_photos"),
    "cache": ("default_data_root",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
