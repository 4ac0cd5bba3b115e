"""nms / batched_nms against torchvision.ops and a slow greedy loop; postprocess against a per-image loop."""

import pytest
import torch
import torchvision

from scratchdet.boxes import box_area, box_iou, clip_boxes
from scratchdet.config import DetectorConfig
from scratchdet.grid import decode_grid, input_hw
from scratchdet.nms import batched_nms, nms, postprocess


def random_boxes(n, seed, size=500.0, max_wh=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * max_wh + 1
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


def clustered_boxes(n, seed, faces=20):
    """YOLO-like output: many jittered copies of a few face boxes."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(faces, 2, generator=g) * 400 + 50
    sizes = torch.rand(faces, 1, generator=g) * 60 + 10
    which = torch.randint(0, faces, (n,), generator=g)
    ctr = centres[which] + torch.randn(n, 2, generator=g) * sizes[which] * 0.15
    wh = sizes[which] * (1 + 0.2 * torch.randn(n, 2, generator=g)).abs()
    return torch.cat([ctr - wh / 2, ctr + wh / 2], dim=1), torch.rand(n, generator=g)


def loop_nms(boxes, scores, iou_threshold):
    """Textbook greedy NMS, one Python step per box (the slow reference)."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))  # Python sort is stable
    iou = box_iou(boxes, boxes)
    keep, removed = [], set()
    for i in order:
        if i in removed:
            continue
        keep.append(i)
        removed.update(j for j in order if iou[i, j] > iou_threshold)
    return torch.tensor(keep, dtype=torch.long)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 257, 1000])
@pytest.mark.parametrize("iou_threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("make", [random_boxes, clustered_boxes])
def test_nms_equals_torchvision(n, iou_threshold, make):
    boxes, scores = make(n, seed=n)
    keep = nms(boxes, scores, iou_threshold)
    assert keep.dtype == torch.long
    assert torch.equal(keep, torchvision.ops.nms(boxes, scores, iou_threshold))


@pytest.mark.parametrize("seed", range(3))
def test_nms_equals_slow_loop(seed):
    boxes, scores = clustered_boxes(60, seed)
    assert torch.equal(nms(boxes, scores, 0.45), loop_nms(boxes, scores, 0.45))


def test_nms_10000_boxes():
    boxes, scores = clustered_boxes(10_000, seed=0, faces=300)
    assert torch.equal(nms(boxes, scores, 0.45), torchvision.ops.nms(boxes, scores, 0.45))


@pytest.mark.parametrize("levels", [1, 2, 5])
def test_ties_keep_input_order_like_torchvision(levels):
    boxes, _ = clustered_boxes(600, seed=levels)
    scores = torch.randint(0, levels, (600,), generator=torch.Generator().manual_seed(1)).float()
    assert torch.equal(nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))


def test_identical_boxes():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 60.0]]).repeat(5, 1)
    for scores in (torch.ones(5), torch.tensor([0.1, 0.9, 0.9, 0.3, 0.9])):
        keep = nms(boxes, scores, 0.5)
        assert torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.5))
    assert keep.tolist() == [1]  # best score, first of the tied


def test_empty_input():
    keep = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.dtype == torch.long and keep.shape == (0,)
    keep = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert keep.shape == (0,)


def test_threshold_compared_like_torchvision():
    # IoU = 1/3 exactly representable? No: float32(1/3) > 1/3 (double), so torchvision
    # suppresses at threshold 1/3; comparing in float32 would wrongly keep the box.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    iou = box_iou(boxes[:1], boxes[1:]).item()
    for t in (1 / 3, iou, 0.3333333, 0.33333334, 0.5, 0.25):
        assert torch.equal(nms(boxes, scores, t), torchvision.ops.nms(boxes, scores, t)), t


def test_long_suppression_chain():
    # Boxes sliding right by 1 px, each overlapping its neighbour above the threshold:
    # greedy keeps every other box; the fixed point needs one round per link.
    x = torch.arange(700, dtype=torch.float32)
    boxes = torch.stack([x, torch.zeros_like(x), x + 4, torch.ones_like(x) * 4], dim=1)
    scores = torch.linspace(1, 0, 700)
    keep = nms(boxes, scores, 0.5)
    assert torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.5))
    assert torch.equal(keep[:30], loop_nms(boxes[:60], scores[:60], 0.5)[:30])


