"""YOLO grid encoding and decoding (scratchdet.grid), against a loop reference."""

import math

import numpy as np
import pytest
import torch

from scratchdet.config import DetectorConfig
from scratchdet.grid import (
    assign_cells,
    cells_to_boxes,
    check_grid,
    collision_rates,
    collision_stats,
    decode_grid,
    decode_targets,
    encode_targets,
    encode_targets_batch,
    gather_boxes,
    input_hw,
)


def random_boxes(m, size=256, seed=0, min_side=2.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(m, 2, generator=g, dtype=torch.float64) * (size / 2 - min_side) + min_side
    xy = torch.rand(m, 2, generator=g, dtype=torch.float64) * (size - wh)
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def distinct_cell_boxes(config, m, seed=0):
    """m boxes whose centres fall in m different cells (random cells, random offsets)."""
    g = torch.Generator().manual_seed(seed)
    S, cell = config.num_cells, config.cell_size
    flat = torch.randperm(S * S, generator=g)[:m]
    centre = torch.stack([flat % S, flat // S], 1) * cell + (torch.rand(m, 2, generator=g) * 0.98 + 0.01) * cell
    half = torch.minimum(centre, config.image_size - centre) * torch.rand(m, 2, generator=g).clamp(0.05, 1)
    return torch.cat([centre - half, centre + half], 1)  # (m, 4) inside the image


def loop_encode(boxes, num_cells, image_size):
    """Slow reference: one Python step per box, the documented rules spelled out."""
    h, w = image_size
    out = torch.zeros(num_cells, num_cells, 5, dtype=torch.float64)
    best_area = {}
    for x1, y1, x2, y2 in boxes.double().tolist():
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        gx, gy = cx * num_cells / w, cy * num_cells / h
        j, i = min(int(math.floor(gx)), num_cells - 1), min(int(math.floor(gy)), num_cells - 1)
        area = (x2 - x1) * (y2 - y1)
        if (i, j) in best_area and best_area[(i, j)] >= area:  # keep largest, earlier on ties
            continue
        best_area[(i, j)] = area
        out[i, j] = torch.tensor([gx - j, gy - i, (x2 - x1) / w, (y2 - y1) / h, 1.0])
    return out


def loop_decode_grid(pred, config):
    """Slow reference for any grid Sh x Sw: centres from the stride, sizes from the training input."""
    sh, sw, B, size, stride = pred.shape[0], pred.shape[1], config.boxes_per_cell, config.image_size, config.cell_size
    boxes, scores = [], []
    for i in range(sh):
        for j in range(sw):
            for b in range(B):
                x, y, sqrt_w, sqrt_h, conf = pred[i, j, 5 * b: 5 * b + 5].tolist()
                cx, cy, w, h = (j + x) * stride, (i + y) * stride, sqrt_w**2 * size, sqrt_h**2 * size
                boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                scores.append(conf)
    return torch.tensor(boxes), torch.tensor(scores)


# ---- encode against the loop -----------------------------------------------
@pytest.mark.parametrize("num_cells,image_size", [(4, 256), (7, 224), (8, 256), (13, 416)])
@pytest.mark.parametrize("m,seed", [(0, 0), (1, 1), (5, 2), (60, 3)])
def test_encode_matches_loop(num_cells, image_size, m, seed):
    config = DetectorConfig(image_size=image_size, num_cells=num_cells)
    boxes = random_boxes(m, image_size, seed)
    got = encode_targets(boxes, config)
    assert got.shape == (num_cells, num_cells, 5) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), loop_encode(boxes, num_cells, (image_size, image_size)),
                               atol=1e-5, rtol=0)


def test_encode_non_square_image_size_matches_loop():
    boxes = random_boxes(40, 200, seed=5) * torch.tensor([1.5, 1.0, 1.5, 1.0])  # inside 200 x 300
    got = encode_targets(boxes, DetectorConfig(num_cells=8), image_size=(200, 300))
    torch.testing.assert_close(got.double(), loop_encode(boxes, 8, (200, 300)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_equals_stacked_single(seed):
    config = DetectorConfig()
    batch = [random_boxes(m, seed=seed + k) for k, m in enumerate([3, 0, 17, 1])]
    expected = torch.stack([encode_targets(b, config) for b in batch])
    torch.testing.assert_close(encode_targets_batch(batch, config), expected, atol=0, rtol=0)


def test_batch_of_no_images():
    assert encode_targets_batch([], DetectorConfig()).shape == (0, 8, 8, 5)


def test_encode_keeps_dtype():
    boxes = random_boxes(4, dtype=torch.float64)
    assert encode_targets(boxes, DetectorConfig()).dtype == torch.float64


# ---- round trips -------------------------------------------------------------
@pytest.mark.parametrize("num_cells,image_size,m", [(8, 256, 1), (8, 256, 64), (7, 224, 20), (16, 256, 100)])
def test_round_trip_distinct_cells(num_cells, image_size, m):
    config = DetectorConfig(image_size=image_size, num_cells=num_cells)
    boxes = distinct_cell_boxes(config, m, seed=m)
    targets = encode_targets(boxes, config)
    assert int(targets[..., 4].sum()) == m
    rows, cols, _ = assign_cells(boxes, num_cells, image_size)
    order = torch.argsort(rows * num_cells + cols)  # decode returns row-major cell order
    torch.testing.assert_close(decode_targets(targets, config), boxes[order], atol=1e-4, rtol=0)


def test_round_trip_batched():
    config = DetectorConfig()
    batch = [distinct_cell_boxes(config, m, seed=m) for m in (3, 0, 10)]
    for boxes, decoded in zip(batch, decode_targets(encode_targets_batch(batch, config), config)):
        assert len(decoded) == len(boxes)
        torch.testing.assert_close(box_sort(decoded), box_sort(boxes), atol=1e-4, rtol=0)


def box_sort(boxes):
    return boxes[torch.argsort(boxes[:, 0] * 1e4 + boxes[:, 1])]


def test_decode_grid_inverts_targets():
    """Predictions built from the targets (sqrt of w, h; conf = obj) decode to the faces."""
    config = DetectorConfig(boxes_per_cell=1)
    boxes = distinct_cell_boxes(config, 12, seed=4)
    targets = encode_targets(boxes, config)
    pred = torch.cat([targets[..., :2], targets[..., 2:4].sqrt(), targets[..., 4:]], -1)  # (S, S, 5)
    decoded, scores = decode_grid(pred, config)
    torch.testing.assert_close(decoded[scores > 0.5], decode_targets(targets, config), atol=1e-4, rtol=0)


# ---- edge cases ---------------------------------------------------------------
@pytest.mark.parametrize(
    "box,cell,offset",
    [
        ([0.0, 0.0, 64.0, 64.0], (1, 1), (0.0, 0.0)),  # centre (32, 32): on a border -> right/below
        ([0.0, 0.0, 256.0, 256.0], (4, 4), (0.0, 0.0)),  # whole image: centre on the middle border
        ([0.0, 0.0, 10.0, 10.0], (0, 0), (5 / 32, 5 / 32)),  # touches the top-left corner
        ([246.0, 246.0, 256.0, 256.0], (7, 7), (27 / 32, 27 / 32)),  # touches the bottom-right
        ([100.0, 0.0, 156.0, 40.0], (0, 4), (0.0, 20 / 32)),  # touches the top edge, x on a border
        ([-0.0005, 96.0, 20.0, 160.0], (4, 0), (10 / 32, 0.0)),  # 0.5e-3 px outside: clipped
        ([236.0, 236.0, 256.0005, 256.0005], (7, 7), (22 / 32, 22 / 32)),  # same at the bottom right
    ],
)
def test_edge_boxes(box, cell, offset):
    config = DetectorConfig()
    t = encode_targets(torch.tensor([box]), config)
    assert t[..., 4].nonzero().tolist() == [list(cell)]
    torch.testing.assert_close(t[cell][:2], torch.tensor(offset), atol=1e-6, rtol=0)


def test_centre_on_right_and_bottom_image_edge_goes_to_last_cell():
    # A zero-width box on the edge (allowed in collision counts) has its centre exactly there.
    rows, cols, kept = assign_cells(torch.tensor([[250.0, 250.0, 256.0, 256.0]]), 8, 256)
    assert (rows.item(), cols.item()) == (7, 7)
    stats = collision_stats([torch.tensor([[256.0, 256.0, 256.0, 256.0], [250.0, 250.0, 256.0, 256.0]])], 8, 256)
    assert stats["lost"] == 1 and stats["crowded_cells"] == 1


def test_empty_image_gives_all_zero_targets():
    t = encode_targets(torch.zeros(0, 4), DetectorConfig())
    assert t.shape == (8, 8, 5) and not t.any()
    assert decode_targets(t, DetectorConfig()).shape == (0, 4)


# ---- collisions -----------------------------------------------------------------
@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
def test_collision_keeps_largest_face_in_any_order(order):
    boxes = torch.tensor([[40.0, 40.0, 50.0, 50.0], [35.0, 35.0, 57.0, 57.0], [44.0, 44.0, 48.0, 48.0]])[order]
    t = encode_targets(boxes, DetectorConfig())
    assert t[..., 4].sum() == 1
    torch.testing.assert_close(t[1, 1, 2:4], torch.tensor([22 / 256, 22 / 256]))
    _, _, kept = assign_cells(boxes, 8, 256)
    assert kept.tolist() == [order[k] == 1 for k in range(3)]


def test_exact_pixel_area_tie_goes_to_earlier_box_in_encode_and_assign_cells():
    # Both 45 px^2 in the same cell, but (3 / 448) * (15 / 448) rounds above (5 / 448) * (9 / 448)
    # in float32: comparing normalised areas gave the cell to the second box.
    config = DetectorConfig(image_size=448, num_cells=7)
    boxes = torch.tensor([[94.5, 88.5, 97.5, 103.5], [93.5, 91.5, 98.5, 100.5]])
    _, _, kept = assign_cells(boxes, 7, 448)
    assert kept.tolist() == [True, False]
    targets = encode_targets(boxes, config)
    torch.testing.assert_close(decode_targets(targets, config), boxes[:1])
    torch.testing.assert_close(encode_targets_batch([boxes, boxes.flip(0)], config)[1].double(),
                               loop_encode(boxes.flip(0), 7, (448, 448)), atol=1e-5, rtol=0)


def test_collision_tie_goes_to_earlier_box():
    boxes = torch.tensor([[40.0, 40.0, 50.0, 50.0], [42.0, 42.0, 52.0, 52.0]])  # same area, same cell
    _, _, kept = assign_cells(boxes, 8, 256)
    assert kept.tolist() == [True, False]
    torch.testing.assert_close(encode_targets(boxes, DetectorConfig())[1, 1, 0], torch.tensor(13 / 32))


def loop_collisions(boxes_list, num_cells, sizes):
    faces, occupied = 0, set()
    for n, (boxes, (h, w)) in enumerate(zip(boxes_list, sizes)):
        for x1, y1, x2, y2 in boxes.tolist():
            j = min(int((x1 + x2) / 2 * num_cells / w), num_cells - 1)
            i = min(int((y1 + y2) / 2 * num_cells / h), num_cells - 1)
            faces += 1
            occupied.add((n, i, j))
    return faces, faces - len(occupied)


@pytest.mark.parametrize("num_cells", [1, 3, 7, 8, 32])
def test_collision_stats_match_loop(num_cells):
    sizes = [(256, 256), (120, 300), (200, 100)]
    boxes = [random_boxes(m, min(s), seed=m) * torch.tensor([s[1], s[0]] * 2) / min(s)
             for m, s in zip((30, 0, 80), sizes)]
    stats = collision_stats(boxes, num_cells, sizes)
    faces, lost = loop_collisions(boxes, num_cells, sizes)
    assert (stats["faces"], stats["lost"], stats["images"]) == (faces, lost, 3)
    assert stats["lost_fraction"] == pytest.approx(lost / faces)


def test_collision_stats_hand_computed_and_rates():
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 8.0, 8.0], [200.0, 200.0, 210.0, 210.0]]),
             np.array([[0.0, 0.0, 10.0, 10.0]], dtype=np.float32)]
    stats = collision_stats(boxes, 8, 256)
    assert stats == {"num_cells": 8, "images": 2, "faces": 4, "lost": 1, "lost_fraction": 0.25, "crowded_cells": 1}
    assert [r["lost"] for r in collision_rates(boxes, 256, num_cells=(1, 8, 64))] == [2, 1, 1]
    assert collision_stats([torch.zeros(0, 4)], 8, 256)["lost_fraction"] == 0.0


