"""XML annotations as face sources: Pascal VOC (:class:`VocFaces`) and dlib's imglab (:class:`ImglabFaces`).

Pascal VOC: one ``.xml`` per image, ``<annotation><filename>x.jpg</filename>
<size><width>W</width><height>H</height></size><object><name>face</name>
<difficult>0</difficult><bndbox><xmin>..</xmin><ymin>..</ymin><xmax>..</xmax>
<ymax>..</ymax></bndbox></object>...``. The devkit counts pixels from 1 and
includes both ends, so the pixel box is ``(xmin - 1, ymin - 1, xmax, ymax)``
(a box covering only pixel 1 is ``(0, 0, 1, 1)``). The devkit layout
``<root>/Annotations/*.xml`` + ``<root>/JPEGImages/`` is found by itself.

dlib imglab: one file ``<dataset><images><image file='x.jpg'><box top='T'
left='L' width='W' height='H' [ignore='1']/>...``, paths relative to the XML
file; the pixel box is ``(L, T, L + W, T + H)`` (dlib's width counts both ends).

What is dropped, clipped or skipped: :mod:`scratchdet.data.formats`.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch

from scratchdet.boxes import box_convert
from scratchdet.data.formats import FormatError, FormatReport, LabelledImage, LabelledImages, as_path, \
    choose_classes

__all__ = ["VocFaces", "ImglabFaces"]


def _read_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as error:
        raise FormatError(f"{path}: not well-formed XML: {error}") from None


def _number(element: ET.Element | None, tag: str, where: str) -> float:
    """The number in ``element``'s child ``tag`` (or attribute ``tag``); raises naming ``where``."""
    text = None if element is None else element.get(tag, element.findtext(tag))
    try:
        return float(text)
    except (TypeError, ValueError):
        raise FormatError(f"{where}: {tag} must be a number, got {text!r}") from None


