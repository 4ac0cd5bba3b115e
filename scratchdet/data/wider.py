"""WIDER FACE: annotation parser, dataset source and download helper.

The official release (http://shuoyang1213.me/WIDERFACE/) unpacks to::

    <root>/wider_face_split/wider_face_{train,val}_bbx_gt.txt
    <root>/wider_face_split/wider_face_test_filelist.txt
    <root>/WIDER_{train,val,test}/images/<event>/<file>.jpg

``torchvision.datasets.WIDERFace(root)`` expects the same folders under
``<root>/widerface/``; :func:`find_wider_root` accepts both. A ``*_bbx_gt.txt``
file repeats, for each image: its path (relative to ``images/``), the number
of faces, then one line per face ``x1 y1 w h blur expression illumination
invalid occlusion pose`` (pixels, integers). An image with no faces has a
count of 0 followed by one placeholder line of ten zeros, which we consume and
report as an empty record (torchvision returns one ``[0, 0, 0, 0]`` box).

What :class:`WiderFace` drops, always counted in its ``report``: faces flagged
``invalid`` (unless ``keep_invalid``), faces with zero width or height, faces
smaller than ``min_face_size`` (at construction); boxes are clipped to the
image when it is read, and those left with no area are dropped (at access).

Taught in ``notebooks/02_data.ipynb``.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from scratchdet.data.photos import check_file_complete, read_image
from scratchdet.boxes import box_convert, clip_boxes

__all__ = [
    "ATTRIBUTES",
    "WIDER_FILES",
    "WiderFormatError",
    "ParseReport",
    "WiderRecord",
    "parse_wider_annotations",
    "parse_wider_filelist",
    "find_wider_root",
    "WiderFace",
    "file_md5",
    "download_wider",
]

ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLIT_FILES = {
    "train": "wider_face_train_bbx_gt.txt",
    "val": "wider_face_val_bbx_gt.txt",
    "test": "wider_face_test_filelist.txt",
}
WIDER_HOME = "http://shuoyang1213.me/WIDERFACE/"
_GDRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="
# file name -> (url, md5), the files and checksums torchvision.datasets.WIDERFace lists.
WIDER_FILES = {
    "WIDER_train.zip": (_GDRIVE + "15hGDLhsx8bLgLcIRD5DhYt5iBxnjNF1M", "3fedf70df600953d25982bcd13d91ba2"),
    "WIDER_val.zip": (_GDRIVE + "1GUCogbp16PMGa39thoMMeWxp7Rp5oM8Q", "dfa7d7e790efa35df3788964cf0bbaea"),
    "WIDER_test.zip": (_GDRIVE + "1HIfDbVEWKmsYKJZm4lchTBDLW5N7dY5T", "e5d8f4248ed24c334bbd12f49c29dd40"),
    "wider_face_split.zip": (
        WIDER_HOME + "support/bbx_annotation/wider_face_split.zip",
        "0e3767bcf0e326556d407bf5bff5d27c",
    ),
}
MAX_MESSAGES = 5


class WiderFormatError(ValueError):
    """A malformed line in a WIDER FACE annotation file (names file and line)."""


@dataclass
class ParseReport:
    """What a parse (and a :class:`WiderFace` source) kept, skipped and dropped.

    Attributes:
        file: the annotation file.
        records: records kept.
        faces: faces in the kept records.
        skipped_records: records skipped because they were malformed
            (``on_error="skip"``).
        messages: the first few error messages of the skipped records.
        dropped: face or image counts dropped by a source, by reason
            (``"invalid"``, ``"degenerate"``, ``"small"``, ``"outside"``,
            ``"missing_image"``).
    """

    file: str
    records: int = 0
    faces: int = 0
    skipped_records: int = 0
    messages: list[str] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)

    def __str__(self) -> str:
        text = f"{self.file}: {self.records} records, {self.faces} faces"
        if self.skipped_records:
            text += f", {self.skipped_records} malformed records skipped"
        if self.dropped:
            text += ", dropped " + ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items()))
        return text


@dataclass
class WiderRecord:
    """One image of a WIDER FACE annotation file.

    Attributes:
        path: image path relative to ``WIDER_<split>/images`` (``<event>/<file>.jpg``).
        boxes: ``float32 (M, 4)`` xywh pixels, as in the file (M may be 0).
        attributes: one ``int64 (M,)`` array per name in :data:`ATTRIBUTES`.
    """

    path: str
    boxes: np.ndarray
    attributes: dict[str, np.ndarray]

    @property
    def event(self) -> str:
        """The event folder, e.g. ``"0--Parade"``."""
        return self.path.split("/")[0]

    def boxes_xyxy(self) -> np.ndarray:
        """``float32 (M, 4)`` xyxy pixel boxes (converted by :func:`scratchdet.boxes.box_convert`)."""
        return box_convert(torch.from_numpy(self.boxes), "xywh", "xyxy").numpy()


def _empty_record(path: str) -> WiderRecord:
    attrs = {name: np.zeros(0, dtype=np.int64) for name in ATTRIBUTES}
    return WiderRecord(path, np.zeros((0, 4), dtype=np.float32), attrs)


def _is_path(line: str) -> bool:
    return line.lower().endswith(IMAGE_SUFFIXES)


def _parse_face(line: str, where: str) -> list[float]:
    parts = line.split()
    if len(parts) != 10:
        raise WiderFormatError(
            f"{where}: expected 10 fields 'x1 y1 w h blur expression illumination invalid "
            f"occlusion pose', got {len(parts)}: {line!r}"
        )
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise WiderFormatError(f"{where}: expected 10 numbers, got {line!r}") from None
    if values[2] < 0 or values[3] < 0:
        raise WiderFormatError(f"{where}: negative width or height {values[2:4]} in {line!r}")
    return values


def _parse_record(lines: list[str], i: int, file: str) -> tuple[WiderRecord, int]:
    """Parse the record starting at ``lines[i]``; return it and the next line index."""
    path = lines[i]
    if not _is_path(path):
        raise WiderFormatError(f"{file}:{i + 1}: expected an image path ending in .jpg, got {path!r}")
    if i + 1 >= len(lines):
        raise WiderFormatError(f"{file}:{i + 2}: missing the face count after {path!r}")
    try:
        count = int(lines[i + 1])
    except ValueError:
        count = -1
    if count < 0:
        raise WiderFormatError(f"{file}:{i + 2}: expected a face count >= 0, got {lines[i + 1]!r}")
    start = i + 2
    if count == 0:  # one placeholder line of zeros follows (if a derived file omits it, fine)
        has_placeholder = start < len(lines) and not _is_path(lines[start])
        return _empty_record(path), start + int(has_placeholder)
    if start + count > len(lines):
        raise WiderFormatError(
            f"{file}:{i + 2}: count {count} for {path!r} but only {len(lines) - start} lines follow"
        )
    faces = [_parse_face(lines[k], f"{file}:{k + 1}") for k in range(start, start + count)]
    table = np.asarray(faces, dtype=np.float64)  # (M, 10)
    attrs = {name: table[:, 4 + a].astype(np.int64) for a, name in enumerate(ATTRIBUTES)}
    return WiderRecord(path, table[:, :4].astype(np.float32), attrs), start + count


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def parse_wider_annotations(
    path: str | os.PathLike, on_error: str = "raise"
) -> tuple[list[WiderRecord], ParseReport]:
    """Parse a ``wider_face_{train,val}_bbx_gt.txt`` file.

    Args:
        path: the annotation file.
        on_error: ``"raise"``: a malformed record raises :class:`WiderFormatError`
            naming the file and line; ``"skip"``: skip it (up to the next image
            path line), count it and keep its message in the report.

    Returns:
        The records in file order (boxes xywh pixels) and a :class:`ParseReport`.
    """
    _check_on_error(on_error)
    file = str(path)
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    records, report, i = [], ParseReport(file), 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        try:
            record, i = _parse_record(lines, i, file)
        except WiderFormatError as error:
            if on_error == "raise":
                raise
            report.skipped_records += 1
            if len(report.messages) < MAX_MESSAGES:
                report.messages.append(str(error))
            i += 1
            while i < len(lines) and not _is_path(lines[i]):
                i += 1
            continue
        records.append(record)
    report.records, report.faces = len(records), sum(len(r.boxes) for r in records)
    return records, report


def parse_wider_filelist(path: str | os.PathLike) -> list[WiderRecord]:
    """Parse ``wider_face_test_filelist.txt`` (one image path a line) into empty records."""
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    for k, line in enumerate(lines):
        if line and not _is_path(line):
            raise WiderFormatError(f"{path}:{k + 1}: expected an image path ending in .jpg, got {line!r}")
    return [_empty_record(line) for line in lines if line]


def find_wider_root(root: str | os.PathLike) -> Path:
    """Return the folder that holds ``wider_face_split/``: ``root`` or ``root/widerface``.

    Raises:
        FileNotFoundError: neither exists; the message lists where it looked.
    """
    candidates = [Path(root), Path(root) / "widerface"]
    for candidate in candidates:
        if (candidate / "wider_face_split").is_dir():
            return candidate
    looked = ", ".join(str(c / "wider_face_split") for c in candidates)
    raise FileNotFoundError(
        f"no WIDER FACE annotations found: looked for {looked}. Download the data with "
        f"scratchdet.data.download_wider({str(root)!r}) or from {WIDER_HOME}"
    )


def _is_whole(path: Path) -> bool:
    """Whether an image file has its end (reads its first and last bytes only: cheap for a whole split)."""
    try:
        check_file_complete(path)
    except OSError:
        return False
    return True


class RecordSequence:
    """The sequence protocol of a source that holds ``self.records``: ``len``, negative indices, a clear IndexError.

    Shared by :class:`WiderFace` and :class:`scratchdet.data.formats.LabelledImages`.
    """

    records: list

    def __len__(self) -> int:
        return len(self.records)

    def _index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {type(self).__name__} of length {len(self)}")
        return i % len(self)


class WiderFace(RecordSequence):
    """WIDER FACE split as a dataset source: ``source[i] -> (image, boxes)``.

    Args:
        root: folder with ``wider_face_split/`` and ``WIDER_<split>/``, or its
            parent in the torchvision layout (``root/widerface/...``).
        split: ``"train"``, ``"val"`` or ``"test"`` (test has no boxes).
        min_face_size: drop faces whose shorter side is below this, in pixels.
        keep_invalid: keep faces the annotators flagged ``invalid``.
        on_error: ``"raise"`` or ``"skip"``. Skip also skips malformed
            annotation records, and drops records whose image file is missing
            or truncated (a JPEG or PNG whose end is missing) when the source
            is built (counted as ``"missing_image"`` and ``"damaged_image"``);
            an image that cannot be decoded otherwise still raises, naming the
            file, when it is read. With ``"raise"`` a truncated image raises
            when it is read.

    Attributes:
        records: the :class:`WiderRecord` list (all faces, xywh, with flags).
        report: the :class:`ParseReport`, with ``dropped`` counts by reason.

    ``source[i]`` returns ``image`` (``uint8 (H, W, 3)`` RGB, read with OpenCV)
    and ``boxes`` (``float32 (M, 4)`` xyxy pixels, clipped to the image).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        min_face_size: float = 0,
        keep_invalid: bool = False,
        on_error: str = "raise",
    ) -> None:
        if split not in SPLIT_FILES:
            raise ValueError(f"split must be one of {tuple(SPLIT_FILES)}, got {split!r}")
        _check_on_error(on_error)
        if not isinstance(min_face_size, (int, float)) or min_face_size < 0:
            raise ValueError(f"min_face_size must be a number >= 0, got {min_face_size!r}")
        self.root, self.split = find_wider_root(root), split
        self.min_face_size, self.keep_invalid = float(min_face_size), keep_invalid
        self.image_dir = self.root / f"WIDER_{split}" / "images"
        annotations = self.root / "wider_face_split" / SPLIT_FILES[split]
        if not annotations.is_file():
            raise FileNotFoundError(f"WIDER FACE {split} annotations not found: {annotations}")
        if split == "test":
            self.records = parse_wider_filelist(annotations)
            self.report = ParseReport(str(annotations), records=len(self.records))
        else:
            self.records, self.report = parse_wider_annotations(annotations, on_error)
        if on_error == "skip":
            exists = [(self.image_dir / r.path).is_file() for r in self.records]
            self.report.dropped["missing_image"] += exists.count(False)
            self.records = [r for r, ok in zip(self.records, exists) if ok]
            whole = [_is_whole(self.image_dir / r.path) for r in self.records]
            self.report.dropped["damaged_image"] += whole.count(False)
            self.records = [r for r, ok in zip(self.records, whole) if ok]
        self._keep = [self._face_mask(r) for r in self.records]

    def _face_mask(self, record: WiderRecord) -> np.ndarray:
        """Boolean ``(M,)`` mask of the faces to keep; counts the others by reason."""
        w, h = record.boxes[:, 2], record.boxes[:, 3]
        degenerate = (w <= 0) | (h <= 0)
        invalid = ~degenerate & (record.attributes["invalid"] == 1) & (not self.keep_invalid)
        small = ~degenerate & ~invalid & (np.minimum(w, h) < self.min_face_size)
        for reason, mask in (("degenerate", degenerate), ("invalid", invalid), ("small", small)):
            self.report.dropped[reason] += int(mask.sum())
        return ~(degenerate | invalid | small)

    def image_path(self, i: int) -> Path:
        """Absolute path of image ``i``."""
        return self.image_dir / self.records[self._index(i)].path

    def read_image(self, i: int) -> np.ndarray:
        """Image ``i`` as ``uint8 (H, W, 3)`` RGB; a clear error names a missing or bad file."""
        path = self.image_path(i)
        try:
            return read_image(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"WIDER FACE image not found: {path} (record {i}, {self.split} split)") from None

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        i = self._index(i)
        image = self.read_image(i)
        boxes = torch.from_numpy(self.records[i].boxes_xyxy()[self._keep[i]])  # (M, 4)
        boxes = clip_boxes(boxes, image.shape[:2])
        inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        self.report.dropped["outside"] += int((~inside).sum())  # per process (see DataLoader workers)
        return image, boxes[inside].numpy()

    def meta(self, i: int) -> dict:
        """Path, event and the attribute flags of the kept faces of image ``i``."""
        i = self._index(i)
        record, keep = self.records[i], self._keep[i]
        attributes = {name: values[keep] for name, values in record.attributes.items()}
        return {"path": str(self.image_dir / record.path), "event": record.event, "attributes": attributes}


