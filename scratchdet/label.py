"""``scratchdet label``: pseudo-labels for your own unlabelled photos, from a teacher detector.

    scratchdet label photos/                      # YuNet (yuface) -> photos/annotations.json
    scratchdet label photos/ --teacher haar       # OpenCV's Haar cascade, always installed
    scratchdet label photos/ --conf 0.8 --min-size 16 --out faces.json --overwrite

A teacher (:mod:`scratchdet.baselines`) runs on every image file under the
folder (sub-folders too, hidden ones not; ``IMAGE_SUFFIXES`` of
:mod:`scratchdet.data.photos`, read by its ``read_image``) and its faces are
written as COCO JSON, which :class:`scratchdet.data.coco.CocoFaces` reads:
``images`` (``id``, ``file_name`` relative to the folder, ``width``,
``height``), ``annotations`` (``id``, ``image_id``, ``category_id`` 1,
``bbox`` ``[x, y, w, h]`` pixels, top-left corner and size, ``area``,
``iscrowd`` 0, ``score``: the teacher's), ``categories`` ``[{"id": 1,
"name": "face"}]`` and ``info`` (teacher, its version, conf, min_size, date,
``"pseudo_labels": true``).

Pseudo-labels are the teacher's opinion, mistakes included: a student trained
on them learns its misses and false faces too. The defaults
(:data:`scratchdet.config.TEACHER_CONF`, ``TEACHER_MIN_SIZE``) put precision
first. Files that cannot be read (damaged, truncated, not an image) are skipped
and listed; other files are ignored. The output is written atomically, never
over an existing file unless asked, and not at all when no image was read or
on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import shlex
import sys
from numbers import Real
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from scratchdet._io import atomic_write_text
from scratchdet.baselines import HaarFaceDetector, YuFaceDetector
from scratchdet.boxes import box_convert, clip_boxes
from scratchdet.config import TEACHER_CONF, TEACHER_MIN_SIZE
from scratchdet.data.photos import IMAGE_SUFFIXES, read_image

__all__ = ["TEACHERS", "YUFACE_HELP", "label_folder", "build_teacher", "image_files", "add_arguments", "run"]

TEACHERS = ("yunet", "haar")
YUFACE_HELP = ("teacher 'yunet' needs the optional 'yuface' package: pip install yuface (wheels exist only for "
               "Linux x86_64 and Windows amd64, Python < 3.12); elsewhere use --teacher haar")
ANNOTATIONS_NAME = "annotations.json"
FACE_CATEGORY = {"id": 1, "name": "face"}


def _check_args(teacher: str, conf, min_size) -> None:
    if teacher not in TEACHERS:
        raise ValueError(f"teacher must be one of {TEACHERS}, got {teacher!r}")
    if isinstance(conf, bool) or not isinstance(conf, Real) or not math.isfinite(conf):
        raise ValueError(f"conf must be a finite number, got {conf!r}")
    if teacher == "yunet" and not 0 <= conf <= 1:
        raise ValueError(f"conf of teacher 'yunet' is a confidence in [0, 1], got {conf!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, Real) or not math.isfinite(min_size) or min_size < 0:
        raise ValueError(f"min_size must be a finite number of pixels >= 0, got {min_size!r}")


def build_teacher(teacher: str) -> tuple[HaarFaceDetector | YuFaceDetector, str]:
    """The teacher detector and its version, e.g. ``"yuface 2023.5.1"``.

    The detector keeps every face it finds (conf 0; :func:`label_folder`
    filters). Raises ``ImportError`` (:data:`YUFACE_HELP`) for ``"yunet"``
    without ``yuface``.
    """
    if teacher == "haar":
        detector = HaarFaceDetector()
        return detector, f"opencv {cv2.__version__} {detector.cascade_path.name}"
    if teacher != "yunet":
        raise ValueError(f"teacher must be one of {TEACHERS}, got {teacher!r}")
    try:
        detector = YuFaceDetector(conf=0.0, threads=None)  # a batch job: OpenMP's default threads
    except ImportError as error:
        raise ImportError(YUFACE_HELP) from error
    return detector, f"yuface {importlib.metadata.version('yuface')}"


def image_files(folder: Path) -> tuple[list[Path], int]:
    """The image files under ``folder`` (by suffix, sorted, no hidden paths) and the number of other files."""
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    return images, len(files) - len(images)


def _faces(detector, image: np.ndarray, conf: float, min_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's faces with score >= conf and both sides >= min_size: ``(Tensor[K, 4] xywh px, Tensor[K])``."""
    found = detector.detect(image)
    boxes = clip_boxes(found["boxes"], image.shape[:2])  # (K, 4) xyxy pixels inside the image
    xywh = box_convert(boxes, "xyxy", "xywh")  # (K, 4)
    keep = (found["scores"] >= conf) & (xywh[:, 2:].min(dim=1).values >= max(min_size, 1e-6))
    return xywh[keep], found["scores"][keep]


def _output_path(folder: Path, out, overwrite: bool) -> Path:
    output = folder / ANNOTATIONS_NAME if out is None else Path(out)
    if output.is_dir():
        raise IsADirectoryError(f"output {output} is a folder; give a file name such as {output / ANNOTATIONS_NAME}")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; pass --overwrite (overwrite=True) to replace it")
    return output


