"""What the "your own data" readers share: the error, the report and the source base.

The readers (:mod:`~scratchdet.data.coco`, :mod:`~scratchdet.data.yolo_txt`,
:mod:`~scratchdet.data.voc`) each parse one annotation format into
:class:`LabelledImage` records; :class:`LabelledImages` turns those into a
source, ``source[i] -> (image uint8 (H, W, 3) RGB, boxes float32 (M, 4) xyxy
pixels)``, like ``SynthFaces`` and ``WiderFace``. What happens to each kind of
problem, always counted in ``source.report`` (a :class:`FormatReport`):

* a malformed entry (a bbox that is not 4 numbers, a negative size, an unknown
  image id, a bad line or tag): ``on_error="raise"`` raises :class:`FormatError`
  naming the file and the entry; ``"skip"`` skips the entry's whole image (an
  image missing one of its faces would teach the model that face is
  background): the entry is counted in ``skipped_records``, and where the
  image of a skipped box is known, that image in ``dropped["image_of_skipped_entry"]``;
* a missing or truncated image file: ``"raise"`` raises ``FileNotFoundError`` /
  ``OSError`` naming the file and the entry when the source is built;
  ``"skip"`` drops the image (``dropped["missing_image"]``, ``["damaged_image"]``);
* boxes of another category or class (``"other_class"``), crowd and ignore
  flags (``"crowd"``, ``"ignore"``, VOC ``"difficult"``), zero width or height
  (``"degenerate"``): dropped; boxes crossing the image border: clipped
  (``clipped``), and dropped if nothing is left inside (``"outside"``);
* an image without boxes: kept, with ``(0, 4)`` boxes (a background image).

Taught in ``notebooks/02_data.ipynb``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from scratchdet.boxes import clip_boxes
from scratchdet.data.photos import check_file_complete, read_image
from scratchdet.data.wider import MAX_MESSAGES, ParseReport, RecordSequence

__all__ = ["FormatError", "FormatReport", "LabelledImage", "LabelledImages", "choose_classes", "as_path"]


class FormatError(ValueError):
    """A malformed entry of an annotation file; the message names the file and the entry."""


@dataclass
class FormatReport(ParseReport):
    """A :class:`~scratchdet.data.wider.ParseReport` (records and faces kept,
    malformed records skipped, ``dropped`` by reason) plus ``clipped``: boxes
    that crossed the image border and were clipped to it (and kept)."""

    clipped: int = 0

    def skip(self, error: Exception, on_error: str) -> None:
        """Re-raise ``error`` (``on_error="raise"``), or count it as a skipped record."""
        if on_error == "raise":
            raise error
        self.skipped_records += 1
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(str(error))

    def __str__(self) -> str:
        return super().__str__() + (f", {self.clipped} boxes clipped" if self.clipped else "")


@dataclass
class LabelledImage:
    """One image of an annotation file, as parsed.

    Attributes:
        path: the image file.
        boxes: ``float32 (M, 4)`` xyxy, in pixels, or image-normalised (in
            ``[0, 1]``) if ``normalised``.
        where: the entry, for messages: ``"annotations.json: images[3] (id 7)"``.
        image_hw: ``(height, width)`` in pixels if the annotation says it, else ``None``.
        normalised: whether ``boxes`` are image-normalised (YOLO txt).
    """

    path: Path
    boxes: np.ndarray
    where: str
    image_hw: tuple[int, int] | None = None
    normalised: bool = False


def choose_classes(found: Sequence, wanted, file: str, kind: str = "category") -> set:
    """The classes to keep: ``wanted`` (one or several), or the only one in ``found``.

    Raises:
        FormatError: ``wanted`` is ``None`` and ``found`` has several classes,
            or ``wanted`` names a class that is not in ``found`` (both list them).
    """
    found = sorted(set(found), key=str)
    if wanted is None:
        if len(found) > 1:
            raise FormatError(f"{file}: {len(found)} {kind}s {found}; choose the face {kind} "
                              f"(e.g. {kind}={found[0]!r})")
        return set(found)
    wanted = {wanted} if isinstance(wanted, (str, int)) else set(wanted)
    unknown = wanted - set(found)
    if unknown and found:
        raise FormatError(f"{file}: no {kind} {sorted(unknown, key=str)}; the file has {found}")
    return wanted


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _check_whole(path: Path, where: str) -> None:
    """Raise ``OSError`` naming ``where`` if a JPEG or PNG has lost its end (reads its first and last bytes)."""
    try:
        check_file_complete(path)
    except OSError as error:
        raise OSError(f"{where}: {error}") from None


def _check_image(record: LabelledImage) -> tuple[int, int]:
    """The image's ``(height, width)``; raises naming the entry if it is missing or truncated."""
    if not record.path.is_file():
        raise FileNotFoundError(f"{record.where}: image not found: {record.path}")
    if record.image_hw is None or record.normalised:
        try:
            return read_image(record.path).shape[:2]  # no size in the annotation: decode it once
        except OSError as error:
            raise OSError(f"{record.where}: {error}") from None
    _check_whole(record.path, record.where)
    return record.image_hw


