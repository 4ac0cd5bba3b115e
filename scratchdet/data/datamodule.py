"""From a dataset source to batches: ``DetectionDataset``, collate, ``FaceDataModule``.

A *source* (``SynthFaces``, ``WiderFace``, or anything with ``__len__`` and
``__getitem__(i) -> (image uint8 (H, W, 3) RGB, boxes float32 (M, 4) xyxy
pixels)``) becomes a torch ``Dataset`` of ``(Tensor[3, H, W] float in [0, 1],
Tensor[M, 4] xyxy pixels)``; :func:`collate_detections` stacks the images and
keeps the boxes as a list, since M differs between images.

Taught in ``notebooks/02_data.ipynb``.
"""

from __future__ import annotations

import os
from typing import Callable, Literal, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, get_worker_info

from scratchdet.data.cache import resolve_data_root
from scratchdet.data.labelled import LABELLED_FORMATS, open_labelled
from scratchdet.data.photos import as_box_array, check_rgb_image
from scratchdet.data.synthfaces import SynthFaces
from scratchdet.data.transforms import PHOTOMETRIC_LEVELS, DetectionTransform, eval_transforms, train_transforms
from scratchdet.data.wider import WiderFace, find_wider_root

__all__ = ["DATASETS", "DetectionDataset", "collate_detections", "FaceDataModule"]

DATASETS = ("synthfaces", "wider", *LABELLED_FORMATS)


class DetectionDataset(Dataset):
    """A torch ``Dataset`` over a source, with an optional transform.

    Args:
        source: ``len(source)`` and ``source[i] -> (image, boxes)``, image
            ``uint8 (H, W, 3)`` RGB, boxes ``float32 (M, 4)`` xyxy pixels.
        transform: a callable ``(image, boxes) -> (image, boxes[, info])`` on
            numpy arrays, e.g. :func:`~scratchdet.data.transforms.train_transforms`;
            ``None`` keeps the source's images as they are.

    ``dataset[i]`` is ``(image Tensor[3, H, W] float32 in [0, 1],
    boxes Tensor[M, 4] float32 xyxy pixels of that image)``.
    """

    def __init__(self, source: Sequence, transform: Callable | None = None) -> None:
        if not hasattr(source, "__len__") or not hasattr(source, "__getitem__"):
            raise TypeError(f"source must have __len__ and __getitem__, got {type(source).__name__}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, boxes = self.source[i]
        check_rgb_image(image, f"source[{i}] image")
        boxes = as_box_array(boxes, np.float32, f"source[{i}] boxes")
        if self.transform is not None:
            image, boxes = self.transform(image, boxes)[:2]
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W)
        return image.float().div_(255.0), torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32))


def collate_detections(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, list[Tensor]]:
    """Stack ``(image Tensor[3, H, W], boxes Tensor[M_i, 4])`` pairs into a batch.

    Returns:
        ``images Tensor[N, 3, H, W]`` and a list of N ``Tensor[M_i, 4]`` xyxy boxes.

    Raises:
        ValueError: the batch is empty or its images differ in size (resize them
            with a transform such as ``eval_transforms(image_size)``).
    """
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    shapes = [tuple(image.shape) for image, _ in batch]
    if len(set(shapes)) > 1:
        raise ValueError(
            f"images in a batch must share one size, got {sorted(set(shapes))}; resize them "
            "with a transform, e.g. scratchdet.data.eval_transforms(image_size)"
        )
    images = torch.stack([image for image, _ in batch])  # (N, 3, H, W)
    return images, [boxes for _, boxes in batch]