def test_boxes_apart_in_one_direction_never_suppress():
    # Overlapping in x, apart in y (and the reverse): a negative height must not give a positive
    # intersection, even at threshold 0 where any IoU > 0 suppresses.
    boxes = torch.tensor([[0.0, 0, 10, 10], [2, 20, 12, 30], [20, 2, 30, 12], [25, 5, 35, 15]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    for t in (0.0, 0.1, 0.5):
        keep = nms(boxes, scores, t)
        assert torch.equal(keep, torchvision.ops.nms(boxes, scores, t))
    assert nms(boxes, scores, 0.0).tolist() == [0, 1, 2]


def test_inputs_that_require_grad():
    boxes, scores = clustered_boxes(50, seed=4)
    boxes.requires_grad_(True)
    scores.requires_grad_(True)
    keep = nms(boxes, scores, 0.45)
    assert not keep.requires_grad
    assert torch.equal(keep, torchvision.ops.nms(boxes.detach(), scores.detach(), 0.45))


def test_zero_area_boxes_and_float64():
    boxes, scores = random_boxes(200, seed=3)
    boxes[::7, 2] = boxes[::7, 0]  # zero width
    assert torch.equal(nms(boxes, scores, 0.4), torchvision.ops.nms(boxes, scores, 0.4))
    b64, s64 = boxes.double(), scores.double()
    assert torch.equal(nms(b64, s64, 0.4), torchvision.ops.nms(b64, s64, 0.4))


@pytest.mark.parametrize("n", [10, 300, 1500])
def test_batched_nms_equals_torchvision_and_per_group_loop(n):
    boxes, scores = clustered_boxes(n, seed=n)
    idxs = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(0))
    keep = batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(keep, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))
    per_group = torch.cat([torch.nonzero(idxs == g).squeeze(1)[nms(boxes[idxs == g], scores[idxs == g], 0.5)]
                           for g in range(4)])
    assert torch.equal(keep, per_group[torch.sort(scores[per_group], descending=True, stable=True).indices])


@pytest.mark.parametrize(
    "boxes, scores, threshold, error, match",
    [
        (torch.zeros(3, 5), torch.zeros(3), 0.5, ValueError, r"shape \[M, 4\]"),
        (torch.zeros(4), torch.zeros(1), 0.5, ValueError, r"shape \[M, 4\]"),
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(3), 0.5, TypeError, "floating point"),
        ([[0.0, 0.0, 1.0, 1.0]], torch.zeros(1), 0.5, TypeError, "torch.Tensor"),
        (torch.tensor([[0.0, 0, 1, 1]] * 3), torch.zeros(2), 0.5, ValueError, r"scores must have shape \[K\] = \[3\]"),
        (torch.tensor([[0.0, 0, 1, 1]] * 2), torch.zeros(2, 1), 0.5, ValueError, "scores must have shape"),
        (torch.tensor([[0.0, 0, 1, 1]] * 2), torch.tensor([0.5, float("nan")]), 0.5, ValueError,
         r"scores must be finite, got scores\[1\] = nan"),
        (torch.tensor([[0.0, 0, 1, 1]] * 2), torch.tensor([float("inf"), 0.0]), 0.5, ValueError, "finite"),
        (torch.tensor([[0.0, 0, 1, 1]] * 2), torch.tensor([1, 2]), 0.5, TypeError, "scores must be a floating"),
        (torch.tensor([[0.0, 0, 1, 1], [0, float("nan"), 1, 1]]), torch.zeros(2), 0.5, ValueError,
         r"boxes\[1\] is not finite"),
        (torch.tensor([[0.0, 0, 1, 1], [5, 0, 1, 1]]), torch.zeros(2), 0.5, ValueError,
         r"boxes\[1\].*negative width or height"),
        (torch.zeros(1, 4), torch.zeros(1), 1.5, ValueError, r"iou_threshold must be a number in \[0, 1\], got 1.5"),
        (torch.zeros(1, 4), torch.zeros(1), -0.1, ValueError, "iou_threshold"),
        (torch.zeros(1, 4), torch.zeros(1), "0.5", ValueError, "iou_threshold"),
    ],
)
def test_nms_bad_input(boxes, scores, threshold, error, match):
    with pytest.raises(error, match=match):
        nms(boxes, scores, threshold)


def test_batched_nms_bad_idxs():
    boxes, scores = random_boxes(3, 0)
    with pytest.raises(TypeError, match="idxs must be an integer"):
        batched_nms(boxes, scores, torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"idxs must have shape \[K\] = \[3\]"):
        batched_nms(boxes, scores, torch.zeros(2, dtype=torch.long), 0.5)


# ---------------------------------------------------------------- postprocess

CONFIG = DetectorConfig(image_size=64, num_cells=4, boxes_per_cell=2)


def random_grid(n, seed):
    g = torch.Generator().manual_seed(seed)
    grid = torch.rand(n, 4, 4, 10, generator=g)  # x, y, conf in [0, 1], sqrt sizes in [0, 1]
    grid[..., 2::5] *= 0.6  # sqrt_w
    grid[..., 3::5] *= 0.6
    return grid


