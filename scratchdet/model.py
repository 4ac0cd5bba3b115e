"""YoloDetector: a backbone and a small conv head -> the YOLO v1 prediction grid.

``forward`` maps images ``Tensor[N, 3, H, W]`` (float RGB in [0, 1], H = W =
``config.image_size``) to ``Tensor[N, S, S, B*5]``, per predictor
``(x, y, sqrt_w, sqrt_h, conf)``: sigmoid on x, y and conf (cell-relative
centre and confidence in [0, 1]), sqrt_w and sqrt_h raw (decoding squares
them). ImageNet mean/std normalisation happens inside (a buffer), so exported
models take the same [0, 1] input. ``predict`` takes photos of any size,
letterboxes them, runs NMS and maps the boxes back to each photo's pixels.

Taught in ``notebooks/05_backbones.ipynb``.
"""

from __future__ import annotations

import math
import os
import pickle
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchdet.backbones import get_backbone
from scratchdet.boxes import box_area, clip_boxes
from scratchdet.config import PAD_VALUE, DetectorConfig

__all__ = ["YoloHead", "YoloDetector", "letterbox"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONF_PRIOR = 0.01  # initial confidence of every predictor (bias = logit of it)

Images = Union[Tensor, np.ndarray, Sequence[Union[Tensor, np.ndarray]]]


class YoloHead(nn.Module):
    """Features ``Tensor[N, C, S, S]`` -> raw grid ``Tensor[N, B*5, S, S]``.

    Optional 1x1 conv to ``channels`` (when C differs), a 3x3 conv + BatchNorm +
    LeakyReLU(0.1), then a 1x1 conv to ``B*5``. The last conv starts small
    (std 0.01) with biases that make every predictor start as a centred box of
    one cell (sqrt_w = sqrt_h = sqrt(1/S)) with confidence ``CONF_PRIOR``, so the
    no-object loss does not swamp the first steps (cf. RetinaNet's prior).
    """

    def __init__(self, in_channels: int, channels: int, config: DetectorConfig) -> None:
        super().__init__()
        reduce = [] if in_channels == channels else [
            nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.LeakyReLU(0.1)]
        self.body = nn.Sequential(
            *reduce,
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(0.1),
        )
        self.out = nn.Conv2d(channels, config.channels, 1)
        nn.init.normal_(self.out.weight, std=0.01)
        bias = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0]) * math.sqrt(1.0 / config.num_cells)
        bias[4] = math.log(CONF_PRIOR / (1.0 - CONF_PRIOR))
        with torch.no_grad():
            self.out.bias.copy_(bias.repeat(config.boxes_per_cell))

    def forward(self, features: Tensor) -> Tensor:
        return self.out(self.body(features))


def letterbox(image: Tensor, size: int) -> tuple[Tensor, tuple[float, float]]:
    """Resize ``Tensor[3, H, W]`` so its longer side is ``size``, pad bottom-right with grey.

    The geometry of :func:`scratchdet.data.transforms.eval_transforms`
    (Albumentations ``LongestMaxSize`` + ``PadIfNeeded`` at the top left, fill
    ``PAD_VALUE``), written in torch so the model needs no Albumentations:
    bilinear with antialiasing instead of OpenCV's bilinear.

    Returns:
        ``(padded Tensor[3, size, size], (scale_x, scale_y))``; an input pixel
        ``(x, y)`` lands at ``(x * scale_x, y * scale_y)``.
    """
    if not isinstance(image, Tensor) or image.ndim != 3:
        raise ValueError(f"image must be a Tensor[3, H, W], got {getattr(image, 'shape', type(image).__name__)}")
    h, w = image.shape[-2:]
    new_h, new_w = max(1, round(h * size / max(h, w))), max(1, round(w * size / max(h, w)))
    if (new_h, new_w) != (h, w):
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear",
                              align_corners=False, antialias=True)[0]  # (3, new_h, new_w)
    padded = F.pad(image, (0, size - new_w, 0, size - new_h), value=PAD_VALUE / 255)  # (3, size, size)
    return padded, (new_w / w, new_h / h)


def _as_image_list(images: Images) -> list[Tensor]:
    """Photos -> list of float ``Tensor[3, H, W]`` in [0, 1], with clear errors."""
    if isinstance(images, (np.ndarray, Tensor)) and images.ndim == 3:
        images = [images]
    elif isinstance(images, Tensor) and images.ndim == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        raise TypeError("images must be a numpy (H, W, 3) uint8 array, a Tensor[3, H, W], "
                        f"a Tensor[N, 3, H, W] or a list of them, got {type(images).__name__}")
    out = []
    for i, image in enumerate(images):
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"images[{i}]: numpy images must be (H, W, 3) uint8 RGB, "
                                 f"got shape {image.shape} dtype {image.dtype}")
            image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W)
        if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"images[{i}] must be a Tensor[3, H, W] or a (H, W, 3) array, got "
                             f"{getattr(image, 'shape', type(image).__name__)}")
        if image.dtype == torch.uint8:
            image = image.float() / 255
        elif not image.is_floating_point():
            raise TypeError(f"images[{i}] must be uint8 or float in [0, 1], got dtype {image.dtype}")
        elif image.numel() and float(image.max()) > 1.0 + 1e-3:
            raise ValueError(f"images[{i}] is float with max {float(image.max()):.1f}; expected "
                             "values in [0, 1] (divide 0-255 images by 255)")
        out.append(image)
    return out


