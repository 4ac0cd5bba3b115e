"""Box formats, area, IoU and validation (scratchdet.boxes)."""

import itertools

import pytest
import torch
import torchvision

from scratchdet.boxes import (
    BOX_FORMATS,
    box_area,
    box_convert,
    box_iou,
    check_boxes,
    clip_boxes,
    denormalize_boxes,
    image_hw,
    normalize_boxes,
)


def random_boxes(n, size=100.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 0.5
    return torch.cat([xy, xy + wh], dim=1)


def loop_iou(a, b):
    out = torch.zeros(len(a), len(b), dtype=a.dtype)
    for i, p in enumerate(a.tolist()):
        for j, q in enumerate(b.tolist()):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = iw * ih
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


# ---- conversions -----------------------------------------------------------
def test_convert_hand_computed():
    xyxy = torch.tensor([[10.0, 20.0, 50.0, 80.0]])
    torch.testing.assert_close(box_convert(xyxy, "xyxy", "xywh"), torch.tensor([[10.0, 20.0, 40.0, 60.0]]))
    torch.testing.assert_close(box_convert(xyxy, "xyxy", "cxcywh"), torch.tensor([[30.0, 50.0, 40.0, 60.0]]))
    torch.testing.assert_close(box_convert(torch.tensor([[30.0, 50.0, 40.0, 60.0]]), "cxcywh", "xyxy"), xyxy)


@pytest.mark.parametrize("in_fmt,out_fmt", list(itertools.permutations(BOX_FORMATS, 2)))
def test_round_trip_every_pair(in_fmt, out_fmt):
    boxes = box_convert(random_boxes(50), "xyxy", in_fmt)
    back = box_convert(box_convert(boxes, in_fmt, out_fmt), out_fmt, in_fmt)
    torch.testing.assert_close(back, boxes)


@pytest.mark.parametrize("in_fmt,out_fmt", list(itertools.permutations(BOX_FORMATS, 2)))
def test_convert_matches_torchvision(in_fmt, out_fmt):
    boxes = box_convert(random_boxes(20), "xyxy", in_fmt)
    torch.testing.assert_close(box_convert(boxes, in_fmt, out_fmt),
                               torchvision.ops.box_convert(boxes, in_fmt, out_fmt))


def test_convert_same_format_returns_copy_and_keeps_batch_dims():
    boxes = random_boxes(6).reshape(2, 3, 4)
    out = box_convert(boxes, "xyxy", "xyxy")
    assert out is not boxes and out.shape == (2, 3, 4)
    assert box_convert(boxes, "xyxy", "cxcywh").shape == (2, 3, 4)


def test_convert_rejects_unknown_format_and_shape():
    with pytest.raises(ValueError, match="'xywhr'"):
        box_convert(random_boxes(2), "xywhr", "xyxy")
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\], got \[3, 5\]"):
        box_convert(torch.zeros(3, 5), "xyxy", "xywh")


def test_normalise_round_trip_non_square():
    boxes = torch.tensor([[0.0, 0.0, 200.0, 100.0]])
    norm = normalize_boxes(boxes, (100, 200))  # (height, width)
    torch.testing.assert_close(norm, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    torch.testing.assert_close(denormalize_boxes(norm, (100, 200)), boxes)
    torch.testing.assert_close(normalize_boxes(boxes, 200), torch.tensor([[0.0, 0.0, 1.0, 0.5]]))


@pytest.mark.parametrize("bad", [0, -5, (10,), (10, 0), "256", True])
def test_image_hw_rejects(bad):
    with pytest.raises(ValueError, match="image_size"):
        image_hw(bad)


# ---- area and IoU ----------------------------------------------------------
def test_area_hand_computed_and_degenerate():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0], [5.0, 5.0, 5.0, 9.0], [4.0, 4.0, 3.0, 3.0]])
    torch.testing.assert_close(box_area(boxes), torch.tensor([6.0, 0.0, 0.0]))


def test_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0], [10.0, 10.0, 11.0, 11.0]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0, 0.0]]))


def test_iou_matches_torchvision_and_loop():
    a, b = random_boxes(40, seed=1), random_boxes(30, seed=2)
    ours = box_iou(a, b)
    assert ours.shape == (40, 30)
    torch.testing.assert_close(ours, torchvision.ops.box_iou(a, b))
    torch.testing.assert_close(ours, loop_iou(a, b))


def test_iou_float64_and_empty():
    a = random_boxes(5).double()
    assert box_iou(a, a).dtype == torch.float64
    torch.testing.assert_close(torch.diag(box_iou(a, a)), torch.ones(5, dtype=torch.float64))
    assert box_iou(torch.zeros(0, 4), a.float()).shape == (0, 5)


def test_iou_of_zero_area_boxes_is_zero_not_nan():
    z = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert box_iou(z, z).item() == 0.0


def test_iou_rejects_bad_shape():
    with pytest.raises(ValueError, match="boxes2 must have shape"):
        box_iou(random_boxes(2), torch.zeros(2, 3))


