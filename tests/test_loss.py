"""The YOLO v1 loss (scratchdet.loss) against hand-computed cases and a loop reference."""

import dataclasses

import pytest
import torch

from scratchdet.config import DetectorConfig
from scratchdet.grid import encode_targets_batch
from scratchdet.loss import LOSS_TERMS, responsible_mask, yolo_loss


def loop_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def cell_box(i, j, x, y, w, h, S):
    cx, cy = (j + x) / S, (i + y) / S
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def loop_loss(pred, targets, config):
    """Slow reference: eq. 3 of the paper, one Python step per image, cell and predictor."""
    S, B = config.num_cells, config.boxes_per_cell
    sums = dict(xy=0.0, wh=0.0, obj=0.0, noobj=0.0)
    for n in range(pred.shape[0]):
        for i in range(S):
            for j in range(S):
                tx, ty, tw, th, obj = targets[n, i, j].tolist()
                preds = [pred[n, i, j, 5 * b: 5 * b + 5].tolist() for b in range(B)]
                resp = -1
                if obj == 1:
                    face = cell_box(i, j, tx, ty, tw, th, S)
                    ious = [loop_iou(cell_box(i, j, p[0], p[1], p[2] ** 2, p[3] ** 2, S), face) for p in preds]
                    if max(ious) > 0:
                        resp = ious.index(max(ious))
                    else:
                        dists = [(p[0] - tx) ** 2 + (p[1] - ty) ** 2 for p in preds]
                        resp = dists.index(min(dists))
                    x, y, sw, sh, conf = preds[resp]
                    sums["xy"] += (x - tx) ** 2 + (y - ty) ** 2
                    sums["wh"] += (sw - tw ** 0.5) ** 2 + (sh - th ** 0.5) ** 2
                    target = ious[resp] if config.conf_target == "iou" else 1.0
                    sums["obj"] += (conf - target) ** 2
                sums["noobj"] += sum(p[4] ** 2 for b, p in enumerate(preds) if b != resp)
    lam = dict(xy=config.lambda_coord, wh=config.lambda_coord, obj=config.lambda_obj, noobj=config.lambda_noobj)
    out = {k: lam[k] * v / pred.shape[0] for k, v in sums.items()}
    out["total"] = sum(out.values())
    return out