def loop_postprocess(grid, config, score_threshold, iou_threshold, max_detections):
    """One image at a time with torchvision: the reference for the batched version."""
    out = []
    for pred in grid:
        boxes, scores = decode_grid(pred[None], config)
        input_size = (pred.shape[0] * config.cell_size, pred.shape[1] * config.cell_size)  # (Sh, Sw) * stride
        boxes, scores = clip_boxes(boxes[0], input_size), scores[0]
        keep = (scores >= score_threshold) & (box_area(boxes) > 0)
        boxes, scores = boxes[keep], scores[keep]
        kept = torchvision.ops.nms(boxes, scores, iou_threshold)[:max_detections]
        out.append({"boxes": boxes[kept], "scores": scores[kept]})
    return out


@pytest.mark.parametrize("score_threshold, iou_threshold, max_detections",
                         [(0.25, 0.45, 100), (0.0, 0.5, 100), (0.5, 0.3, 3), (0.99, 0.45, 100), (1.0, 0.45, 5)])
def test_postprocess_equals_per_image_loop(score_threshold, iou_threshold, max_detections):
    grid = random_grid(5, seed=1)
    ours = postprocess(grid, CONFIG, score_threshold, iou_threshold, max_detections)
    ref = loop_postprocess(grid, CONFIG, score_threshold, iou_threshold, max_detections)
    assert len(ours) == 5
    for a, b in zip(ours, ref):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
        assert len(a["scores"]) <= max_detections
        assert torch.all(a["scores"][:-1] >= a["scores"][1:])


def test_postprocess_merges_duplicates_of_one_face():
    # Two predictors in neighbouring cells fire on the same 24 x 24 face centred at (32, 32).
    grid = torch.zeros(1, 4, 4, 10)
    side = (24 / 64) ** 0.5
    grid[0, 1, 1, 0:5] = torch.tensor([0.95, 0.95, side, side, 0.9])  # cell (1, 1), centre (31.2, 31.2)
    grid[0, 2, 2, 5:10] = torch.tensor([0.05, 0.05, side, side, 0.8])  # cell (2, 2), centre (32.8, 32.8)
    grid[0, 0, 3, 0:5] = torch.tensor([0.5, 0.5, 0.3, 0.3, 0.6])  # another, separate face
    out = postprocess(grid, CONFIG)
    assert out[0]["scores"].tolist() == pytest.approx([0.9, 0.6])
    torch.testing.assert_close(out[0]["boxes"][0], torch.tensor([19.2, 19.2, 43.2, 43.2]))


def test_postprocess_empty_batch_and_no_detections():
    assert postprocess(torch.zeros(0, 4, 4, 10), CONFIG) == []
    out = postprocess(torch.zeros(2, 4, 4, 10), CONFIG)
    assert [len(d["boxes"]) for d in out] == [0, 0] and out[0]["boxes"].shape == (0, 4)


@pytest.mark.parametrize(
    "grid, kwargs, error, match",
    [
        (torch.zeros(1, 4, 4, 5), {}, ValueError, r"shape \[N, Sh, Sw, 10\] with any Sh, Sw >= 1.*got \[1, 4, 4, 5\]"),
        (torch.zeros(4, 4, 10), {}, ValueError, r"shape \[N, Sh, Sw, 10\].*got \[4, 4, 10\]"),
        (torch.zeros(1, 4, 0, 10), {}, ValueError, r"Sh, Sw >= 1.*got \[1, 4, 0, 10\]"),
        (torch.zeros(1, 4, 4, 10, dtype=torch.long), {}, TypeError, "floating point"),
        (torch.full((1, 4, 4, 10), float("nan")), {}, ValueError, "NaN"),
        (torch.zeros(1, 4, 4, 10), {"score_threshold": 2.0}, ValueError, "score_threshold"),
        (torch.zeros(1, 4, 4, 10), {"iou_threshold": -1.0}, ValueError, "iou_threshold"),
        (torch.zeros(1, 4, 4, 10), {"max_detections": 0}, ValueError, "max_detections must be a positive int"),
    ],
)
def test_postprocess_bad_input(grid, kwargs, error, match):
    with pytest.raises(error, match=match):
        postprocess(grid, CONFIG, **kwargs)


def test_postprocess_needs_a_config():
    with pytest.raises(TypeError, match="DetectorConfig"):
        postprocess(torch.zeros(1, 4, 4, 10), {"num_cells": 4})


@pytest.mark.parametrize("sh,sw", [(3, 7), (4, 4), (9, 2), (1, 1)])
def test_postprocess_any_input_size_equals_per_image_loop(sh, sw):
    grid = torch.rand(3, sh, sw, 10, generator=torch.Generator().manual_seed(sh * 10 + sw))
    grid[..., 2::5] *= 0.6
    grid[..., 3::5] *= 0.6
    ours = postprocess(grid, CONFIG, 0.1, 0.45, 100)
    ref = loop_postprocess(grid, CONFIG, 0.1, 0.45, 100)
    for a, b in zip(ours, ref):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