class YoloDetector(nn.Module):
    """Backbone + :class:`YoloHead` -> ``Tensor[N, S, S, B*5]`` (YOLO v1 layout).

    Args:
        config: grid geometry (image_size, num_cells S, boxes_per_cell B).
        backbone: a name in :data:`scratchdet.backbones.BACKBONES`.
        preset: ``"small"``, ``"medium"`` or ``"large"``.
        head_channels: width of the head; default ``min(backbone channels, 128)``.
        **backbone_kwargs: passed to :func:`scratchdet.backbones.get_backbone`
            (e.g. ``width=48``, ``pretrained=True``).

    Raises:
        TypeError: ``config`` is not a :class:`DetectorConfig`.
        ValueError: unknown backbone or preset, a config the backbone cannot
            land on the grid, or a bad ``head_channels``.
    """

    def __init__(self, config: DetectorConfig, backbone: str = "poolresnet", preset: str = "medium",
                 head_channels: int | None = None, **backbone_kwargs) -> None:
        super().__init__()
        if not isinstance(config, DetectorConfig):
            raise TypeError(f"config must be a DetectorConfig, got {type(config).__name__}")
        self.config = config
        self.image_size = config.image_size  # a plain int for forward (and TorchScript)
        self.backbone = get_backbone(backbone, config, preset, **backbone_kwargs)
        in_channels = self.backbone.out_channels
        head_channels = min(in_channels, 128) if head_channels is None else head_channels
        if not isinstance(head_channels, int) or isinstance(head_channels, bool) or head_channels <= 0:
            raise ValueError(f"head_channels must be a positive int or None, got {head_channels!r}")
        self.head = YoloHead(in_channels, head_channels, config)
        self.hyperparameters = {"config": config.to_dict(), "backbone": backbone, "preset": preset,
                                "backbone_kwargs": dict(backbone_kwargs), "head_channels": head_channels}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        sigmoid = torch.tensor([True, True, False, False, True]).repeat(config.boxes_per_cell)
        self.register_buffer("sigmoid_mask", sigmoid, persistent=False)  # (B*5,)

    def forward(self, images: Tensor) -> Tensor:
        """``Tensor[N, 3, H, W]`` float RGB in [0, 1], H = W = image_size -> ``Tensor[N, S, S, B*5]``.

        Per predictor ``(x, y, sqrt_w, sqrt_h, conf)``: x, y, conf through a
        sigmoid, sqrt_w, sqrt_h raw. Works in train and eval mode.
        """
        if not torch.jit.is_tracing():  # a traced graph has fixed shapes anyway
            self._check_images(images)
        features = self.backbone((images - self.mean) / self.std)  # (N, C, S, S)
        raw = self.head(features).permute(0, 2, 3, 1)  # (N, S, S, B*5)
        return torch.where(self.sigmoid_mask, raw.sigmoid(), raw)

    def _check_images(self, images: Tensor) -> None:
        size = self.image_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != size or images.shape[3] != size:
            raise ValueError(f"images must have shape [N, 3, {size}, {size}] (config.image_size), "
                             f"got {list(images.shape)}; use predict() for other sizes")
        if not images.is_floating_point():
            raise TypeError(f"images must be float RGB in [0, 1], got dtype {images.dtype}")

    @torch.no_grad()
    def predict(self, images: Images, score_threshold: float = 0.25, iou_threshold: float = 0.45,
                max_detections: int = 100) -> list[dict[str, Tensor]]:
        """Detect faces in photos of any size.

        Each photo is letterboxed to ``config.image_size`` (:func:`letterbox`),
        the batch runs through ``forward`` in eval mode (the previous mode is
        restored), :func:`scratchdet.nms.postprocess` keeps the best boxes,
        which are mapped back to the photo's pixels and clipped to it (boxes
        left with zero area, i.e. in the padding, are dropped).

        Args:
            images: a numpy ``(H, W, 3)`` uint8 RGB array, a ``Tensor[3, H, W]``
                (float in [0, 1] or uint8), a ``Tensor[N, 3, H, W]``, or a list
                of these with different sizes.
            score_threshold, iou_threshold, max_detections: as in ``postprocess``.

        Returns:
            One dict per photo, ``{"boxes": Tensor[K, 4], "scores": Tensor[K]}``,
            boxes xyxy in that photo's pixels, sorted by decreasing score, on
            the model's device.
        """
        from scratchdet.nms import postprocess

        photos = [p.to(self.mean.device) for p in _as_image_list(images)]
        if not photos:
            return []
        boxed = [letterbox(p, self.image_size) for p in photos]
        was_training = self.training
        self.eval()
        try:
            grid = self(torch.stack([b[0] for b in boxed]))  # (N, S, S, B*5)
        finally:
            self.train(was_training)
        detections = postprocess(grid, self.config, score_threshold, iou_threshold, max_detections)
        return [_to_photo(d, scale, tuple(p.shape[-2:])) for d, (_, scale), p in zip(detections, boxed, photos)]

    def save(self, path: str | os.PathLike) -> None:
        """Write ``{**self.hyperparameters, "state_dict": ...}`` for :meth:`from_checkpoint`."""
        torch.save({**self.hyperparameters, "state_dict": self.state_dict()}, path)

    @classmethod
    def from_hyperparameters(cls, hparams: dict) -> "YoloDetector":
        """Build an untrained model from a :attr:`hyperparameters` dict.

        Keys: ``config`` (dict or DetectorConfig) and ``backbone`` are required;
        ``preset``, ``backbone_kwargs``, ``head_channels`` are optional, other
        keys are ignored. ``pretrained`` is switched off (no download): the
        checkpoint's weights replace the ImageNet ones.
        """
        missing = [k for k in ("config", "backbone") if k not in hparams]
        if missing:
            raise ValueError(f"hyperparameters lack {missing}; got keys {sorted(hparams)}")
        config = hparams["config"]
        config = config if isinstance(config, DetectorConfig) else DetectorConfig.from_dict(dict(config))
        kwargs = dict(hparams.get("backbone_kwargs") or {})
        if kwargs.get("pretrained"):
            kwargs["pretrained"] = False  # no download: the checkpoint holds the weights
        return cls(config, hparams["backbone"], hparams.get("preset", "medium"),
                   head_channels=hparams.get("head_channels"), **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location="cpu") -> "YoloDetector":
        """Load a model saved by :meth:`save` or by Lightning, in eval mode.

        Two layouts are read:

        * :meth:`save`: ``{"config": dict, "backbone": str, "preset": str,
          "backbone_kwargs": dict, "head_channels": int, "state_dict": ...}``;
        * Lightning: ``{"hyper_parameters": {same keys but "state_dict"},
          "state_dict": {"model.<key>": ...}}`` (the LightningModule holds the
          detector as ``self.model``; other keys are ignored).

        The file is unpickled with ``weights_only=False`` (Lightning stores
        Python objects): load only checkpoints you trust.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: neither layout, or a state dict that does not fit the
                model (the message lists missing, unexpected and mis-shaped keys).
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no checkpoint file at {os.fspath(path)!r}")
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=False)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError, ImportError) as error:
            raise ValueError(f"{os.fspath(path)!r} is not a readable checkpoint "
                             f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
        hparams, state_dict = _split_checkpoint(checkpoint, path)
        model = cls.from_hyperparameters(hparams)
        _check_state_dict(model.state_dict(), state_dict, f"{os.fspath(path)!r} ({hparams['backbone']})")
        model.load_state_dict(state_dict)
        if isinstance(map_location, (str, torch.device)):
            model.to(map_location)
        return model.eval()


def _to_photo(detection: dict, scale: tuple[float, float], hw: tuple[int, int]) -> dict[str, Tensor]:
    """Network-input boxes -> photo pixels (undo :func:`letterbox`), clipped, empty ones dropped."""
    sx, sy = scale
    boxes = clip_boxes(detection["boxes"] / detection["boxes"].new_tensor([sx, sy, sx, sy]), hw)
    keep = box_area(boxes) > 0
    return {"boxes": boxes[keep], "scores": detection["scores"][keep]}


def _split_checkpoint(checkpoint, path) -> tuple[dict, dict]:
    """``(hyperparameters, state_dict)`` from either checkpoint layout."""
    if isinstance(checkpoint, dict) and "hyper_parameters" in checkpoint and "state_dict" in checkpoint:
        prefix = "model."
        state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"{os.fspath(path)!r}: Lightning checkpoint without '{prefix}*' weights; "
                             f"keys start with {sorted({k.split('.')[0] for k in checkpoint['state_dict']})}")
        return dict(checkpoint["hyper_parameters"]), state
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint and "config" in checkpoint:
        return {k: v for k, v in checkpoint.items() if k != "state_dict"}, checkpoint["state_dict"]
    keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
    raise ValueError(f"{os.fspath(path)!r} is not a YoloDetector checkpoint: expected 'state_dict' with "
                     f"'config' (YoloDetector.save) or 'hyper_parameters' (Lightning), got {keys}")


def _check_state_dict(expected: dict, given: dict, where: str) -> None:
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [f"{k}: checkpoint {list(given[k].shape)} vs model {list(expected[k].shape)}"
              for k in sorted(set(expected) & set(given)) if given[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"checkpoint {where} does not fit the model: {len(missing)} missing keys "
                         f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}, "
                         f"{len(shapes)} shape mismatches {shapes[:5]}")