def _voc_box(obj: ET.Element, where: str) -> list[float]:
    """``[x1, y1, x2, y2]`` pixels of one VOC ``<object>`` (from the devkit's 1-based pixels)."""
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise FormatError(f"{where}: no <bndbox>")
    xmin, ymin, xmax, ymax = (_number(bndbox, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
    if xmax < xmin - 1 or ymax < ymin - 1:
        raise FormatError(f"{where}: xmax < xmin or ymax < ymin: {[xmin, ymin, xmax, ymax]}")
    return [xmin - 1, ymin - 1, xmax, ymax]


class VocFaces(LabelledImages):
    """Pascal VOC XML files as a source: ``source[i] -> (image, boxes)``.

    Args:
        root_or_xml_dir: a folder of ``.xml`` files, or a devkit folder with
            ``Annotations/`` (and ``JPEGImages/``).
        image_root: the folder ``<filename>`` is relative to; ``None``:
            ``JPEGImages/`` in the devkit layout, else the XML folder.
        class_names: the face ``<name>`` (or a list of them); ``None``: the
            only name the files use (several are an error listing them).
        on_error: ``"raise"`` or ``"skip"`` (see :mod:`scratchdet.data.formats`).

    ``<difficult>1</difficult>`` objects are dropped (``"difficult"``), as are
    other names (``"other_class"``). ``source[i]`` is ``(image uint8 (H, W, 3)
    RGB, boxes float32 (M, 4) xyxy pixels)``.
    """

    def __init__(self, root_or_xml_dir: str | os.PathLike, image_root: str | os.PathLike | None = None,
                 class_names: str | list | None = None, on_error: str = "raise") -> None:
        root = as_path(root_or_xml_dir, "VOC annotation folder", folder=True)
        self.xml_dir = root / "Annotations" if (root / "Annotations").is_dir() else root
        if image_root is None:
            image_root = root / "JPEGImages" if (root / "JPEGImages").is_dir() else self.xml_dir
        self.image_root = Path(image_root)
        report = FormatReport(str(self.xml_dir))
        parsed = []
        for xml in sorted(self.xml_dir.glob("*.xml")):
            try:
                parsed.append(self._parse(xml))
            except FormatError as error:
                report.skip(error, on_error)
        self.class_names = choose_classes([n for *_, objects in parsed for n, _, _ in objects], class_names,
                                          str(self.xml_dir), kind="class name")
        records = [self._record(*item, report) for item in parsed]
        super().__init__(records, report, on_error)

    def _parse(self, xml: Path) -> tuple[Path, tuple[int, int] | None, str, list]:
        """``(image, (height, width) or None, entry, [(name, difficult, box), ...])`` of one file."""
        annotation = _read_xml(xml)
        name = annotation.findtext("filename")
        if not name:
            raise FormatError(f"{xml}: no <filename>")
        size = annotation.find("size")
        hw = None
        if size is not None:
            h, w = _number(size, "height", f"{xml}: <size>"), _number(size, "width", f"{xml}: <size>")
            hw = (int(h), int(w)) if h > 0 and w > 0 else None
        objects = []
        for k, obj in enumerate(annotation.findall("object")):
            where = f"{xml}: object[{k}]"
            label = (obj.findtext("name") or "").strip()
            if not label:
                raise FormatError(f"{where}: no <name>")
            objects.append((label, (obj.findtext("difficult") or "0").strip() == "1", _voc_box(obj, where)))
        return self.image_root / name, hw, str(xml), objects

    def _record(self, image: Path, hw, where: str, objects: list, report: FormatReport) -> LabelledImage:
        kept = []
        for label, difficult, box in objects:
            reason = "other_class" if label not in self.class_names else "difficult" if difficult else None
            if reason:
                report.dropped[reason] += 1
            else:
                kept.append(box)
        return LabelledImage(image, np.asarray(kept, dtype=np.float32).reshape(-1, 4), where, hw)


class ImglabFaces(LabelledImages):
    """A dlib imglab XML file as a source: ``source[i] -> (image, boxes)``.

    Args:
        xml_file: the imglab file (``<dataset><images><image file=...>``);
            image paths are relative to its folder.
        on_error: ``"raise"`` or ``"skip"`` (see :mod:`scratchdet.data.formats`).

    ``ignore='1'`` boxes are dropped (``"ignore"``). imglab files have no image
    sizes, so each image is decoded once when the source is built. ``source[i]``
    is ``(image uint8 (H, W, 3) RGB, boxes float32 (M, 4) xyxy pixels)``.
    """

    def __init__(self, xml_file: str | os.PathLike, on_error: str = "raise") -> None:
        path = as_path(xml_file, "imglab XML file")
        dataset = _read_xml(path)
        images = dataset.find("images")
        if dataset.tag != "dataset" or images is None:
            raise FormatError(f"{path}: an imglab file is <dataset><images>...</images></dataset>, "
                              f"got <{dataset.tag}>")
        report = FormatReport(str(path))
        records = []
        for k, image in enumerate(images.findall("image")):
            where = f"{path.name}: images/image[{k}]" + (f" ({image.get('file')})" if image.get("file") else "")
            try:
                records.append(self._record(image, path.parent, where, report))
            except FormatError as error:
                report.skip(error, on_error)
        super().__init__(records, report, on_error)

    @staticmethod
    def _record(image: ET.Element, folder: Path, where: str, report: FormatReport) -> LabelledImage:
        if not image.get("file"):
            raise FormatError(f"{where}: no file attribute")
        boxes, ignored = [], 0
        for j, box in enumerate(image.findall("box")):
            values = [_number(box, tag, f"{where} box[{j}]") for tag in ("left", "top", "width", "height")]
            if values[2] < 0 or values[3] < 0:
                raise FormatError(f"{where} box[{j}]: negative width or height: {values}")
            if box.get("ignore", "0") == "1":
                ignored += 1
            else:
                boxes.append(values)
        report.dropped["ignore"] += ignored  # counted only once the whole image parsed
        xywh = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)  # (M, 4) xywh pixels
        return LabelledImage(folder / image.get("file"), box_convert(xywh, "xywh", "xyxy").numpy(), where)