def random_case(config, n=3, faces=6, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    size = config.image_size
    boxes = []
    for _ in range(n):
        wh = torch.rand(faces, 2, generator=g) * size / 3 + 2
        xy = torch.rand(faces, 2, generator=g) * (size - wh)
        boxes.append(torch.cat([xy, xy + wh], 1))
    targets = encode_targets_batch(boxes, config).to(dtype)
    S = config.num_cells
    pred = torch.rand(n, S, S, config.channels, generator=g, dtype=dtype)  # x, y, conf in [0, 1]
    pred = pred.unflatten(-1, (config.boxes_per_cell, 5))
    pred[..., 2:4] = pred[..., 2:4] * 0.8 - 0.1  # sqrt_w, sqrt_h: real numbers, some negative
    return pred.flatten(-2), targets


def perfect_prediction(targets, config):
    """Predictor 0 copies each face (conf 1); the other predictors say conf 0."""
    B = config.boxes_per_cell
    pred = torch.zeros(*targets.shape[:3], B, 5, dtype=targets.dtype)
    pred[..., 1:, :2] = 0.5
    pred[..., 1:, 2:4] = 0.1
    pred[..., 0, :2] = targets[..., :2]
    pred[..., 0, 2:4] = targets[..., 2:4].sqrt()
    pred[..., 0, 4] = targets[..., 4]
    return pred.flatten(-2)  # (N, S, S, B*5)


# ---- hand-computed --------------------------------------------------------------
@pytest.mark.parametrize("conf_target,obj", [("iou", (0.8 - 1 / 3) ** 2), ("one", (0.8 - 1) ** 2)])
def test_hand_computed_one_cell(conf_target, obj):
    # One cell, face centred with w = h = 1/4; predictor 0 shifted right by 1/8 -> IoU 1/3.
    config = DetectorConfig(image_size=32, num_cells=1, boxes_per_cell=2, conf_target=conf_target)
    targets = torch.tensor([0.5, 0.5, 0.25, 0.25, 1.0]).view(1, 1, 1, 5)
    pred = torch.tensor([0.625, 0.5, 0.5, 0.5, 0.8, 0.5, 0.5, 0.1, 0.1, 0.5]).view(1, 1, 1, 10)
    loss = yolo_loss(pred, targets, config)
    # predictor 1 (w = h = 0.01) inside the face: IoU 0.0001 / 0.0625 = 0.0016 < 1/3.
    expected = {"xy": 5.0 * 0.125**2, "wh": 0.0, "obj": obj, "noobj": 0.5 * 0.5**2}
    for name, value in expected.items():
        torch.testing.assert_close(loss[name], torch.tensor(value), msg=name)
    torch.testing.assert_close(loss["total"], torch.tensor(sum(expected.values())))


def test_hand_computed_sqrt_term_and_empty_cell():
    config = DetectorConfig(image_size=64, num_cells=2, boxes_per_cell=1, lambda_coord=2.0, lambda_noobj=0.25)
    targets = torch.zeros(1, 2, 2, 5)
    targets[0, 1, 0] = torch.tensor([0.5, 0.5, 0.36, 0.16, 1.0])  # sqrt: 0.6, 0.4
    pred = torch.zeros(1, 2, 2, 5)
    pred[0, 1, 0] = torch.tensor([0.5, 0.5, 0.5, 0.6, 1.0])
    pred[0, 0, 1, 4] = 0.4  # an empty cell that believes in a face
    loss = yolo_loss(pred, targets, dataclasses.replace(config, conf_target="one"))
    torch.testing.assert_close(loss["wh"], torch.tensor(2.0 * (0.1**2 + 0.2**2)))
    torch.testing.assert_close(loss["noobj"], torch.tensor(0.25 * 0.4**2))
    assert loss["xy"] == 0 and loss["obj"] == 0


# ---- against the loop ---------------------------------------------------------------
@pytest.mark.parametrize("boxes_per_cell", [1, 2, 3])
@pytest.mark.parametrize("conf_target", ["iou", "one"])
@pytest.mark.parametrize("num_cells,faces,seed", [(4, 3, 0), (7, 12, 1), (8, 30, 2)])
def test_matches_loop_reference(boxes_per_cell, conf_target, num_cells, faces, seed):
    config = DetectorConfig(image_size=num_cells * 32, num_cells=num_cells, boxes_per_cell=boxes_per_cell,
                            lambda_coord=3.0, lambda_noobj=0.7, lambda_obj=1.3, conf_target=conf_target)
    pred, targets = random_case(config, faces=faces, seed=seed, dtype=torch.float64)
    got = yolo_loss(pred, targets, config)
    ref = loop_loss(pred, targets, config)
    assert set(got) == set(LOSS_TERMS)
    for name in LOSS_TERMS:
        torch.testing.assert_close(got[name].item(), ref[name], rtol=1e-10, atol=1e-12, msg=name)


def test_responsible_is_best_iou_not_first():
    config = DetectorConfig(image_size=32, num_cells=1, boxes_per_cell=3)
    targets = torch.tensor([0.5, 0.5, 0.25, 0.25, 1.0]).view(1, 1, 1, 5)
    pred = torch.tensor([[0.9, 0.9, 0.2, 0.2, 0.0], [0.5, 0.5, 0.5, 0.5, 0.0], [0.6, 0.5, 0.5, 0.5, 0.0]])
    mask, iou = responsible_mask(pred.view(1, 1, 1, 15), targets, config)
    assert mask.flatten().tolist() == [False, True, False]
    torch.testing.assert_close(iou[0, 0, 0, 1], torch.tensor(1.0))


def test_zero_iou_falls_back_to_closest_centre():
    config = DetectorConfig(image_size=32, num_cells=1, boxes_per_cell=2)
    targets = torch.tensor([0.5, 0.5, 0.25, 0.25, 1.0]).view(1, 1, 1, 5)
    pred = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.45, 0.5, 0.0, 0.0, 0.0]).view(1, 1, 1, 10)  # zero-size boxes
    mask, iou = responsible_mask(pred, targets, config)
    assert mask.flatten().tolist() == [False, True] and not iou.any()


