"""scratchdet.letterbox: one geometry for torch and Albumentations, and its inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scratchdet.config import PAD_VALUE
from scratchdet.data.transforms import eval_transforms
from scratchdet.letterbox import check_input_size, letterbox, letterbox_scale, letterbox_shape, unletterbox_boxes

SHAPES = [(300, 500), (100, 80), (128, 128), (37, 611), (1000, 3), (600, 512)]


@pytest.mark.parametrize("hw", SHAPES)
def test_albumentations_eval_transform_lands_on_the_shared_geometry(hw):
    ones = np.full((*hw, 3), 255, np.uint8)
    image, _, _ = eval_transforms(128)(ones, np.zeros((0, 4), np.float32))
    photo = image[..., 0] == 255  # where the photo is; the rest is PAD_VALUE grey
    new_h, new_w = letterbox_shape(hw, 128)
    assert photo[:new_h, :new_w].all() and not photo[new_h:].any() and not photo[:, new_w:].any()
    assert (image[~photo] == PAD_VALUE).all()


@pytest.mark.parametrize("hw", SHAPES)
@pytest.mark.parametrize("size", [128, (96, 160), (160, 96)])
def test_torch_letterbox_has_the_shared_geometry(hw, size):
    padded, scale = letterbox(torch.ones(3, *hw), size)
    th, tw = (size, size) if isinstance(size, int) else size
    new_h, new_w = letterbox_shape(hw, size)
    assert padded.shape == (3, th, tw)
    photo = padded[0] > 0.75  # photo pixels are 1, padding PAD_VALUE / 255 = 0.45
    assert photo[:new_h, :new_w].all() and not photo[new_h:].any() and not photo[:, new_w:].any()
    assert (padded[0][~photo] == PAD_VALUE / 255).all()
    assert scale == letterbox_scale(hw, size) == (new_h / hw[0], new_w / hw[1])
    assert new_h == th or new_w == tw  # one side fills the input


def test_albumentations_and_torch_move_a_box_the_same_way():
    boxes = np.array([[20.0, 10.0, 120.0, 90.0]], np.float32)
    _, moved, _ = eval_transforms(256)(np.zeros((100, 200, 3), np.uint8), boxes)
    scale_y, scale_x = letterbox(torch.zeros(3, 100, 200), 256)[1]
    np.testing.assert_allclose(moved, boxes * [scale_x, scale_y, scale_x, scale_y], atol=1e-3)
    assert letterbox_scale((100, 200), 256) == (1.28, 1.28)


@pytest.mark.parametrize("hw, size", [((300, 500), 256), ((37, 611), (480, 320)), ((90, 140), (256, 384))])
def test_unletterbox_is_the_inverse(hw, size):
    rng = torch.Generator().manual_seed(0)
    xy = torch.rand(20, 2, generator=rng) * torch.tensor([hw[1], hw[0]]) * 0.8
    boxes = torch.cat([xy, xy + torch.rand(20, 2, generator=rng) * 10 + 1], dim=1).clamp(max=min(hw))
    boxes = torch.minimum(boxes, torch.tensor([hw[1], hw[0], hw[1], hw[0]], dtype=torch.float32))
    _, (sy, sx) = letterbox(torch.zeros(3, *hw), size)
    there = boxes * torch.tensor([sx, sy, sx, sy])
    torch.testing.assert_close(unletterbox_boxes(there, (sy, sx), hw), boxes)


def test_unletterbox_clips_to_the_photo():
    back = unletterbox_boxes(torch.tensor([[200.0, 100.0, 260.0, 140.0]]), (1.0, 1.0), (120, 220))
    assert back.tolist() == [[200.0, 100.0, 220.0, 120.0]]


@pytest.mark.parametrize("call, match", [
    (lambda: letterbox(torch.zeros(10, 10), 64), r"Tensor\[3, H, W\], got torch.Size\(\[10, 10\]\)"),
    (lambda: letterbox(torch.zeros(3, 10, 10), (64,)), r"size must be a positive int or \(height, width\)"),
    (lambda: letterbox_shape((0, 5), 64), r"image_size must be a positive int"),
    (lambda: unletterbox_boxes(torch.zeros(4), (1.0, 1.0), 10), r"Tensor\[M, 4\] xyxy, got torch.Size\(\[4\]\)"),
    (lambda: check_input_size(100, 32), r"image_size 100 must be a multiple of the model's stride 32.*\(96, 96\)"),
])
def test_errors_name_the_bad_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_input_hw():
    assert check_input_size(480, 32) == (480, 480) and check_input_size((256, 384), 32) == (256, 384)