def test_gather_boxes_from_a_source():
    class Source:
        samples = [(np.zeros((40, 60, 3), np.uint8), np.array([[1, 2, 3, 4]], np.float32)),
                   (np.zeros((50, 50, 3), np.uint8), np.zeros((0, 4), np.float32))]

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, i):
            return self.samples[i]

    boxes, sizes = gather_boxes(Source())
    assert sizes == [(40, 60), (50, 50)] and [b.shape for b in boxes] == [(1, 4), (0, 4)]
    assert collision_stats(boxes, 4, sizes)["faces"] == 1


# ---- decode_grid ---------------------------------------------------------------
@pytest.mark.parametrize("num_cells,boxes_per_cell", [(8, 2), (7, 1), (4, 3)])
def test_decode_grid_matches_loop(num_cells, boxes_per_cell):
    config = DetectorConfig(image_size=num_cells * 32, num_cells=num_cells, boxes_per_cell=boxes_per_cell)
    pred = torch.randn(2, num_cells, num_cells, config.channels, generator=torch.Generator().manual_seed(0))
    boxes, scores = decode_grid(pred, config)
    assert boxes.shape == (2, num_cells**2 * boxes_per_cell, 4) and scores.shape == boxes.shape[:2]
    for n in range(2):
        ref_boxes, ref_scores = loop_decode_grid(pred[n], config)
        torch.testing.assert_close(boxes[n], ref_boxes, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(scores[n], ref_scores)
    single_boxes, single_scores = decode_grid(pred[1], config)  # unbatched
    torch.testing.assert_close(single_boxes, boxes[1])
    torch.testing.assert_close(single_scores, scores[1])


@pytest.mark.parametrize("sh,sw", [(6, 10), (1, 1), (15, 8)])
def test_decode_grid_any_input_size_matches_loop(sh, sw):
    config = DetectorConfig(image_size=256, num_cells=8, boxes_per_cell=2)  # stride 32
    pred = torch.rand(2, sh, sw, 10, generator=torch.Generator().manual_seed(sh * sw))
    boxes, scores = decode_grid(pred, config)
    assert boxes.shape == (2, sh * sw * 2, 4) and scores.shape == (2, sh * sw * 2)
    for n in range(2):
        ref_boxes, ref_scores = loop_decode_grid(pred[n], config)
        torch.testing.assert_close(boxes[n], ref_boxes, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(scores[n], ref_scores)
    single_boxes, _ = decode_grid(pred[0], config)  # unbatched
    torch.testing.assert_close(single_boxes, boxes[0])
    assert input_hw(pred, config) == (sh * 32, sw * 32)


def test_same_cell_content_decodes_to_the_same_pixel_size_at_any_grid():
    config = DetectorConfig(image_size=256, num_cells=8, boxes_per_cell=1)
    side = (40 / 256) ** 0.5  # a 40 px face at the training size
    sizes = {}
    for s in (8, 15):  # 256 px and 480 px inputs
        pred = torch.zeros(1, s, s, 5)
        pred[0, 3, 5] = torch.tensor([0.5, 0.25, side, side, 0.9])
        boxes, scores = decode_grid(pred, config)
        box = boxes[0, scores[0].argmax()]
        torch.testing.assert_close(box, torch.tensor([5.5 * 32 - 20, 3.25 * 32 - 20, 5.5 * 32 + 20, 3.25 * 32 + 20]))
        sizes[s] = (box[2:] - box[:2]).tolist()
    assert sizes[8] == sizes[15] == pytest.approx([40.0, 40.0])


def test_decode_at_the_training_grid_is_unchanged():
    # The formula of every earlier version: normalised by S, then times the image size.
    config = DetectorConfig(image_size=224, num_cells=7, boxes_per_cell=2)
    pred = torch.rand(3, 7, 7, 10, generator=torch.Generator().manual_seed(3))
    cells = pred.unflatten(-1, (2, 5))
    old = cells_to_boxes(cells[..., 0:2], cells[..., 2:4].square(), 7) * 224
    assert torch.equal(decode_grid(pred, config)[0], old.reshape(3, 98, 4))


def test_check_grid_is_strict_unless_any_size():
    config = DetectorConfig()
    check_grid(torch.zeros(2, 6, 10, 10), config, "pred", batched=True, any_size=True)
    with pytest.raises(ValueError, match=r"pred must have shape \[N, 8, 8, 10\].*got \[2, 6, 10, 10\]"):
        check_grid(torch.zeros(2, 6, 10, 10), config, "pred", batched=True)
    with pytest.raises(ValueError, match=r"targets must have shape \[N, 8, 8, 5\]"):
        decode_targets(torch.zeros(1, 6, 10, 5), config)  # targets live on the training grid
    with pytest.raises(ValueError, match=r"\[N, Sh, Sw, 10\] with any Sh, Sw >= 1"):
        check_grid(torch.zeros(6, 10, 10), config, "pred", batched=True, any_size=True)


def test_decode_grid_negative_sqrt_is_safe():
    pred = torch.full((1, 8, 8, 10), -0.5)
    boxes, _ = decode_grid(pred, DetectorConfig())
    assert torch.isfinite(boxes).all() and ((boxes[..., 2:] - boxes[..., :2]) >= 0).all()


def test_cells_to_boxes_is_differentiable():
    xy = torch.rand(2, 4, 4, 1, 2, requires_grad=True)
    cells_to_boxes(xy, torch.rand(2, 4, 4, 1, 2), 4).sum().backward()
    assert torch.isfinite(xy.grad).all()


# ---- bad input --------------------------------------------------------------------
@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda c: encode_targets(np.zeros((1, 4), np.float32), c), TypeError, "torch.Tensor"),
        (lambda c: encode_targets(torch.zeros(1, 4, dtype=torch.long), c), TypeError, "floating point"),
        (lambda c: encode_targets(torch.zeros(4), c), ValueError, r"shape \[M, 4\]"),
        (lambda c: encode_targets(torch.tensor([[0.0, 0, 300, 10]]), c), ValueError, "outside the image"),
        (lambda c: encode_targets(torch.tensor([[5.0, 5, 5, 10]]), c), ValueError, "non-positive width"),
        (lambda c: encode_targets(torch.tensor([[0.0, 0, float("nan"), 1]]), c), ValueError, "not finite"),
        (lambda c: encode_targets(torch.zeros(0, 4), {"num_cells": 8}), TypeError, "DetectorConfig"),
        (lambda c: encode_targets_batch(torch.zeros(2, 3, 4), c), TypeError, "list of Tensor"),
        (lambda c: encode_targets_batch([torch.zeros(0, 4), "x"], c), TypeError, r"boxes\[1\]"),
        (lambda c: encode_targets_batch([torch.tensor([[0.0, 0, 9, 9]]), torch.tensor([[0.0, 0, 300, 9]])], c),
         ValueError, r"boxes\[1\]\[0\].*outside"),
        (lambda c: decode_grid(torch.zeros(1, 7, 7, 5), c), ValueError,
         r"\[N, Sh, Sw, 10\] or \[Sh, Sw, 10\] with any Sh, Sw >= 1.*got \[1, 7, 7, 5\]"),
        (lambda c: decode_grid(torch.zeros(1, 0, 7, 10), c), ValueError, r"Sh, Sw >= 1.*got \[1, 0, 7, 10\]"),
        (lambda c: decode_grid(torch.zeros(7, 10), c), ValueError, r"got \[7, 10\]"),
        (lambda c: decode_grid(torch.zeros(8, 8, 10, dtype=torch.long), c), TypeError, "floating point"),
        (lambda c: decode_targets(torch.zeros(1, 8, 8, 10), c), ValueError, r"\[N, 8, 8, 5\]"),
        (lambda c: collision_stats([torch.zeros(0, 4)], 0, 256), ValueError, "num_cells"),
        (lambda c: collision_stats([torch.zeros(0, 4)] * 2, 8, [256]), ValueError, "2 box tensors but 1"),
        (lambda c: assign_cells(torch.zeros(0, 4), 2.5, 256), ValueError, "num_cells"),
    ],
)
def test_bad_input_raises_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call(DetectorConfig())


