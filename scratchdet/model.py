"""YoloDetector: a backbone and a head -> the YOLO v1 prediction grid, or the fpn head's candidates.

With ``config.head == "fpn"`` the head is :class:`scratchdet.fpn.FPNHead` over
the backbone's last ``num_levels`` resolutions, and ``forward`` returns decoded
candidates ``Tensor[N, K, 5]`` (``(x1, y1, x2, y2, score)``, input pixels,
:func:`scratchdet.fpn.decode_levels`); :meth:`YoloDetector.raw` gives the
per-level grids the loss needs. Everything below describes the v1 head.

``forward`` maps images ``Tensor[N, 3, H, W]`` (float RGB in [0, 1], H and W
multiples of the stride ``config.cell_size``) to ``Tensor[N, S_h, S_w, B*5]``
with ``S_h = H / stride``, ``S_w = W / stride`` (S x S at the training size
``config.image_size``), per predictor ``(x, y, sqrt_w, sqrt_h, conf)``: sigmoid
on x, y and conf (cell-relative centre and confidence in [0, 1]), sqrt_w and
sqrt_h raw (decoding squares them and multiplies by the training size, so the
pixel sizes are right at any input size). ImageNet mean/std normalisation
happens inside (a buffer), so exported models take the same [0, 1] input.
``predict`` takes photos of any size, letterboxes them to the input size,
runs NMS and maps the boxes back to each photo's pixels (:func:`predict_with`,
the one inference path that the exported artifacts share).

Taught in ``notebooks/05_backbones.ipynb``.
"""

from __future__ import annotations

import math
import os
import pickle
from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from scratchdet.backbones import get_backbone
from scratchdet.boxes import box_area
from scratchdet.config import MAX_DETECTIONS, NMS_IOU_THRESHOLD, SCORE_THRESHOLD, DetectorConfig
from scratchdet.fpn import FPNHead, decode_levels
from scratchdet.letterbox import Size, check_input_size, letterbox, unletterbox_boxes
from scratchdet.nms import postprocess

__all__ = ["YoloHead", "YoloDetector", "as_image_list", "predict_with", "describe_output"]

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


def as_image_list(images: Images) -> list[Tensor]:
    """Photos -> list of float ``Tensor[3, H, W]`` RGB in [0, 1], with clear errors.

    Accepts what :meth:`YoloDetector.predict` accepts: a numpy ``(H, W, 3)``
    uint8 RGB array, a ``Tensor[3, H, W]`` (uint8, or float in [0, 1]), a
    ``Tensor[N, 3, H, W]``, or a list of these with different sizes.
    """
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
        self.image_size = config.image_size  # the training input size (boxes decode relative to it)
        self.stride = config.cell_size  # inputs are multiples of it; the grid is (H/stride, W/stride)
        self.backbone = get_backbone(backbone, config, preset, **backbone_kwargs)
        assert self.backbone.stride == config.cell_size, "backbones derive their stride from the config"
        in_channels = self.backbone.out_channels
        default = min(in_channels, 128) if config.head == "v1" else 64
        head_channels = default if head_channels is None else head_channels
        if not isinstance(head_channels, int) or isinstance(head_channels, bool) or head_channels <= 0:
            raise ValueError(f"head_channels must be a positive int or None, got {head_channels!r}")
        if config.head == "v1":
            self.head = YoloHead(in_channels, head_channels, config)
        else:
            self.head = FPNHead(self.backbone.pyramid_channels(config.num_levels), head_channels, config)
        self.hyperparameters = {"config": config.to_dict(), "backbone": backbone, "preset": preset,
                                "backbone_kwargs": dict(backbone_kwargs), "head_channels": head_channels}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        sigmoid = torch.tensor([True, True, False, False, True]).repeat(config.boxes_per_cell)
        self.register_buffer("sigmoid_mask", sigmoid, persistent=False)  # (B*5,)

    def forward(self, images: Tensor) -> Tensor:
        """``Tensor[N, 3, H, W]`` float RGB in [0, 1] -> ``Tensor[N, H/stride, W/stride, B*5]``.

        H and W are any multiples of the stride (``config.cell_size``); the
        grid follows the input: ``S_h = H / stride`` rows, ``S_w = W / stride``
        columns (S x S at ``config.image_size``). Per predictor ``(x, y,
        sqrt_w, sqrt_h, conf)``: x, y, conf through a sigmoid, sqrt_w, sqrt_h
        raw, relative to the *training* size ``config.image_size`` (decode
        multiplies by it). Works in train and eval mode.
        """
        return self.decode(self.raw(images))

    def decode(self, raw: Tensor | list[Tensor]) -> Tensor:
        """:meth:`raw` -> :meth:`forward`'s output: v1's grid as it is; fpn's levels as candidates ``Tensor[N, K, 5]``."""
        return raw if self.config.head == "v1" else decode_levels(raw, self.config)

    def raw(self, images: Tensor) -> Tensor | list[Tensor]:
        """What the loss compares with targets: v1: the grid of :meth:`forward`; fpn: one
        ``Tensor[N, 5, H / s_l, W / s_l]`` of raw ``(obj, tx, ty, tw, th)`` per level, finest first."""
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):  # export: the Dims state it
            self._check_images(images)
        images = (images - self.mean) / self.std
        if self.config.head != "v1":
            return self.head(self.backbone.pyramid(images, self.config.num_levels))
        raw = self.head(self.backbone(images)).permute(0, 2, 3, 1)  # (N, S_h, S_w, B*5)
        return torch.where(self.sigmoid_mask, raw.sigmoid(), raw)

    def _check_images(self, images: Tensor) -> None:
        stride = self.stride
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % stride or images.shape[3] % stride \
                or images.shape[2] == 0 or images.shape[3] == 0:
            raise ValueError(f"images must have shape [N, 3, H, W] with H and W positive multiples of the "
                             f"stride {stride} (config.cell_size), got {list(images.shape)}; "
                             "use predict() for photos of any size")
        if not images.is_floating_point():
            raise TypeError(f"images must be float RGB in [0, 1], got dtype {images.dtype}")

    @torch.no_grad()
    def predict(self, images: Images, image_size: Size | None = None, score_threshold: float = SCORE_THRESHOLD,
                iou_threshold: float = NMS_IOU_THRESHOLD,
                max_detections: int = MAX_DETECTIONS) -> list[dict[str, Tensor]]:
        """Detect faces in photos of any size, at any network input size.

        Each photo is letterboxed to ``image_size``
        (:func:`scratchdet.letterbox.letterbox`), the batch runs through
        ``forward`` in eval mode (the previous mode is restored),
        :func:`scratchdet.nms.postprocess` decodes the ``(H/stride, W/stride)``
        grid and keeps the best boxes, which are mapped back to the photo's
        pixels (:func:`scratchdet.letterbox.unletterbox_boxes`); boxes left with
        zero area (in the padding) are dropped. See :func:`predict_with`.

        Args:
            images: a numpy ``(H, W, 3)`` uint8 RGB array, a ``Tensor[3, H, W]``
                (float in [0, 1] or uint8), a ``Tensor[N, 3, H, W]``, or a list
                of these with different sizes.
            image_size: network input, an int (square) or ``(height, width)``,
                multiples of ``config.cell_size``; default ``config.image_size``.
                Larger inputs give finer grids (more cells for small faces).
            score_threshold, iou_threshold, max_detections: as in ``postprocess``.

        Returns:
            One dict per photo, ``{"boxes": Tensor[K, 4], "scores": Tensor[K]}``,
            boxes xyxy in that photo's pixels, sorted by decreasing score, on
            the model's device.
        """
        was_training = self.training
        self.eval()
        try:
            return predict_with(self, self.config, images, image_size, score_threshold, iou_threshold,
                                max_detections, device=self.mean.device)
        finally:
            self.train(was_training)

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


