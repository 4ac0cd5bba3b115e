"""One entry point for the "your own data" formats: :func:`open_labelled`.

``FaceDataModule`` and ``scratchdet evaluate`` both open a split of a COCO,
YOLO txt, Pascal VOC or imglab dataset here, with the same conventions (see
:func:`open_labelled`). The readers: :mod:`~scratchdet.data.coco`,
:mod:`~scratchdet.data.yolo_txt`, :mod:`~scratchdet.data.voc`.
"""

from __future__ import annotations

import os
from pathlib import Path

from scratchdet.data.coco import CocoFaces
from scratchdet.data.formats import LabelledImages
from scratchdet.data.voc import ImglabFaces, VocFaces
from scratchdet.data.yolo_txt import YoloTxtFaces

__all__ = ["LABELLED_FORMATS", "open_labelled"]

LABELLED_FORMATS = ("coco", "yolo", "voc", "imglab")
_DEFAULT_FILES = {"coco": "annotations.json", "imglab": "training.xml"}


def _yolo_split(root: Path, split: str) -> str | None:
    """The Ultralytics split folder for ``split`` (``"test"`` falls back to ``"val"``), or ``None``."""
    for name in (split, "val") if split == "test" else (split,):
        if (root / "images" / name).is_dir():
            return name
    return None


def open_labelled(dataset: str, annotations: str | os.PathLike | None = None,
                  images: str | os.PathLike | None = None, split: str = "train",
                  category: str | int | None = None, on_error: str = "raise") -> LabelledImages:
    """A split of your own labelled images as a source: ``source[i] -> (image, boxes)``.

    Args:
        dataset: ``"coco"``, ``"yolo"``, ``"voc"`` or ``"imglab"``.
        annotations: the split's annotations: a COCO JSON file, a folder of VOC
            ``.xml`` files, an imglab XML file; unused for YOLO. ``None``:
            ``<images>/annotations.json`` (COCO), ``<images>`` (VOC),
            ``<images>/training.xml`` (imglab).
        images: the folder image names are relative to (YOLO: the dataset
            folder); ``None`` with ``annotations``: the reader's default (the
            annotation file's folder, or its ``images/`` or ``JPEGImages/``).
        split: for YOLO, the Ultralytics split folder ``images/<split>`` if
            there is one (``"test"`` falls back to ``"val"``), else the whole folder.
        category: the face category (COCO: name or id; YOLO: class id; VOC:
            class name); ``None``: the only one (several are an error listing them).
        on_error: ``"raise"`` or ``"skip"`` (see :mod:`scratchdet.data.formats`).

    Returns:
        The source; boxes are ``float32 (M, 4)`` xyxy pixels.
    """
    if dataset not in LABELLED_FORMATS:
        raise ValueError(f"dataset must be one of {LABELLED_FORMATS}, got {dataset!r}")
    if dataset == "yolo":
        if images is None:
            raise ValueError("dataset 'yolo' needs the dataset folder (images / root)")
        class_ids = None if category is None else int(category)
        return YoloTxtFaces(images, _yolo_split(Path(images), split), class_ids, on_error=on_error)
    image_root = images if annotations is not None else None
    if annotations is None:
        if images is None:
            raise ValueError(f"dataset {dataset!r} needs annotations (or a folder that holds them)")
        annotations = Path(images) / _DEFAULT_FILES.get(dataset, "")
    if dataset == "coco":
        return CocoFaces(annotations, image_root, category, on_error=on_error)
    if dataset == "voc":
        return VocFaces(annotations, image_root, category, on_error=on_error)
    return ImglabFaces(annotations, on_error=on_error)