# ---- properties ---------------------------------------------------------------------
@pytest.mark.parametrize("boxes_per_cell", [1, 2, 3])
@pytest.mark.parametrize("conf_target", ["iou", "one"])
def test_perfect_prediction_has_zero_loss(boxes_per_cell, conf_target):
    config = DetectorConfig(boxes_per_cell=boxes_per_cell, conf_target=conf_target)
    _, targets = random_case(config, faces=10)
    loss = yolo_loss(perfect_prediction(targets, config), targets, config)
    for name in LOSS_TERMS:
        assert loss[name].item() == pytest.approx(0.0, abs=1e-10), name


def test_loss_is_per_image():
    config = DetectorConfig()
    pred, targets = random_case(config, n=1)
    one = yolo_loss(pred, targets, config)
    two = yolo_loss(pred.repeat(2, 1, 1, 1), targets.repeat(2, 1, 1, 1), config)
    for name in LOSS_TERMS:
        torch.testing.assert_close(two[name], one[name])


def test_no_faces_leaves_only_noobj():
    config = DetectorConfig()
    pred = torch.rand(2, 8, 8, 10)
    loss = yolo_loss(pred, torch.zeros(2, 8, 8, 5), config)
    assert loss["xy"] == loss["wh"] == loss["obj"] == 0
    torch.testing.assert_close(loss["noobj"], 0.5 * pred[..., 4::5].square().sum() / 2)


@pytest.mark.parametrize("fill", ["zeros", "ones", "random", "huge_negative_sqrt"])
@pytest.mark.parametrize("conf_target", ["iou", "one"])
def test_finite_loss_and_gradients(fill, conf_target):
    config = DetectorConfig(conf_target=conf_target)
    _, targets = random_case(config, faces=8, seed=3)
    pred = {"zeros": torch.zeros(3, 8, 8, 10), "ones": torch.ones(3, 8, 8, 10),
            "random": torch.randn(3, 8, 8, 10, generator=torch.Generator().manual_seed(0)),
            "huge_negative_sqrt": torch.full((3, 8, 8, 10), -1e3)}[fill].requires_grad_()
    loss = yolo_loss(pred, targets, config)
    assert all(torch.isfinite(v) for v in loss.values())
    loss["total"].backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_gradient_reaches_only_responsible_boxes():
    config = DetectorConfig()
    pred, targets = random_case(config, faces=5, seed=4)
    pred.requires_grad_()
    yolo_loss(pred, targets, config)["total"].backward()
    mask, _ = responsible_mask(pred, targets, config)
    box_grad = pred.grad.unflatten(-1, (2, 5))[..., :4].abs().sum(-1)  # (N, S, S, B)
    assert (box_grad[~mask] == 0).all() and (box_grad[mask] > 0).all()


@pytest.mark.parametrize("boxes_per_cell", [1, 2])
def test_gradcheck_double(boxes_per_cell):
    # conf target 1: the whole output is a smooth function of pred (selection is piecewise constant).
    config = DetectorConfig(image_size=64, num_cells=2, boxes_per_cell=boxes_per_cell, conf_target="one")
    pred, targets = random_case(config, n=2, faces=3, seed=5, dtype=torch.float64)
    fn = lambda p: torch.stack([yolo_loss(p, targets, config)[k] for k in LOSS_TERMS])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (pred.requires_grad_(),), eps=1e-6, atol=1e-5)


def test_gradcheck_double_iou_target_through_conf():
    # With the IoU target (detached) check the gradient through the confidences only.
    config = DetectorConfig(image_size=64, num_cells=2, boxes_per_cell=2, conf_target="iou")
    pred, targets = random_case(config, n=2, faces=3, seed=6, dtype=torch.float64)
    cells = pred.unflatten(-1, (2, 5))  # (N, S, S, B, 5)

    def fn(conf):
        p = torch.cat([cells[..., :4], conf[..., None]], -1).flatten(-2)  # (N, S, S, B*5)
        return yolo_loss(p, targets, config)["total"]

    assert torch.autograd.gradcheck(fn, (cells[..., 4].clone().requires_grad_(),), eps=1e-6, atol=1e-5)


