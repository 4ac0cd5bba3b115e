"""Reading photos from disk, and the sample photos that ship with dependencies.

``read_image`` is the one place that turns an image file into the package's
image convention: ``uint8 (H, W, 3)`` RGB.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

__all__ = ["read_image", "sample_photos", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``uint8 (H, W, 3)`` RGB.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OSError: the file exists but OpenCV cannot decode it (not an image, or corrupt).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"could not read image {path}: not an image file or corrupt")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


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
