"""Albumentations pipelines: boxes follow the image, the letterbox (scratchdet.letterbox's, re-exported), drop counts."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402

from scratchdet.data.transforms import (  # noqa: E402
    PAD_VALUE,
    DetectionTransform,
    eval_transforms,
    letterbox_scale,
    train_transforms,
    unletterbox_boxes,
)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _random_boxes(h: int, w: int, m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, [w - 10, h - 10], size=(m, 2))
    wh = rng.uniform(2, 0.5 * min(h, w), size=(m, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)  # may stick out: clipped


def test_flip_matches_hand_computed() -> None:
    image = _image(60, 100)
    flip = DetectionTransform([A.HorizontalFlip(p=1.0)])
    out, boxes, info = flip(image, np.array([[10, 20, 30, 50]], np.float32))
    np.testing.assert_array_equal(out, image[:, ::-1])
    np.testing.assert_allclose(boxes, [[100 - 30, 20, 100 - 10, 50]])  # x -> W - x, ends swap
    assert info["kept_ids"].tolist() == [0]


def test_train_pipeline_flip_only_matches_hand_computed() -> None:
    off = {"color_p": 0, "blur_p": 0, "noise_p": 0}
    transform = train_transforms(64, scale=(1, 1), translate=0, flip_p=1, seed=0, **off)
    _, boxes, _ = transform(_image(64, 64), np.array([[4, 8, 20, 40]], np.float32))
    np.testing.assert_allclose(boxes, [[44, 8, 60, 40]], atol=1e-3)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("hw", [(300, 400), (256, 256), (90, 60)])
def test_train_output_size_and_boxes_inside(seed: int, hw: tuple[int, int]) -> None:
    transform = train_transforms(128, min_box_size=4.0, seed=seed)
    image, boxes, info = transform(_image(*hw, seed), _random_boxes(*hw, m=8, seed=seed))
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert boxes.dtype == np.float32 and boxes.shape[1] == 4
    assert (boxes >= 0).all() and (boxes <= 128).all()
    assert (boxes[:, 2:] - boxes[:, :2] >= 4.0).all()
    assert len(boxes) + info["dropped_by_augmentation"] + info["dropped_small"] == 8


def test_train_is_deterministic_under_a_seed() -> None:
    image, boxes = _image(200, 300), _random_boxes(200, 300, m=5, seed=1)
    runs = []
    for seed in (3, 3, 4):
        transform = train_transforms(96, seed=seed)
        runs.append([transform(image, boxes)[:2] for _ in range(4)])
    for (im_a, b_a), (im_b, b_b) in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(im_a, im_b)
        np.testing.assert_array_equal(b_a, b_b)
    assert any(not np.array_equal(a[0], c[0]) for a, c in zip(runs[0], runs[2]))


def test_letterbox_maps_a_known_box() -> None:
    image = _image(100, 200)
    out, boxes, _ = eval_transforms(256)(image, np.array([[20, 10, 60, 50]], np.float32))
    assert out.shape == (256, 256, 3)
    np.testing.assert_allclose(boxes, [[25.6, 12.8, 76.8, 64.0]], rtol=1e-5)  # scale 256 / 200
    assert (out[128:] == PAD_VALUE).all()  # padded at the bottom only (top-left placement)
    assert letterbox_scale((100, 200), 256) == (1.28, 1.28)
    back = unletterbox_boxes(torch.from_numpy(boxes), letterbox_scale((100, 200), 256), (100, 200))
    torch.testing.assert_close(back, torch.tensor([[20.0, 10.0, 60.0, 50.0]]))


@pytest.mark.parametrize("hw", [(100, 300), (333, 517), (480, 640), (77, 31)])
def test_letterbox_scale_mirrors_albumentations(hw: tuple[int, int]) -> None:
    h, w = hw
    box = np.array([[0, 0, w, h]], np.float32)  # the whole image
    out, boxes, _ = eval_transforms(160)(_image(h, w), box)
    scale_y, scale_x = letterbox_scale(hw, 160)
    np.testing.assert_allclose(boxes, [[0, 0, w * scale_x, h * scale_y]], rtol=1e-5)
    assert (out[round(h * scale_y):] == PAD_VALUE).all() and (out[:, round(w * scale_x):] == PAD_VALUE).all()
    back = unletterbox_boxes(torch.from_numpy(boxes), (scale_y, scale_x), hw)
    torch.testing.assert_close(back, torch.from_numpy(box))


def test_dropped_boxes_are_counted() -> None:
    transform = DetectionTransform([A.Crop(x_min=0, y_min=0, x_max=50, y_max=50)], min_box_size=4.0)
    boxes = np.array([[5, 5, 25, 25], [10, 10, 13, 30], [60, 60, 80, 80], [45, 45, 70, 70]], np.float32)
    image, kept, info = transform(_image(100, 100), boxes)
    assert image.shape == (50, 50, 3)
    # [60, 60, 80, 80] is outside the crop; [45, 45, 70, 70] keeps 5 x 5 px, [10, 10, 13, 30] is 3 px wide
    np.testing.assert_allclose(kept, [[5, 5, 25, 25], [45, 45, 50, 50]])
    assert info == {**info, "boxes_in": 4, "dropped_by_augmentation": 1, "dropped_small": 1}
    assert info["kept_ids"].tolist() == [0, 3]
    transform(_image(100, 100), boxes)
    assert (transform.dropped, transform.boxes_seen) == (4, 8)


def test_min_visibility_drops_mostly_cropped_boxes() -> None:
    transform = DetectionTransform([A.Crop(x_min=0, y_min=0, x_max=50, y_max=50)], min_visibility=0.3)
    _, kept, info = transform(_image(100, 100), np.array([[45, 45, 70, 70]], np.float32))  # 4% left
    assert kept.shape == (0, 4) and info["dropped_by_augmentation"] == 1


def test_empty_and_out_of_image_boxes() -> None:
    image, boxes, _ = train_transforms(64, seed=0)(_image(64, 64), np.zeros((0, 4), np.float32))
    assert image.shape == (64, 64, 3) and boxes.shape == (0, 4)
    outside = np.array([[-10, -10, 20, 20], [70, 0, 90, 9]], np.float32)
    _, boxes, _ = eval_transforms(64)(_image(64, 64), outside)
    np.testing.assert_allclose(boxes, [[0, 0, 20, 20]])  # clipped; the second lies outside


def test_bad_inputs_raise_clear_errors() -> None:
    transform = eval_transforms(64)
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\) RGB, got float32"):
        transform(np.zeros((8, 8, 3), np.float32), np.zeros((0, 4)))
    with pytest.raises(TypeError, match="numpy array"):
        transform(torch.zeros(8, 8, 3), np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"shape \(M, 4\)"):
        transform(_image(8, 8), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        eval_transforms(0)
    with pytest.raises(ValueError, match="min_box_size"):
        train_transforms(64, min_box_size=-1)


def test_photo_level_keeps_the_geometry_contract_and_is_seeded() -> None:
    image, boxes = _image(200, 300), _random_boxes(200, 300, m=6, seed=2)
    outs = [train_transforms(128, seed=5, photometric="photo")(image, boxes) for _ in range(2)]
    for out_image, out_boxes, info in outs:
        assert out_image.shape == (128, 128, 3) and out_image.dtype == np.uint8
        assert (out_boxes >= 0).all() and (out_boxes <= 128).all()
        assert len(out_boxes) + info["dropped_by_augmentation"] + info["dropped_small"] == 6
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    names = {type(t).__name__ for t in train_transforms(128, photometric="photo").compose.transforms}
    assert {"ImageCompression", "ToGray", "RandomGamma"} <= names


def test_photo_level_changes_how_an_image_looks_more_than_basic() -> None:
    """Over many draws, 'photo' moves pixels further from the letterboxed image (lighting, grey, JPEG)."""
    flat = np.full((128, 128, 3), (200, 120, 60), np.uint8)  # one colour: geometry cannot change it
    boxes = np.zeros((0, 4), np.float32)
    change = {}
    for level in ("basic", "photo"):
        transform = train_transforms(128, seed=0, photometric=level, scale=(1.0, 1.0), translate=0.0)
        change[level] = np.mean([np.abs(transform(flat, boxes)[0].astype(float) - flat).mean() for _ in range(40)])
    assert change["photo"] > 1.2 * change["basic"] > 0


@pytest.mark.parametrize("level", ["strong", "", None])
def test_unknown_photometric_level_is_rejected(level) -> None:
    with pytest.raises(ValueError, match="photometric"):
        train_transforms(128, photometric=level)
