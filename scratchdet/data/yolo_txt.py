"""YOLO txt labels as a face source: :class:`YoloTxtFaces`.

One ``.txt`` per image, one line per box: ``class cx cy w h``, the centre and
size image-normalised (in ``[0, 1]``); no file, or an empty one, is an image
without boxes. Two layouts:

* Ultralytics: ``<root>/images/<split>/x.jpg`` with ``<root>/labels/<split>/x.txt``
  (``split=None``: ``<root>/images/x.jpg`` with ``<root>/labels/x.txt``);
* a plain folder: ``<root>/x.jpg`` next to ``<root>/x.txt``.

What is dropped, clipped or skipped: :mod:`scratchdet.data.formats`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from scratchdet.boxes import box_convert
from scratchdet.data.formats import FormatError, FormatReport, LabelledImage, LabelledImages, as_path, \
    choose_classes
from scratchdet.data.photos import IMAGE_SUFFIXES

__all__ = ["YoloTxtFaces", "yolo_folders"]


def yolo_folders(root: str | os.PathLike, split: str | None = None) -> tuple[Path, Path]:
    """``(image folder, label folder)`` of a YOLO dataset (see the module docstring).

    Raises:
        FileNotFoundError: ``split`` is given and ``<root>/images/<split>`` is not a folder.
    """
    root = as_path(root, "YOLO dataset folder", folder=True)
    images = root / "images" if split is None else root / "images" / split
    if images.is_dir():
        return images, (root / "labels" if split is None else root / "labels" / split)
    if split is not None:
        raise FileNotFoundError(f"YOLO {split} images not found: {images} (expected the Ultralytics layout "
                                f"images/{split}/x.jpg + labels/{split}/x.txt)")
    return root, root


def _parse_line(line: str, where: str) -> tuple[int, list[float]]:
    """``(class, [cx, cy, w, h])`` of one label line; raises :class:`FormatError` naming it."""
    parts = line.split()
    if len(parts) != 5:
        raise FormatError(f"{where}: expected 5 fields 'class cx cy w h', got {len(parts)}: {line!r}")
    try:
        label, values = int(parts[0]), [float(p) for p in parts[1:]]
    except ValueError:
        raise FormatError(f"{where}: expected an integer class and 4 numbers, got {line!r}") from None
    if label < 0 or not all(math.isfinite(v) for v in values):
        raise FormatError(f"{where}: a class >= 0 and finite numbers, got {line!r}")
    if values[2] < 0 or values[3] < 0:
        raise FormatError(f"{where}: negative width or height in {line!r}")
    if values[2] > 1.5 or values[3] > 1.5 or not all(-0.5 <= v <= 1.5 for v in values[:2]):
        raise FormatError(f"{where}: coordinates must be image-normalised (0 to 1), got {line!r}")
    return label, values


class YoloTxtFaces(LabelledImages):
    """Images with YOLO txt labels as a source: ``source[i] -> (image, boxes)``.

    Args:
        root: the dataset folder (Ultralytics layout) or a plain folder of pairs.
        split: the Ultralytics split folder (``"train"``, ``"val"``, ...);
            ``None``: no split folder.
        class_ids: the face class id (or a list of them); ``None``: the only
            class the labels use (several are an error listing them).
        on_error: ``"raise"`` or ``"skip"`` (see :mod:`scratchdet.data.formats`).

    Attributes:
        records: the kept :class:`~scratchdet.data.formats.LabelledImage` list, sorted by path.
        report: the :class:`~scratchdet.data.formats.FormatReport` (``file``: the label folder).

    ``source[i]`` is ``(image uint8 (H, W, 3) RGB, boxes float32 (M, 4) xyxy
    pixels)``: the normalised cxcywh labels clipped to ``[0, 1]``, converted by
    :func:`scratchdet.boxes.box_convert` and scaled by the image size (each
    image is decoded once when the source is built, for its size).
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None, class_ids: int | list | None = None,
                 on_error: str = "raise") -> None:
        self.image_dir, self.label_dir = yolo_folders(root, split)
        images = sorted(p for p in self.image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        report = FormatReport(str(self.label_dir))
        parsed = []
        for image in images:
            label = self.label_dir / image.relative_to(self.image_dir).with_suffix(".txt")
            try:
                parsed.append((image, label, self._read_labels(label)))
            except FormatError as error:
                report.skip(error, on_error)
        self._check_orphans(images, report, on_error)
        self.class_ids = choose_classes([c for *_, rows in parsed for c, _ in rows], class_ids,
                                        str(self.label_dir), kind="class id")
        records = [self._record(image, label, rows, report) for image, label, rows in parsed]
        super().__init__(records, report, on_error)

    def _check_orphans(self, images: list[Path], report: FormatReport, on_error: str) -> None:
        """A label file without its image: raise ``FileNotFoundError``, or count a ``"missing_image"``."""
        stems = {p.relative_to(self.image_dir).with_suffix("") for p in images}
        for label in sorted(self.label_dir.rglob("*.txt")):
            if label.relative_to(self.label_dir).with_suffix("") not in stems and label.name != "classes.txt":
                if on_error == "raise":
                    raise FileNotFoundError(f"{label}: no image for it in {self.image_dir} "
                                            f"(looked for {', '.join(label.stem + s for s in IMAGE_SUFFIXES)})")
                report.dropped["missing_image"] += 1

    @staticmethod
    def _read_labels(label: Path) -> list[tuple[int, list[float]]]:
        if not label.is_file():
            return []
        lines = label.read_text().splitlines()
        return [_parse_line(line, f"{label}:{k + 1}") for k, line in enumerate(lines) if line.strip()]

    def _record(self, image: Path, label: Path, rows: list, report: FormatReport) -> LabelledImage:
        kept = [values for c, values in rows if c in self.class_ids]
        report.dropped["other_class"] += len(rows) - len(kept)
        cxcywh = torch.tensor(kept, dtype=torch.float32).reshape(-1, 4)  # (M, 4) normalised
        boxes = box_convert(cxcywh, "cxcywh", "xyxy")  # (M, 4) normalised
        return LabelledImage(image, boxes.numpy(), str(label), normalised=True)