def test_clip_boxes():
    boxes = torch.tensor([[-5.0, -5.0, 10.0, 300.0], [250.0, 10.0, 400.0, 20.0]])
    clipped = clip_boxes(boxes, (200, 300))
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 0.0, 10.0, 200.0], [250.0, 10.0, 300.0, 20.0]]))
    torch.testing.assert_close(clipped, torchvision.ops.clip_boxes_to_image(boxes, (200, 300)))


# ---- validation ------------------------------------------------------------
def test_check_boxes_accepts_valid_and_empty():
    boxes = random_boxes(5)
    assert check_boxes(boxes) is boxes
    check_boxes(torch.zeros(0, 4))


@pytest.mark.parametrize(
    "boxes,match",
    [
        (torch.zeros(3, 5), r"shape \[M, 4\], got \[3, 5\]"),
        (torch.tensor([[0.0, 0.0, float("nan"), 1.0]]), r"boxes\[0\] is not finite"),
        (torch.tensor([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 4.0, 8.0]]), r"boxes\[1\].*non-positive width"),
        (torch.tensor([[1, 2, 3, 4]]), "floating point"),
    ],
)
def test_check_boxes_rejects(boxes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        check_boxes(boxes)


def test_check_boxes_formats_and_image_bounds():
    check_boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), fmt="xywh", image_size=10)
    with pytest.raises(ValueError, match="negative width or height"):
        check_boxes(torch.tensor([[0.0, 0.0, -1.0, 1.0]]), fmt="xywh", allow_degenerate=True)
    check_boxes(torch.tensor([[3.0, 3.0, 0.0, 2.0]]), fmt="xywh", allow_degenerate=True)
    with pytest.raises(ValueError, match=r"outside the image of height 10 and width 20"):
        check_boxes(torch.tensor([[15.0, 2.0, 21.0, 5.0]]), image_size=(10, 20))
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_boxes([[0, 0, 1, 1]])


def test_box_iou_paired_is_the_diagonal_of_box_iou_and_broadcasts():
    from scratchdet.boxes import box_iou_paired

    a, b = random_boxes(30, seed=3), random_boxes(30, seed=4)
    torch.testing.assert_close(box_iou_paired(a, b), torch.diag(box_iou(a, b)))
    grid = a.reshape(2, 3, 5, 4)
    out = box_iou_paired(grid, b[:5])  # (2, 3, 5) against (5,)
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out[1, 2], torch.diag(box_iou(grid[1, 2], b[:5])))
    z = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert box_iou_paired(z, z).item() == 0.0
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        box_iou_paired(torch.zeros(2, 3), torch.zeros(2, 4))


# ---- half precision and NaN (found against torchvision) ------------------------
LARGE = torch.tensor([[0, 0, 300, 300], [2, 2, 300, 300]])  # 300 * 300 overflows float16


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_iou_is_computed_in_float32_like_torchvision(dtype):
    from scratchdet.boxes import box_iou_paired

    b = LARGE.to(dtype)
    expected = torchvision.ops.box_iou(b, b)  # about 0.987 off the diagonal
    assert expected[0, 1] > 0.98
    ours = box_iou(b, b)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(box_iou_paired(b, b.flip(0)), torch.stack([expected[0, 1], expected[1, 0]]))
    torch.testing.assert_close(box_area(b), torchvision.ops.box_area(b))
    # torchvision subtracts corners before upcasting (rounded in bfloat16); here every
    # step is float32, so the result is exactly the IoU of the (exactly) upcast boxes.
    a, c = random_boxes(40, size=600.0, seed=5).to(dtype), random_boxes(30, size=600.0, seed=6).to(dtype)
    torch.testing.assert_close(box_iou(a, c), torchvision.ops.box_iou(a.float(), c.float()), atol=0, rtol=0)
    torch.testing.assert_close(box_iou(a, c), torchvision.ops.box_iou(a, c), atol=3e-3, rtol=0)


def test_nan_coordinate_gives_nan_iou_like_torchvision():
    from scratchdet.boxes import box_iou_paired

    a = torch.tensor([[0.0, 0.0, float("nan"), 10.0], [0.0, 0.0, 10.0, 10.0], [float("inf"), 0.0, float("inf"), 1.0]])
    b = torch.tensor([[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 1.0, 1.0]])
    ours, ref = box_iou(a, b), torchvision.ops.box_iou(a, b)
    assert ours[0].isnan().all() and ref[0].isnan().all()
    assert ours[2].isnan().all() and ref[2].isnan().all()  # inf - inf: no area
    torch.testing.assert_close(ours[1], ref[1])
    assert box_iou_paired(a[:2], b).isnan().tolist() == [True, False]
    z = torch.tensor([[1.0, 1.0, 1.0, 1.0]])  # finite boxes with an empty union still give 0
    assert box_iou(z, z).item() == 0.0 and box_iou_paired(z, z).item() == 0.0


def test_iou_gradient_is_finite_for_empty_unions():
    a = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]], requires_grad=True)
    from scratchdet.boxes import box_iou_paired

    box_iou_paired(a, torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 3.0, 3.0]])).sum().backward()
    assert torch.isfinite(a.grad).all()