# ---- bad input ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pred,targets,error,match",
    [
        (torch.zeros(2, 8, 8, 5), torch.zeros(2, 8, 8, 5), ValueError, r"pred must have shape \[N, 8, 8, 10\]"),
        (torch.zeros(8, 8, 10), torch.zeros(8, 8, 5), ValueError, r"pred must have shape"),
        (torch.zeros(2, 8, 8, 10), torch.zeros(2, 7, 7, 5), ValueError, r"targets must have shape \[N, 8, 8, 5\]"),
        (torch.zeros(2, 8, 8, 10), torch.zeros(3, 8, 8, 5), ValueError, "same number"),
        (torch.zeros(0, 8, 8, 10), torch.zeros(0, 8, 8, 5), ValueError, "N >= 1"),
        (torch.zeros(1, 8, 8, 10, dtype=torch.long), torch.zeros(1, 8, 8, 5), TypeError, "pred must be a floating"),
        (torch.zeros(1, 8, 8, 10), [0.0], TypeError, "targets must be a floating point torch.Tensor, got list"),
        (torch.zeros(1, 8, 8, 10), torch.full((1, 8, 8, 5), 0.5), ValueError, r"obj\) must be 0 or 1"),
        (torch.zeros(1, 8, 8, 10), torch.full((1, 8, 8, 5), -1.0).index_fill(-1, torch.tensor([4]), 0.0),
         ValueError, ">= 0"),
    ],
)
def test_bad_input_raises_clearly(pred, targets, error, match):
    with pytest.raises(error, match=match):
        yolo_loss(pred, targets, DetectorConfig())


def test_bad_config_type():
    with pytest.raises(TypeError, match="DetectorConfig"):
        yolo_loss(torch.zeros(1, 8, 8, 10), torch.zeros(1, 8, 8, 5), {"num_cells": 8})


# ---- non-finite predictions ------------------------------------------------------------
def face_and_empty_cells(targets):
    """(n, i, j) of one cell with a face and one without."""
    face = tuple(targets[..., 4].nonzero()[0].tolist())
    empty = tuple((targets[..., 4] == 0).nonzero()[0].tolist())
    return face, empty


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("channel", range(10))  # x, y, sqrt_w, sqrt_h, conf of predictors 0 and 1
@pytest.mark.parametrize("cell", ["face", "empty"])
@pytest.mark.parametrize("conf_target", ["iou", "one"])
def test_non_finite_prediction_gives_non_finite_total(value, channel, cell, conf_target):
    config = DetectorConfig(conf_target=conf_target)
    pred, targets = random_case(config, faces=6, seed=7)
    face, empty = face_and_empty_cells(targets)
    pred[(face if cell == "face" else empty) + (channel,)] = value
    assert not torch.isfinite(yolo_loss(pred, targets, config)["total"])


@pytest.mark.parametrize("channel,value,term", [(0, float("nan"), "xy"), (3, float("inf"), "wh"),
                                                (4, float("nan"), "obj"), (9, float("-inf"), "obj")])
def test_check_finite_names_the_first_non_finite_term(channel, value, term):
    config = DetectorConfig()
    pred, targets = random_case(config, faces=6, seed=8)
    face, _ = face_and_empty_cells(targets)
    pred[face + (channel,)] = value
    where = rf"the first pred\[{', '.join(map(str, face + (channel,)))}\] = {value}"
    message = rf"yolo_loss: term '{term}' is (nan|inf) \(1 non-finite values in pred, {where}\)"
    with pytest.raises(ValueError, match=message):
        yolo_loss(pred, targets, config, check_finite=True)


def test_check_finite_passes_finite_losses_unchanged():
    config = DetectorConfig()
    pred, targets = random_case(config, seed=9)
    checked, plain = yolo_loss(pred, targets, config, check_finite=True), yolo_loss(pred, targets, config)
    assert all(torch.equal(checked[k], plain[k]) for k in LOSS_TERMS)
