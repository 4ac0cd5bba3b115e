"""COCO JSON annotations as a face source: :class:`CocoFaces`.

A COCO file holds ``images`` (``{"id", "file_name", "width", "height"}``),
``annotations`` (``{"id", "image_id", "category_id", "bbox": [x, y, w, h],
"iscrowd"}``, ``bbox`` in pixels, top-left corner and size) and
``categories`` (``{"id", "name"}``). ``file_name`` is relative to the image
folder. What is dropped, clipped or skipped: :mod:`scratchdet.data.formats`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from numbers import Real
from pathlib import Path

import numpy as np
import torch

from scratchdet.boxes import box_convert
from scratchdet.data.formats import FormatError, FormatReport, LabelledImage, LabelledImages, as_path, \
    choose_classes

__all__ = ["CocoFaces"]


def _entry(file: str, key: str, k: int, item) -> str:
    ident = f" (id {item['id']})" if isinstance(item, dict) and "id" in item else ""
    return f"{file}: {key}[{k}]{ident}"


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and np.isfinite(value)


def _parse_box(item, where: str) -> list[float]:
    """``[x, y, w, h]`` pixels of one annotation; raises :class:`FormatError` naming it."""
    if not isinstance(item, dict):
        raise FormatError(f"{where}: an annotation must be an object, got {item!r}")
    for key in ("image_id", "bbox"):
        if key not in item:
            raise FormatError(f"{where}: no {key!r}")
    bbox = item["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise FormatError(f"{where}: bbox must be 4 numbers, got {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise FormatError(f"{where}: bbox has a negative width or height: {bbox!r}")
    return [float(v) for v in bbox]


def _parse_image(item, where: str) -> tuple[int, str, tuple[int, int] | None]:
    """``(id, file_name, (height, width) or None)`` of one ``images`` entry."""
    if not isinstance(item, dict) or "id" not in item or not isinstance(item.get("file_name"), str):
        raise FormatError(f"{where}: an image needs an 'id' and a 'file_name', got {item!r}")
    h, w = item.get("height"), item.get("width")
    size = (int(h), int(w)) if _is_number(h) and _is_number(w) and h > 0 and w > 0 else None
    return item["id"], item["file_name"], size


class CocoFaces(LabelledImages):
    """The faces of a COCO JSON file as a source: ``source[i] -> (image, boxes)``.

    Args:
        annotation_json: the COCO file.
        image_root: the folder ``file_name`` is relative to; ``None``: the
            JSON's folder, or its ``images/`` subfolder if there is one.
        category: the face category, by name or id (or a list of them);
            ``None``: the only category (several are an error listing them).
        on_error: ``"raise"`` or ``"skip"`` (see :mod:`scratchdet.data.formats`).

    Attributes:
        records: the kept :class:`~scratchdet.data.formats.LabelledImage` list, in file order.
        report: the :class:`~scratchdet.data.formats.FormatReport`.

    ``source[i]`` is ``(image uint8 (H, W, 3) RGB, boxes float32 (M, 4) xyxy
    pixels)``, converted from COCO's xywh by :func:`scratchdet.boxes.box_convert`.
    """

    def __init__(self, annotation_json: str | os.PathLike, image_root: str | os.PathLike | None = None,
                 category: str | int | list | None = None, on_error: str = "raise") -> None:
        path = as_path(annotation_json, "COCO annotation file")
        file = path.name
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise FormatError(f"{path}: not JSON: {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
                or not isinstance(data.get("annotations", []), list):
            raise FormatError(f"{path}: a COCO file needs 'images' and 'annotations' lists")
        if image_root is None:
            image_root = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
        self.image_root = Path(image_root)
        report = FormatReport(str(path))
        self.category_ids = self._category_ids(data, category, file)
        super().__init__(self._records(data, file, report, on_error), report, on_error)

    @staticmethod
    def _category_ids(data: dict, category, file: str) -> set:
        """The ids of the face categories."""
        categories = {c["id"]: c.get("name", str(c["id"])) for c in data.get("categories", []) if "id" in c}
        if not categories:  # no categories list: the ids the annotations use
            used = {a.get("category_id") for a in data["annotations"] if isinstance(a, dict)}
            return choose_classes(used, category, file)
        names = {name: ident for ident, name in categories.items()}
        if category is None:
            return {names[n] for n in choose_classes(categories.values(), None, file)}
        wanted = [category] if isinstance(category, (str, int)) else list(category)
        known = [f"{i}: {n}" for i, n in categories.items()]
        ids = set()
        for value in wanted:
            if isinstance(value, str) and value.isdigit() and value not in names:
                value = int(value)  # an id from the command line
            if value not in categories and value not in names:
                raise FormatError(f"{file}: no category {value!r}; the categories are {known}")
            ids.add(value if value in categories else names[value])
        return ids

    def _records(self, data: dict, file: str, report: FormatReport, on_error: str) -> list[LabelledImage]:
        images, bad_images = {}, set()
        for k, item in enumerate(data["images"]):
            try:
                ident, name, size = _parse_image(item, _entry(file, "images", k, item))
            except FormatError as error:
                report.skip(error, on_error)
                if isinstance(item, dict) and "id" in item:
                    bad_images.add(item["id"])  # its annotations go with it
                continue
            images[ident] = (name, size, _entry(file, "images", k, item))
        boxes = defaultdict(list)
        for k, item in enumerate(data.get("annotations", [])):
            where = _entry(file, "annotations", k, item)
            if isinstance(item, dict) and item.get("image_id") in bad_images and item.get("image_id") not in images:
                report.dropped["box_of_skipped_image"] += 1
                continue
            try:
                box = _parse_box(item, where)
                if item["image_id"] not in images:
                    raise FormatError(f"{where}: image_id {item['image_id']!r} is not in 'images'")
            except FormatError as error:
                report.skip(error, on_error)
                if isinstance(item, dict) and item.get("image_id") in images:
                    bad_images.add(item["image_id"])
                continue
            reason = self._drop_reason(item)
            if reason:
                report.dropped[reason] += 1
            else:
                boxes[item["image_id"]].append(box)
        report.dropped["image_of_skipped_entry"] += len(bad_images)
        return [LabelledImage(self.image_root / name, self._xyxy(boxes[ident]), where, size)
                for ident, (name, size, where) in images.items() if ident not in bad_images]

    def _drop_reason(self, item: dict) -> str | None:
        if item.get("category_id") not in self.category_ids:
            return "other_class"
        if item.get("iscrowd", 0):
            return "crowd"
        if item.get("ignore", 0):
            return "ignore"
        return None

    @staticmethod
    def _xyxy(boxes: list) -> np.ndarray:
        xywh = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)  # (M, 4) xywh pixels
        return box_convert(xywh, "xywh", "xyxy").numpy()