def _seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker (and each epoch) its own augmentation seed.

    Workers are copies of the dataset, so without this every worker would
    repeat the same random augmentations. ``torch.initial_seed()`` differs by
    worker (and by epoch, were workers not persistent) and follows the
    loader's seeded generator, so runs stay reproducible.
    """
    info = get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if isinstance(transform, DetectionTransform):
        transform.set_seed(torch.initial_seed() % 2**32)


def _subset(source: Sequence, size: int | None, seed: int, name: str) -> Sequence:
    """A seeded random subset of ``size`` items of ``source`` (all of it if ``None``)."""
    if size is None or size >= len(source):
        return source
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"{name} must be a positive int or None, got {size!r}")
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))
    return Subset(source, sorted(order[:size].tolist()))


def _positive_int(value: object, name: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class FaceDataModule(pl.LightningDataModule):
    """Train, val and test loaders for SynthFaces, WIDER FACE or your own labelled images.

    Args:
        dataset: ``"synthfaces"`` (generated, no download), ``"wider"``, or your
            own data: ``"coco"``, ``"yolo"``, ``"voc"`` or ``"imglab"`` (see
            :func:`~scratchdet.data.labelled.open_labelled`).
        root: data folder: the SynthFaces cache, and where WIDER FACE is looked
            for when ``wider_root`` is ``None`` (``root`` or ``root/widerface``);
            ``None``: :func:`scratchdet.data.cache.default_data_root`.
        image_size: side of the square network input, in pixels.
        batch_size: images per batch.
        num_workers: DataLoader worker processes (0: load in the main process).
        augment: random augmentation for training (:func:`train_transforms`);
            ``False`` letterboxes only, e.g. to overfit one batch.
        train_size: number of training images (``None``: the split's default
            size; for WIDER FACE a seeded random subset).
        val_size: number of validation images (as ``train_size``).
        test_size: number of test images (as ``train_size``).
        seed: seed of the shuffling order and of the augmentations.
        wider_root: the WIDER FACE folder (see :func:`~scratchdet.data.wider.find_wider_root`).
        annotations: your own data's training annotations (COCO JSON file, VOC
            XML folder, imglab XML file; unused for YOLO), image names relative
            to ``root``; ``None``: ``root/annotations.json`` (COCO), ``root``
            (VOC), ``root/training.xml`` (imglab).
        val_annotations: your own data's val and test annotations, as
            ``annotations``; ``None``: the training ones (a check, not a
            measurement). YOLO uses ``root/images/{train,val}`` instead.
        category: your own data's face category (COCO name or id, YOLO class
            id, VOC class name); ``None``: the only one in the annotations.
        photometric: training colour augmentation, ``"basic"`` or ``"photo"``
            (adds the look of a photograph: lighting, shadows, grey, defocus,
            low resolution, sensor noise, JPEG; see :func:`train_transforms`).

    Batches are ``(images Tensor[N, 3, H, W] in [0, 1], list of N
    Tensor[M_i, 4] xyxy pixels)`` with ``H = W = image_size``. WIDER FACE's
    test split has no public boxes, so ``"test"`` uses its val split; so does
    your own data. To train
    on another source, subclass and override :meth:`build_source`.
    """

    def __init__(
        self,
        dataset: str = "synthfaces",
        root: str | os.PathLike | None = None,
        image_size: int = 256,
        batch_size: int = 16,
        num_workers: int = 0,
        augment: bool = True,
        train_size: int | None = None,
        val_size: int | None = None,
        seed: int = 0,
        wider_root: str | os.PathLike | None = None,
        test_size: int | None = None,
        annotations: str | None = None,
        val_annotations: str | None = None,
        category: str | None = None,
        photometric: Literal["basic", "photo"] = "basic",
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        self.images = None if root is None else str(root)  # own data: image names are relative to it
        self.annotations = {"train": annotations, "val": val_annotations or annotations}
        self.category = category
        if photometric not in PHOTOMETRIC_LEVELS:
            raise ValueError(f"photometric must be one of {PHOTOMETRIC_LEVELS}, got {photometric!r}")
        self.photometric = photometric
        if dataset in LABELLED_FORMATS and root is None and annotations is None:
            raise ValueError(f"dataset {dataset!r} needs root (its images) or annotations")
        self.dataset, self.root, self.augment, self.seed = dataset, resolve_data_root(root), bool(augment), seed
        self.image_size = _positive_int(image_size, "image_size")
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.num_workers = _positive_int(num_workers, "num_workers", minimum=0)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        for split, size in self.sizes.items():
            if size is not None:
                _positive_int(size, f"{split}_size")
        self.wider_root = None
        if dataset == "wider":
            self.wider_root = find_wider_root(self.root if wider_root is None else wider_root)
        self.save_hyperparameters()
        self.datasets: dict[str, DetectionDataset] = {}
        self._generator = torch.Generator().manual_seed(seed)

    def build_source(self, split: str) -> Sequence:
        """The source of ``split`` (``"train"``, ``"val"`` or ``"test"``), before transforms."""
        size = self.sizes[split]
        if self.dataset == "synthfaces":
            return SynthFaces(split=split, image_size=self.image_size, num_images=size, root=self.root)
        if self.dataset in LABELLED_FORMATS:
            source = open_labelled(self.dataset, self.annotations["train" if split == "train" else "val"],
                                   self.images, split, self.category, on_error="skip")
            print(f"{self.dataset} {split}: {source.report}")
            return _subset(source, size, self.seed, f"{split}_size")
        # Malformed records, missing and truncated images are counted skips, reported once here.
        source = WiderFace(self.wider_root, split="val" if split == "test" else split, on_error="skip")
        if source.report.skipped_records or source.report.dropped["missing_image"] \
                or source.report.dropped["damaged_image"]:
            print(f"WIDER FACE {source.split}: {source.report}")
        return _subset(source, size, self.seed, f"{split}_size")

    def build_transform(self, split: str) -> DetectionTransform:
        """Random augmentation for ``"train"`` (if ``augment``), a letterbox otherwise."""
        if split == "train" and self.augment:
            return train_transforms(self.image_size, seed=self.seed, photometric=self.photometric)
        return eval_transforms(self.image_size)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets that ``stage`` needs (Lightning calls this)."""
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage, ("train", "val", "test")):
            if split not in self.datasets:
                self.datasets[split] = DetectionDataset(self.build_source(split), self.build_transform(split))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.datasets[split] = DetectionDataset(self.build_source(split), self.build_transform(split))
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_detections,
            generator=self._generator if shuffle else None,
            worker_init_fn=_seed_worker,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches, augmented if ``augment``."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order, letterboxed."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order, letterboxed (WIDER FACE: its val split)."""
        return self._loader("test", shuffle=False)