def test_postprocess_clips_to_a_non_square_input():
    # CONFIG: 64 px input, 4 cells, stride 16. A 6 x 10 grid is a 96 x 160 (height x width) input.
    grid = torch.zeros(1, 6, 10, 10)
    grid[0, 5, 9, 0:5] = torch.tensor([0.9, 0.9, 1.0, 1.0, 0.9])  # 64 x 64 face centred at (158.4, 94.4)
    grid[0, 0, 0, 0:5] = torch.tensor([0.1, 0.1, 0.5, 0.5, 0.8])  # 16 x 16 face centred at (1.6, 1.6)
    assert input_hw(grid, CONFIG) == (96, 160)
    out = postprocess(grid, CONFIG)[0]
    assert out["scores"].tolist() == pytest.approx([0.9, 0.8])
    torch.testing.assert_close(out["boxes"], torch.tensor([[126.4, 62.4, 160.0, 96.0], [0.0, 0.0, 9.6, 9.6]]))


def test_postprocess_at_the_training_grid_keeps_its_old_clip():
    # Same content at 4 x 4 (the training grid, 64 px) and inside a 4 x 8 grid: the box that
    # crosses x = 64 is clipped at the training input, and not inside the wider one.
    grid = torch.zeros(1, 4, 8, 10)
    grid[0, 1, 3, 0:5] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.9])  # 16 px face centred at (56, 24)
    wide, square = postprocess(grid, CONFIG)[0], postprocess(grid[:, :, :4].contiguous(), CONFIG)[0]
    torch.testing.assert_close(wide["boxes"], torch.tensor([[48.0, 16.0, 64.0, 32.0]]))
    torch.testing.assert_close(square["boxes"], torch.tensor([[48.0, 16.0, 64.0, 32.0]]))
    grid[0, 1, 3, 0] = 0.9  # centre x 62.4: spills over the 64 px training input
    torch.testing.assert_close(postprocess(grid, CONFIG)[0]["boxes"][0, 2], torch.tensor(70.4))
    torch.testing.assert_close(postprocess(grid[:, :, :4].contiguous(), CONFIG)[0]["boxes"][0, 2], torch.tensor(64.0))


# ---------------------------------------------------------------- half precision, randomized equality

def test_half_precision_large_boxes_are_not_kept_twice():
    b = torch.tensor([[0, 0, 300, 300], [2, 2, 300, 300]])  # IoU 0.987; 300 * 300 overflows float16
    s = torch.tensor([0.9, 0.8])
    for dtype in (torch.float16, torch.bfloat16):
        assert nms(b.to(dtype), s.to(dtype), 0.5).tolist() == [0]
        assert batched_nms(b.to(dtype), s.to(dtype), torch.zeros(2, dtype=torch.long), 0.5).tolist() == [0]


def yolo_like(seed):
    """Clustered boxes of a random count, with score ties and some duplicated boxes."""
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 600, (1,), generator=g))
    boxes, scores = clustered_boxes(n, seed, faces=int(torch.randint(1, 30, (1,), generator=g)))
    boxes = boxes * float(torch.rand(1, generator=g) * 4 + 0.5)  # faces of about 5 to 300 px
    if seed % 3 == 0:
        scores = torch.randint(0, 4, (n,), generator=g).float() / 4  # many ties
    if seed % 4 == 0:
        copies = torch.randint(0, n, (n // 5,), generator=g)
        boxes[: len(copies)] = boxes[copies]  # exact duplicates
    return boxes, scores


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_nms_randomized_clustered_cases_equal_torchvision(dtype):
    """Many YOLO-like cases of random sizes across both regimes (dense and blocks).

    torchvision's CPU kernel has no float16 / bfloat16: its reference is the same
    boxes upcast to float32 (exact), which is what nms computes with.
    """
    for seed in range(60):
        boxes, scores = yolo_like(seed)
        boxes, scores = boxes.to(dtype), scores.to(dtype)
        threshold = (0.3, 0.45, 0.5, 0.7)[seed % 4]
        wide = torch.float64 if dtype == torch.float64 else torch.float32
        ref = torchvision.ops.nms(boxes.to(wide), scores.to(wide), threshold)
        assert torch.equal(nms(boxes, scores, threshold), ref), (seed, len(boxes))
        idxs = torch.randint(0, 3, (len(boxes),), generator=torch.Generator().manual_seed(seed))
        ref = torchvision.ops.batched_nms(boxes.to(wide), scores.to(wide), idxs, threshold)
        assert torch.equal(batched_nms(boxes, scores, idxs, threshold), ref), (seed, len(boxes))
