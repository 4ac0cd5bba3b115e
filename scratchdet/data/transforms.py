"""Albumentations pipelines that move boxes with the image.

Every pipeline ends at exactly ``image_size x image_size`` and works on numpy
images ``uint8 (H, W, 3)`` RGB and boxes ``float32 (M, 4)`` xyxy pixels
(Albumentations calls this format ``"pascal_voc"``).

* :func:`eval_transforms` letterboxes: resize so the longer side is
  ``image_size`` (aspect ratio kept), then pad bottom and right with grey.
  Padding at the bottom right means the way back is a plain scale, with no
  offset. The geometry is :mod:`scratchdet.letterbox`'s (the tests check that
  Albumentations lands on :func:`scratchdet.letterbox.letterbox_shape`), so
  boxes map back with :func:`scratchdet.letterbox.unletterbox_boxes` and
  ``letterbox_scale(image_hw, image_size)``, re-exported here.
* :func:`train_transforms` letterboxes the same way, then zooms in or out
  at random (``A.Affine``: zooming in crops, zooming out makes faces smaller),
  flips left-right, jitters colours, blurs and adds noise; ``photometric="photo"``
  adds the camera's side of a photograph (uneven lighting, shadows, grey,
  defocus, low resolution, sensor noise, JPEG), a sim-to-real lever of
  ``notebooks/12_real_photos.ipynb``.

:class:`DetectionTransform` wraps the pipeline, drops boxes that end up
smaller than ``min_box_size`` (or that Albumentations drops because too little
of them is left in the crop) and counts them. Taught in ``notebooks/02_data.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from scratchdet.boxes import clip_boxes
from scratchdet.config import PAD_VALUE  # mid grey, as in YOLOv5
from scratchdet.letterbox import letterbox_scale, unletterbox_boxes  # the one inverse, re-exported

__all__ = [
    "PAD_VALUE",
    "DetectionTransform",
    "train_transforms",
    "eval_transforms",
    "PHOTOMETRIC_LEVELS",
    "letterbox_scale",
    "unletterbox_boxes",
]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (H, W, 3) uint8 RGB, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")


def _check_numpy_boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (M, 4) xyxy pixels, got {boxes.shape}")
    return boxes


class DetectionTransform:
    """An Albumentations pipeline for ``(image, boxes)`` that counts dropped boxes.

    Args:
        transforms: Albumentations transforms, applied in order.
        min_box_size: after the pipeline, drop boxes whose width or height (in
            output pixels) is below this; zero-area boxes are always dropped.
        min_visibility: Albumentations drops a box when less than this fraction
            of its area is left inside the image (after a crop).
        seed: seed of the pipeline's random generator (``A.Compose(seed=...)``);
            ``None`` draws one from the operating system.

    Calling it with ``image`` (``uint8 (H, W, 3)`` RGB) and ``boxes``
    (``float32 (M, 4)`` xyxy pixels, clipped to the image first) returns the
    new image, the kept boxes (``float32 (K, 4)`` xyxy output pixels) and an
    ``info`` dict: ``boxes_in``, ``dropped_by_augmentation``, ``dropped_small``
    and ``kept_ids`` (index in the input of each kept box). The ``dropped``
    and ``boxes_seen`` attributes add up over calls (per process: each
    DataLoader worker counts its own copy).
    """

    def __init__(
        self,
        transforms: Sequence[A.BasicTransform],
        min_box_size: float = 0.0,
        min_visibility: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if not isinstance(min_box_size, (int, float)) or min_box_size < 0:
            raise ValueError(f"min_box_size must be a number >= 0, got {min_box_size!r}")
        if not 0 <= min_visibility <= 1:
            raise ValueError(f"min_visibility must be in [0, 1], got {min_visibility!r}")
        self.min_box_size = float(min_box_size)
        bbox_params = A.BboxParams(
            format="pascal_voc",
            label_fields=["box_ids"],
            min_visibility=min_visibility,
            clip=True,
            filter_invalid_bboxes=True,
        )
        self.compose = A.Compose(list(transforms), bbox_params=bbox_params, seed=seed)
        self.dropped = 0
        self.boxes_seen = 0

    def set_seed(self, seed: int | None) -> None:
        """Reseed the pipeline (e.g. once per DataLoader worker)."""
        self.compose.set_random_seed(seed)

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        _check_image(image)
        boxes = _check_numpy_boxes(boxes)
        num_in = len(boxes)
        boxes = clip_boxes(torch.from_numpy(boxes), image.shape[:2]).numpy()
        out = self.compose(image=image, bboxes=boxes, box_ids=np.arange(num_in))
        out_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)  # (K, 4)
        wh = out_boxes[:, 2:] - out_boxes[:, :2]  # (K, 2)
        keep = (wh > 0).all(axis=1) & (wh >= self.min_box_size).all(axis=1)
        info = {
            "boxes_in": num_in,
            "dropped_by_augmentation": num_in - len(out_boxes),
            "dropped_small": int((~keep).sum()),
            "kept_ids": np.asarray(out["box_ids"], dtype=np.int64)[keep],
        }
        self.boxes_seen += num_in
        self.dropped += num_in - int(keep.sum())
        return out["image"], out_boxes[keep], info

    def __repr__(self) -> str:
        return f"DetectionTransform(min_box_size={self.min_box_size}, compose={self.compose!r})"


def _fit_and_pad(image_size: int, position: str) -> list[A.BasicTransform]:
    return [
        A.LongestMaxSize(max_size=image_size),
        A.PadIfNeeded(
            min_height=image_size,
            min_width=image_size,
            position=position,
            border_mode=cv2.BORDER_CONSTANT,
            fill=PAD_VALUE,
        ),
    ]


def _check_size(image_size: int) -> int:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    return image_size


def eval_transforms(image_size: int, min_box_size: float = 0.0) -> DetectionTransform:
    """Letterbox to ``image_size x image_size``: resize the longer side, pad bottom-right.

    Deterministic; the geometry of :func:`scratchdet.letterbox.letterbox`.
    Boxes map back with ``unletterbox_boxes(boxes, letterbox_scale(photo_hw,
    image_size), photo_hw)`` (:mod:`scratchdet.letterbox`).
    """
    return DetectionTransform(_fit_and_pad(_check_size(image_size), "top_left"), min_box_size)


PHOTOMETRIC_LEVELS = ("basic", "photo")


def _photometric(level: str, color_p: float, blur_p: float, noise_p: float) -> list[A.BasicTransform]:
    """Colour, blur and noise steps of ``train_transforms`` (``level`` in :data:`PHOTOMETRIC_LEVELS`)."""
    if level == "basic":
        return [
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02, p=color_p),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 7))], p=blur_p),
            A.GaussNoise(std_range=(0.02, 0.06), p=noise_p),
        ]
    if level != "photo":
        raise ValueError(f"photometric must be one of {PHOTOMETRIC_LEVELS}, got {level!r}")
    # Drawn faces are flat colour with hard outlines; photographed ones are lit
    # unevenly, soft, noisy and compressed. Each step is one camera effect.
    return [
        A.OneOf([A.Illumination(mode="linear", intensity_range=(0.05, 0.2)),
                 A.Illumination(mode="gaussian", intensity_range=(0.05, 0.2)),
                 A.PlasmaShadow(shadow_intensity_range=(0.1, 0.5))], p=0.5),
        A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.5, hue=0.04, p=color_p),
        A.RandomGamma(gamma_limit=(70, 140), p=0.3),
        A.ToGray(p=0.15),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 7)), A.MotionBlur(blur_limit=(3, 7)),
                 A.Defocus(radius=(1, 3), alias_blur=(0.1, 0.3)),
                 A.Downscale(scale_range=(0.35, 0.7))], p=max(blur_p, 0.5)),
        A.OneOf([A.GaussNoise(std_range=(0.02, 0.08)), A.ISONoise()], p=max(noise_p, 0.4)),
        A.ImageCompression(quality_range=(30, 90), p=0.4),
    ]


def train_transforms(
    image_size: int,
    min_box_size: float = 4.0,
    scale: tuple[float, float] = (0.6, 1.5),
    translate: float = 0.1,
    flip_p: float = 0.5,
    color_p: float = 0.8,
    blur_p: float = 0.2,
    noise_p: float = 0.2,
    min_visibility: float = 0.3,
    seed: int | None = None,
    photometric: str = "basic",
) -> DetectionTransform:
    """Random augmentation ending at exactly ``image_size x image_size``.

    Args:
        image_size: output side in pixels.
        min_box_size: drop boxes smaller than this (output pixels) afterwards.
        scale: zoom range after letterboxing (> 1 crops, < 1 shrinks faces).
        translate: random shift, as a fraction of the image side.
        flip_p, color_p, blur_p, noise_p: probabilities of a left-right flip,
            colour jitter, a Gaussian or motion blur, and Gaussian noise.
        min_visibility: drop a box when less than this fraction of it is left.
        seed: seed of the pipeline (``None``: random).
        photometric: ``"basic"`` (colour jitter, blur, noise) or ``"photo"``
            (also uneven lighting and shadows, gamma, grey, defocus, low
            resolution, sensor noise and JPEG: the look of a photograph).
    """
    if photometric not in PHOTOMETRIC_LEVELS:
        raise ValueError(f"photometric must be one of {PHOTOMETRIC_LEVELS}, got {photometric!r}")
    transforms = _fit_and_pad(_check_size(image_size), "center") + [
        A.Affine(
            scale=scale,
            translate_percent=(-translate, translate),
            keep_ratio=True,
            border_mode=cv2.BORDER_CONSTANT,
            fill=PAD_VALUE,
            p=1.0,
        ),
        A.HorizontalFlip(p=flip_p),
    ] + _photometric(photometric, color_p, blur_p, noise_p)
    return DetectionTransform(transforms, min_box_size, min_visibility, seed)