def _coco(folder: Path, paths: list[Path], detector, conf: float, min_size: float, progress: bool):
    """Run the teacher: ``(images, annotations, skipped)`` lists in the COCO layout."""
    images, annotations, skipped = [], [], []
    for path in tqdm(paths, desc="images", unit="image", disable=not progress, file=sys.stderr, dynamic_ncols=True):
        try:
            image = read_image(path)
        except OSError as error:  # FileNotFoundError too (a file removed meanwhile)
            skipped.append({"file": str(path), "error": str(error)})
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": path.relative_to(folder).as_posix(),
                       "width": image.shape[1], "height": image.shape[0]})
        for box, score in zip(*_faces(detector, image, conf, min_size)):
            x, y, w, h = (round(v, 2) for v in box.tolist())
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": FACE_CATEGORY["id"],
                                "bbox": [x, y, w, h], "area": round(w * h, 2), "iscrowd": 0,
                                "score": round(float(score), 4)})
    return images, annotations, skipped


def label_folder(folder: str | os.PathLike, teacher: str = "yunet", conf: float | None = None,
                 min_size: float = TEACHER_MIN_SIZE, out: str | os.PathLike | None = None,
                 overwrite: bool = False, progress: bool = False) -> dict:
    """Pseudo-label every image under ``folder`` with a teacher and write COCO JSON.

    Args:
        folder: the photos (sub-folders included).
        teacher: ``"yunet"`` (needs ``yuface``) or ``"haar"``.
        conf: keep faces with a teacher score >= this; ``None``:
            ``TEACHER_CONF[teacher]``. yunet: a confidence in [0, 1]; haar: the
            cascade's last-stage weight (any real number, about 0 to 10).
        min_size: keep faces whose smaller side is >= this, in pixels.
        out: the COCO file; ``None``: ``folder/annotations.json``.
        overwrite: replace an existing ``out`` (otherwise ``FileExistsError``).
        progress: a tqdm bar on stderr.

    Returns:
        ``{"output": Path, "images": n read, "faces": n, "skipped": [{"file",
        "error"}], "ignored": n files that are not images, "teacher", "conf",
        "min_size"}``. Boxes are in the file (``bbox`` ``[x, y, w, h]`` pixels).

    Raises:
        ValueError: a bad argument (named), or no image file under ``folder``.
        OSError: ``folder`` is missing, ``out`` exists, or no image could be read.
        ImportError: ``"yunet"`` without ``yuface`` (:data:`YUFACE_HELP`).
    """
    folder = Path(folder)
    conf = TEACHER_CONF.get(teacher) if conf is None else conf
    _check_args(teacher, conf, min_size)
    if not folder.is_dir():
        raise NotADirectoryError(f"folder {folder} does not exist or is not a folder")
    output = _output_path(folder, out, overwrite)
    paths, ignored = image_files(folder)
    if not paths:
        raise ValueError(f"folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}; {ignored} other files)")
    detector, version = build_teacher(teacher)
    images, annotations, skipped = _coco(folder, paths, detector, float(conf), float(min_size), progress)
    if not images:
        raise OSError(f"no image in {folder} could be read ({len(skipped)} files skipped; first: "
                      f"{skipped[0]['error']}); nothing written")
    info = {"description": f"pseudo-labels: faces found by the {teacher} teacher, not checked by a person",
            "pseudo_labels": True, "teacher": teacher, "teacher_version": version, "conf": conf,
            "min_size": min_size, "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"), "contributor": "scratchdet label"}
    document = {"info": info, "images": images, "annotations": annotations, "categories": [dict(FACE_CATEGORY)]}
    atomic_write_text(output, json.dumps(document, indent=1) + "\n")
    return {"output": output, "images": len(images), "faces": len(annotations), "skipped": skipped,
            "ignored": ignored, "teacher": teacher, "conf": conf, "min_size": min_size}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``scratchdet label FOLDER ...``."""
    parser.add_argument("folder", help="your photos (sub-folders included)")
    parser.add_argument("--teacher", default="yunet", choices=TEACHERS,
                        help="yunet (pip install yuface) or haar (OpenCV, always there); default: yunet")
    parser.add_argument("--conf", type=float, default=None,
                        help="keep faces with a teacher score >= this (default: "
                        + ", ".join(f"{name} {conf}" for name, conf in TEACHER_CONF.items()) + ")")
    parser.add_argument("--min-size", type=float, default=TEACHER_MIN_SIZE, metavar="PX",
                        help=f"keep faces whose smaller side is >= PX pixels (default: {TEACHER_MIN_SIZE})")
    parser.add_argument("--out", default=None, help=f"the COCO file (default: FOLDER/{ANNOTATIONS_NAME})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> None:
    """Run ``scratchdet label`` as parsed by a parser set up with :func:`add_arguments`; print the summary."""
    result = label_folder(args.folder, args.teacher, args.conf, args.min_size, args.out, args.overwrite,
                          progress=not args.no_progress)
    print(f"{result['images']} images labelled, {result['faces']} faces (teacher {result['teacher']}, "
          f"conf {result['conf']}, min size {result['min_size']:g} px), {len(result['skipped'])} skipped, "
          f"{result['ignored']} other files ignored -> {result['output']}")
    for item in result["skipped"]:
        print(f"  skipped {item['file']}: {item['error']}")
    print("these are pseudo-labels: the teacher's mistakes are in them; look at a few before training")
    print(f"train on them: scratchdet train --config configs/demo.yaml --data.dataset coco "
          f"--data.root {shlex.quote(str(args.folder))} --data.annotations {shlex.quote(str(result['output']))}")
