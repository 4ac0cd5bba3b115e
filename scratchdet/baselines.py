"""Baseline face detectors to compare the YOLO model with.

* :class:`HaarFaceDetector`: OpenCV's Viola-Jones Haar cascade (2001), the
  classical detector, shipped inside ``opencv-python`` 4.x (OpenCV 5 wheels
  have no cascades).
* :class:`YuFaceDetector`: optional, the ``yuface`` package (libfacedetection's
  YuNet-family CNN, weights built into the wheel, runs offline on the CPU):
  what a small production detector does. ``pip install yuface``; not a
  dependency of scratchdet.

Both take an ``uint8 (H, W, 3)`` RGB image and return
``{"boxes": Tensor[K, 4] float32 xyxy pixels, "scores": Tensor[K] float32}``
sorted by decreasing score, the format of :func:`scratchdet.nms.postprocess`,
so :func:`scratchdet.evaluation.evaluate_detector` takes either.
Compared in ``notebooks/08_evaluation.ipynb``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from scratchdet.boxes import box_convert

__all__ = ["HaarFaceDetector", "YuFaceDetector"]

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError(f"image must be a numpy uint8 array (H, W, 3) RGB, got "
                        f"{getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"image must have shape (H, W, 3) RGB, got {image.shape}")
    return image


def _result(xywh, scores) -> dict[str, torch.Tensor]:
    """OpenCV-style xywh rectangles and their scores -> sorted xyxy detections."""
    boxes = torch.as_tensor(np.asarray(xywh, np.float32).reshape(-1, 4))
    scores = torch.as_tensor(np.asarray(scores, np.float32).reshape(-1))
    order = torch.argsort(scores, descending=True, stable=True)
    return {"boxes": box_convert(boxes, "xywh", "xyxy")[order], "scores": scores[order]}


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade as a detector with scores.

    Args:
        scale_factor: image pyramid step (> 1); smaller finds more, slower.
        min_neighbors: overlapping raw detections needed to keep a face; the
            cascade's own grouping is its NMS.
        min_size: smallest face searched, ``(width, height)`` pixels; default
            the cascade's 24 x 24 window.
        cascade: file name inside ``cv2.data.haarcascades``, or a path.

    Scores: ``detectMultiScale3(..., outputRejectLevels=True)`` gives each face
    the weight of the last cascade stage it passed (how far past the stage
    threshold it got), a real-valued confidence that ranks detections, so a
    precision/recall curve and AP are meaningful. It is not a probability and
    can be negative.
    """

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_size: tuple[int, int] | None = None, cascade: str = DEFAULT_CASCADE) -> None:
        if not isinstance(scale_factor, (int, float)) or not scale_factor > 1:
            raise ValueError(f"scale_factor must be a number > 1, got {scale_factor!r}")
        if isinstance(min_neighbors, bool) or not isinstance(min_neighbors, int) or min_neighbors < 0:
            raise ValueError(f"min_neighbors must be an int >= 0, got {min_neighbors!r}")
        if min_size is not None and (len(min_size) != 2 or min(min_size) < 1):
            raise ValueError(f"min_size must be (width, height) in pixels >= 1, got {min_size!r}")
        self.scale_factor, self.min_neighbors = float(scale_factor), min_neighbors
        self.min_size = tuple(int(v) for v in min_size) if min_size is not None else (0, 0)
        self.cascade_path = self._find(cascade)
        self.classifier = cv2.CascadeClassifier(str(self.cascade_path))
        if self.classifier.empty():
            raise OSError(f"OpenCV could not load the Haar cascade {self.cascade_path}")

    @staticmethod
    def _find(cascade: str) -> Path:
        path = Path(cascade)
        if path.is_file():
            return path
        folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if folder is None or not hasattr(cv2, "CascadeClassifier"):
            raise RuntimeError(f"OpenCV {cv2.__version__} ships no Haar cascades (they left in OpenCV 5); "
                               f"install opencv-python-headless>=4.10,<5")
        path = Path(folder) / cascade
        if not path.is_file():
            raise FileNotFoundError(f"Haar cascade not found: {path}")
        return path

    def detect(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """Faces in an ``uint8 (H, W, 3)`` RGB image -> ``{"boxes": Tensor[K, 4] xyxy px, "scores": Tensor[K]}``."""
        gray = cv2.cvtColor(_check_image(image), cv2.COLOR_RGB2GRAY)
        rects, _, weights = self.classifier.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=self.min_size, outputRejectLevels=True)
        return _result(rects, weights)

    __call__ = detect

    def __repr__(self) -> str:
        return (f"HaarFaceDetector(scale_factor={self.scale_factor}, min_neighbors={self.min_neighbors}, "
                f"min_size={self.min_size}, cascade={self.cascade_path.name!r})")


class YuFaceDetector:
    """The optional ``yuface`` CNN detector (needs ``pip install yuface``).

    Args:
        conf: keep faces with confidence >= this, in [0, 1]. Use a low value
            (the default 0.3) for AP, which wants the whole score range.

    Scores are yuface's confidences divided by 100 (it reports 0-100).
    """

    def __init__(self, conf: float = 0.3) -> None:
        try:
            import yuface  # optional: imported only when this detector is built
        except ImportError as error:
            raise ImportError("YuFaceDetector needs the optional 'yuface' package: pip install yuface") from error
        if not isinstance(conf, (int, float)) or not 0 <= conf <= 1:
            raise ValueError(f"conf must be a number in [0, 1], got {conf!r}")
        self._yuface, self.conf = yuface, float(conf)

    def detect(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """Faces in an ``uint8 (H, W, 3)`` RGB image -> ``{"boxes", "scores"}`` as :class:`HaarFaceDetector`."""
        bgr = np.ascontiguousarray(_check_image(image)[..., ::-1])
        confs, xywh, _ = self._yuface.detect(bgr, conf=self.conf)
        return _result(np.asarray(xywh, np.float32), np.asarray(confs, np.float32) / 100.0)

    __call__ = detect
