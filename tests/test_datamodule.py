"""DetectionDataset, collate_detections and FaceDataModule on fake and real sources."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from scratchdet.data import datamodule  # noqa: E402
from scratchdet.data.datamodule import DetectionDataset, FaceDataModule, collate_detections  # noqa: E402
from scratchdet.data.transforms import eval_transforms  # noqa: E402
from test_wider import write_fixture  # noqa: E402


class FakeSource:
    """``num_images`` random images of varied sizes with 0-3 boxes each."""

    def __init__(self, num_images: int = 10, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.items = []
        for i in range(num_images):
            h, w = rng.integers(40, 120, size=2)
            xy = rng.uniform(0, [w / 2, h / 2], size=(i % 4, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(8, 20, size=(i % 4, 2))], axis=1)
            self.items.append((rng.integers(0, 256, (h, w, 3), dtype=np.uint8), boxes.astype(np.float32)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.items[i]


class FakeModule(FaceDataModule):
    def build_source(self, split: str) -> FakeSource:
        return FakeSource({"train": 10, "val": 5, "test": 3}[split], seed=len(split))


def test_dataset_converts_without_transform() -> None:
    source = FakeSource()
    image, boxes = DetectionDataset(source)[3]
    raw_image, raw_boxes = source[3]
    assert image.dtype == torch.float32 and image.shape == (3, *raw_image.shape[:2])
    torch.testing.assert_close(image, torch.from_numpy(raw_image).permute(2, 0, 1).float() / 255)
    assert 0 <= image.min() and image.max() <= 1
    torch.testing.assert_close(boxes, torch.from_numpy(raw_boxes))
    assert DetectionDataset(source)[0][1].shape == (0, 4)


def test_dataset_with_letterbox() -> None:
    source = FakeSource()
    image, boxes = DetectionDataset(source, eval_transforms(64))[1]
    assert image.shape == (3, 64, 64) and boxes.dtype == torch.float32
    h, w = source[1][0].shape[:2]
    expected = eval_transforms(64)(*source[1])[1]
    torch.testing.assert_close(boxes, torch.from_numpy(expected))
    assert (boxes <= 64).all() and len(boxes) == 1 and max(h, w) != 64


def test_dataset_rejects_bad_items() -> None:
    source = [(np.zeros((8, 8, 3), np.float32), np.zeros((0, 4)))]
    with pytest.raises(ValueError, match=r"source\[0\] image must be a uint8 array \(H, W, 3\)"):
        DetectionDataset(source)[0]
    with pytest.raises(ValueError, match=r"source\[0\] boxes must have shape \(M, 4\)"):
        DetectionDataset([(np.zeros((8, 8, 3), np.uint8), np.zeros((4, 5)))])[0]
    with pytest.raises(TypeError, match="__len__ and __getitem__"):
        DetectionDataset(42)
    with pytest.raises(TypeError, match="transform must be callable"):
        DetectionDataset(source, transform="flip")


def test_collate_stacks_images_and_lists_boxes() -> None:
    dataset = DetectionDataset(FakeSource(), eval_transforms(32))
    images, boxes = collate_detections([dataset[i] for i in range(4)])
    assert images.shape == (4, 3, 32, 32)
    assert [b.shape[0] for b in boxes] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="share one size"):
        collate_detections([DetectionDataset(FakeSource())[i] for i in range(2)])
    with pytest.raises(ValueError, match="empty batch"):
        collate_detections([])


def _epoch(loader) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    return [batch for batch in loader]


def _assert_same(a, b) -> None:
    for (images_a, boxes_a), (images_b, boxes_b) in zip(a, b, strict=True):
        torch.testing.assert_close(images_a, images_b)
        for x, y in zip(boxes_a, boxes_b, strict=True):
            torch.testing.assert_close(x, y)


@pytest.mark.parametrize("augment", [False, True])
def test_datamodule_batches_are_seeded(augment: bool) -> None:
    module = FakeModule(image_size=32, batch_size=4, augment=augment, seed=1)
    module.setup("fit")
    loader = module.train_dataloader()
    first, second = _epoch(loader), _epoch(loader)
    assert [tuple(images.shape) for images, _ in first] == [(4, 3, 32, 32), (4, 3, 32, 32), (2, 3, 32, 32)]
    assert all((b >= 0).all() and (b <= 32).all() for _, boxes in first for b in boxes)
    again = FakeModule(image_size=32, batch_size=4, augment=augment, seed=1).train_dataloader()
    _assert_same(first, _epoch(again))
    assert not torch.equal(first[0][0], second[0][0])  # a new order (and augmentation) each epoch


def test_val_and_test_loaders_keep_order() -> None:
    module = FakeModule(image_size=32, batch_size=2)
    module.setup()
    (images, boxes), *_ = _epoch(module.val_dataloader())
    expected = [module.datasets["val"][i] for i in range(2)]
    _assert_same([(images, boxes)], [collate_detections(expected)])
    assert sum(len(b) for _, b in _epoch(module.test_dataloader())) == 3


class SameImageModule(FaceDataModule):
    def build_source(self, split: str) -> list:
        return [FakeSource(4, seed=5)[3]] * 6  # one image six times: only augmentation differs


def test_worker_loading_is_reproducible() -> None:
    module = SameImageModule(image_size=32, batch_size=6, num_workers=1, seed=2)
    loader = module.train_dataloader()
    (first, _), (second, _) = _epoch(loader)[0], _epoch(loader)[0]
    assert not torch.equal(first, second)
    assert not torch.equal(first[0], first[1])
    again_module = SameImageModule(image_size=32, batch_size=6, num_workers=1, seed=2)
    (again, _) = _epoch(again_module.train_dataloader())[0]
    torch.testing.assert_close(first, again)


def test_seed_worker_gives_each_worker_its_own_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = SameImageModule(image_size=32, seed=0).train_dataloader().dataset
    image, boxes = FakeSource(4, seed=5)[3]
    monkeypatch.setattr(datamodule, "get_worker_info", lambda: SimpleNamespace(id=0, dataset=dataset))
    outputs = []
    for worker_seed in (11, 12, 11):  # what torch.initial_seed() is inside each worker
        torch.manual_seed(worker_seed)
        datamodule._seed_worker(0)
        outputs.append(dataset.transform(image, boxes)[0])
    assert not np.array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])


def test_datamodule_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dataset must be one of"):
        FaceDataModule("imagenet")  # coco is a format now (tests/test_formats.py)
    with pytest.raises(FileNotFoundError, match="no WIDER FACE annotations found"):
        FaceDataModule("wider", root=tmp_path)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        FaceDataModule(batch_size=0)
    with pytest.raises(ValueError, match="train_size must be an int >= 1"):
        FaceDataModule(train_size=-3)


def test_datamodule_on_wider_fixture(tmp_path: Path) -> None:
    write_fixture(tmp_path / "widerface")
    module = FaceDataModule("wider", root=tmp_path, image_size=64, batch_size=3, augment=False)
    images, boxes = next(iter(module.train_dataloader()))
    assert images.shape == (3, 3, 64, 64) and sum(len(b) for b in boxes) == 3
    assert len(module.datasets["train"]) == 3
    assert len(module.test_dataloader().dataset) == 1  # WIDER FACE test = its val split
    subset = FaceDataModule("wider", wider_root=tmp_path / "widerface", image_size=64, train_size=2)
    assert len(subset.train_dataloader().dataset) == 2


def test_datamodule_on_synthfaces(tmp_path: Path) -> None:
    synthfaces = pytest.importorskip("scratchdet.data.synthfaces")
    if not hasattr(synthfaces, "SynthFaces"):
        pytest.skip("SynthFaces is not written yet")
    module = FaceDataModule(root=tmp_path, image_size=64, batch_size=2, train_size=4, val_size=2, test_size=2)
    images, boxes = next(iter(module.train_dataloader()))
    assert images.shape == (2, 3, 64, 64) and len(boxes) == 2
    assert len(module.val_dataloader().dataset) == 2 and len(module.test_dataloader().dataset) == 2


def test_photometric_level_reaches_the_training_transform(tmp_path):
    from scratchdet.data.datamodule import FaceDataModule

    dm = FaceDataModule(root=tmp_path, photometric="photo")
    names = {type(t).__name__ for t in dm.build_transform("train").compose.transforms}
    assert "ImageCompression" in names
    assert "ImageCompression" not in {type(t).__name__ for t in dm.build_transform("val").compose.transforms}
    with pytest.raises(ValueError, match="photometric must be one of"):
        FaceDataModule(root=tmp_path, photometric="strong")