class LabelledImages(RecordSequence):
    """A source over parsed :class:`LabelledImage` records (the readers' base).

    Args:
        records: the parsed images; boxes of other classes, crowd and ignore
            flags already dropped (and counted in ``report``).
        report: the parse's :class:`FormatReport`; this adds image and box counts.
        on_error: ``"raise"`` or ``"skip"`` (see the module docstring).

    Attributes:
        records: the kept records (``records[i].boxes`` as parsed).
        boxes: per kept record, ``float32 (M, 4)`` xyxy pixels, clipped to the image.
        report: the :class:`FormatReport`.

    ``source[i]`` is ``(image uint8 (H, W, 3) RGB, boxes float32 (M, 4) xyxy
    pixels)``, boxes clipped to the image (when the source is built).
    """

    def __init__(self, records: Sequence[LabelledImage], report: FormatReport, on_error: str = "raise") -> None:
        _check_on_error(on_error)
        self.records, self.boxes, self.report = [], [], report
        for record in records:
            try:
                image_hw = _check_image(record)
            except OSError as error:  # FileNotFoundError included
                if on_error == "raise":
                    raise
                missing = isinstance(error, FileNotFoundError)
                report.dropped["missing_image" if missing else "damaged_image"] += 1
                continue
            self.records.append(record)
            self.boxes.append(self._pixel_boxes(record, image_hw))
        report.records, report.faces = len(self.records), sum(len(b) for b in self.boxes)

    def _pixel_boxes(self, record: LabelledImage, image_hw: tuple[int, int]) -> np.ndarray:
        """``float32 (M, 4)`` xyxy pixels inside the image; counts what it drops and clips."""
        boxes = torch.from_numpy(np.asarray(record.boxes, dtype=np.float32).reshape(-1, 4))  # (M, 4)
        if record.normalised:
            h, w = image_hw
            boxes = boxes * torch.tensor([w, h, w, h], dtype=torch.float32)  # (M, 4) pixels
        degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        self.report.dropped["degenerate"] += int(degenerate.sum())
        boxes = boxes[~degenerate]
        clipped = clip_boxes(boxes, image_hw)
        inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        self.report.dropped["outside"] += int((~inside).sum())
        self.report.clipped += int(((clipped != boxes).any(dim=1) & inside).sum())
        return clipped[inside].numpy()

    def image_path(self, i: int) -> Path:
        """The file of image ``i``."""
        return self.records[self._index(i)].path

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        i = self._index(i)
        return read_image(self.records[i].path), self.boxes[i].copy()


def as_path(path: str | os.PathLike, what: str, folder: bool = False) -> Path:
    """``path`` as a ``Path``; raises ``FileNotFoundError`` naming ``what`` if it is not there."""
    path = Path(path)
    if not (path.is_dir() if folder else path.is_file()):
        raise FileNotFoundError(f"{what} not found: {path}")
    return path