def test_collision_rates_by_size_match_assign_cells():
    sizes = [(256, 256), (256, 256), (128, 200)]
    boxes = [random_boxes(m, 128, seed=m) for m in (40, 0, 25)]
    bins = {"small": (0.0, 16.0), "large": (16.0, math.inf)}
    for rates in collision_rates(boxes, sizes, num_cells=(4, 8), size_bins=bins):
        lost = {name: 0 for name in bins}
        count = {name: 0 for name in bins}
        for b, size in zip(boxes, sizes):
            if len(b) == 0:
                continue
            _, _, kept = assign_cells(b, rates["num_cells"], size)
            face = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sqrt()
            for name, (lo, hi) in bins.items():
                chosen = (face >= lo) & (face <= hi)
                count[name] += int(chosen.sum())
                lost[name] += int((chosen & ~kept).sum())
        for name in bins:
            assert rates[f"faces_{name}"] == count[name]
            assert rates[f"lost_fraction_{name}"] == pytest.approx(lost[name] / count[name])
        assert sum(lost.values()) == rates["lost"]  # one target per occupied cell


def test_collision_rates_empty_size_bin_is_nan():
    rates = collision_rates([torch.tensor([[0.0, 0.0, 10.0, 10.0]])], 256, (8,), {"huge": (100.0, math.inf)})[0]
    assert rates["faces_huge"] == 0 and math.isnan(rates["lost_fraction_huge"])
