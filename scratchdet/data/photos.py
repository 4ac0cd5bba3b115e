"""Reading photos from disk, and the sample photos that ship with dependencies.

``read_image`` is the one place that turns an image file into the package's
image convention: ``uint8 (H, W, 3)`` RGB.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

__all__ = ["read_image", "check_complete", "check_file_complete", "sample_photos", "check_rgb_image", "as_box_array",
           "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
PNG_SIGNATURE, PNG_END = b"\x89PNG\r\n\x1a\n", b"\x00\x00\x00\x00IEND"


def check_rgb_image(image, name: str = "image") -> np.ndarray:
    """``image`` itself if it is a ``uint8 (H, W, 3)`` numpy array; else ValueError naming ``name``, dtype and shape."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{name} must be a uint8 array (H, W, 3) RGB, got {got}")
    return image


def as_box_array(boxes, dtype=np.float32, name: str = "boxes") -> np.ndarray:
    """``boxes`` as a ``(M, 4)`` array of ``dtype`` (no boxes: ``(0, 4)``); ValueError naming ``name`` and the shape."""
    array = np.asarray(boxes, dtype=dtype)
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name} must have shape (M, 4) (xyxy pixels), got {array.shape}")
    return array


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``uint8 (H, W, 3)`` RGB.

    A truncated or damaged JPEG or PNG is refused rather than decoded: OpenCV
    only warns ("Premature end of JPEG file") and returns the image with its
    missing part grey. A JPEG must end with the end-of-image marker ``FF D9``
    and a PNG with its ``IEND`` chunk (see :func:`check_complete`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OSError: the file exists but is not an image, is truncated or damaged
            (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    data = path.read_bytes()
    check_complete(data, path)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"could not read image {path}: not an image file or corrupt")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_complete(data: bytes, path: str | os.PathLike = "<bytes>") -> None:
    """Raise ``OSError`` naming ``path`` if ``data`` is a JPEG or PNG whose end is missing.

    JPEG (starts ``FF D8``): the last bytes, after any zero or whitespace
    padding, must be the end-of-image marker ``FF D9``. PNG (the 8-byte
    signature): the file must end with the ``IEND`` chunk. Other formats pass
    (OpenCV's decoder is their check).
    """
    if data[:2] == JPEG_START and not data.rstrip(b"\x00\r\n\t ").endswith(JPEG_END):
        raise OSError(f"truncated or damaged JPEG {path}: it does not end with the end-of-image marker FF D9 "
                      f"({len(data)} bytes)")
    if data[:8] == PNG_SIGNATURE and data[-12:-4] != PNG_END:
        raise OSError(f"truncated or damaged PNG {path}: it does not end with the IEND chunk ({len(data)} bytes)")


def check_file_complete(path: str | os.PathLike) -> None:
    """:func:`check_complete` on a file, reading only its first and last bytes (cheap for a whole split)."""
    path = Path(path)
    with path.open("rb") as file:
        head = file.read(8)
        file.seek(max(0, path.stat().st_size - 64))
        tail = file.read()
    check_complete(head + tail, path)


def sample_photos() -> list[Path]:
    """Public-domain photos with faces that ship inside installed packages.

    Today: matplotlib's ``grace_hopper.jpg`` (a portrait of Rear Admiral Grace
    Hopper, public domain). Returns the paths that exist.
    """
    import matplotlib.cbook

    found = []
    for name in ("grace_hopper.jpg",):
        try:
            found.append(Path(matplotlib.cbook.get_sample_data(name, asfileobj=False)))
        except (FileNotFoundError, OSError, ValueError):
            continue
    return [p for p in found if p.is_file()]