def describe_output(config: DetectorConfig) -> str:
    """What ``YoloDetector.forward`` returns for this config, in words (for export metadata and messages)."""
    if config.head == "v1":
        return (f"grid float32 [N, H/{config.cell_size}, W/{config.cell_size}, {config.channels}] of "
                f"(x, y, sqrt_w, sqrt_h, conf) per predictor")
    cells = " + ".join(f"(H/{s})(W/{s})" for s in config.strides)
    return f"candidates float32 [N, K, 5] of (x1, y1, x2, y2, score) in input pixels, K = {cells}"


def predict_with(grid_fn: Callable[[Tensor], Tensor], config: DetectorConfig, images: Images,
                 image_size: Size | None = None, score_threshold: float = SCORE_THRESHOLD,
                 iou_threshold: float = NMS_IOU_THRESHOLD, max_detections: int = MAX_DETECTIONS,
                 device: torch.device | str = "cpu") -> list[dict[str, Tensor]]:
    """The one inference path: letterbox, ``grid_fn``, ``postprocess``, back to photo pixels.

    :meth:`YoloDetector.predict` passes the model itself; the exported
    artifacts (:mod:`scratchdet.export`) pass their torch.export module or ONNX
    Runtime session, so all of them share these steps.

    Args:
        grid_fn: ``Tensor[N, 3, H, W]`` float in [0, 1] -> the network output
            (v1: ``Tensor[N, H/stride, W/stride, B*5]``; fpn: ``Tensor[N, K, 5]``).
        config: the model's config (stride ``cell_size``, training size, B).
        images, image_size, score_threshold, iou_threshold, max_detections:
            as in :meth:`YoloDetector.predict`.
        device: where the letterboxed batch goes before ``grid_fn``.

    Returns:
        One ``{"boxes": Tensor[K, 4] xyxy photo pixels, "scores": Tensor[K]}`` per photo.
    """
    size = check_input_size(config.image_size if image_size is None else image_size, config.cell_size)
    photos = [p.to(device) for p in as_image_list(images)]
    if not photos:
        return []
    boxed = [letterbox(p, size) for p in photos]  # (3, h, w) each, and (scale_y, scale_x)
    grid = grid_fn(torch.stack([b[0] for b in boxed]))  # v1: (N, h/stride, w/stride, B*5); fpn: (N, K, 5)
    detections = postprocess(grid, config, score_threshold, iou_threshold, max_detections, input_size=size)
    out = []
    for found, (_, scale), photo in zip(detections, boxed, photos):
        boxes = unletterbox_boxes(found["boxes"], scale, tuple(photo.shape[-2:]))  # (K, 4) photo pixels
        keep = box_area(boxes) > 0
        out.append({"boxes": boxes[keep], "scores": found["scores"][keep]})
    return out


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