def file_md5(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, md5: str | None, timeout: float) -> None:
    """Download ``url`` to ``dest`` through a ``.part`` file; check its MD5."""
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
    except OSError as error:  # urllib.error.URLError, timeouts, refused connections
        part.unlink(missing_ok=True)
        raise RuntimeError(
            f"could not download {dest.name} from {url} ({error}; no network?). Download it "
            f"manually from {WIDER_HOME} and unpack it into {dest.parent}"
        ) from None
    if md5 is not None and (got := file_md5(part)) != md5:
        part.unlink()
        raise RuntimeError(
            f"checksum mismatch for {dest.name} from {url}: md5 {got}, expected {md5}. "
            f"Download it manually from {WIDER_HOME} and unpack it into {dest.parent}"
        )
    part.replace(dest)


def download_wider(
    root: str | os.PathLike = "data/widerface",
    splits: tuple[str, ...] = ("train", "val"),
    annotations: bool = True,
    files: Mapping[str, tuple[str, str | None]] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download and unpack WIDER FACE into ``root`` (the official layout).

    ``data/widerface`` is also the torchvision layout for ``WIDERFace("data")``.
    A split whose folder (e.g. ``root/WIDER_train``) exists is skipped; an
    archive already in ``root`` with the right MD5 is unpacked, not fetched.

    Args:
        root: destination folder.
        splits: image archives to get, among ``"train"``, ``"val"``, ``"test"``.
        annotations: also get ``wider_face_split.zip``.
        files: file name -> ``(url, md5 or None)``, overriding :data:`WIDER_FILES`.
        timeout: socket timeout of each download, in seconds.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        RuntimeError: a download failed (offline) or its checksum is wrong, or an
            archive is not a zip file; the message says how to get it by hand.
    """
    table = {**WIDER_FILES, **(files or {})}
    for split in splits:
        if split not in SPLIT_FILES:
            raise ValueError(f"splits must be among {tuple(SPLIT_FILES)}, got {split!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = [f"WIDER_{s}.zip" for s in splits] + ["wider_face_split.zip"] * annotations
    for name in names:
        if (root / name[: -len(".zip")]).is_dir():
            continue
        url, md5 = table[name]
        archive = root / name
        if not (archive.is_file() and (md5 is None or file_md5(archive) == md5)):
            _fetch(url, archive, md5, timeout)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(root)
        except zipfile.BadZipFile:
            raise RuntimeError(f"{archive} is not a zip file: delete it and download again") from None
    return root
