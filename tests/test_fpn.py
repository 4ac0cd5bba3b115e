"""The multi-scale head (fpn.py), its loss per scale (fpn_loss.py) and the model with it, against loops."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from scratchdet.assign import assign_levels
from scratchdet.config import DetectorConfig
from scratchdet.fpn import decode_level, decode_levels
from scratchdet.fpn_loss import fpn_loss
from scratchdet.model import YoloDetector
from scratchdet.training import YoloModule

FPN = DetectorConfig(head="fpn")  # 256 px, strides 8, 16, 32


def loop_decode(raw, stride):
    """One cell at a time: centre (col + 0.5 + 2 sigmoid(tx) - 1) * stride, size exp(tw) * stride."""
    n, _, rows, cols = raw.shape
    boxes, scores = torch.zeros(n, rows * cols, 4), torch.zeros(n, rows * cols)
    for i in range(n):
        for r in range(rows):
            for c in range(cols):
                obj, tx, ty, tw, th = raw[i, :, r, c].tolist()
                cx = (c + 0.5 + 2 / (1 + math.exp(-tx)) - 1) * stride
                cy = (r + 0.5 + 2 / (1 + math.exp(-ty)) - 1) * stride
                w, h = math.exp(min(tw, 8.0)) * stride, math.exp(min(th, 8.0)) * stride
                boxes[i, r * cols + c] = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                scores[i, r * cols + c] = 1 / (1 + math.exp(-obj))
    return boxes, scores


@pytest.mark.parametrize("shape,stride", [((2, 5, 4, 6), 8), ((1, 5, 3, 2), 32), ((1, 5, 1, 1), 16)])
def test_decode_matches_the_loop(shape, stride):
    raw = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 2
    raw[0, 3, 0, 0] = 20.0  # clamped before exp
    boxes, scores = decode_level(raw, stride)
    ref_boxes, ref_scores = loop_decode(raw, stride)
    torch.testing.assert_close(boxes, ref_boxes, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(scores, ref_scores)


def test_decode_levels_concatenates_finest_first():
    raws = [torch.randn(2, 5, 32, 32), torch.randn(2, 5, 16, 16), torch.randn(2, 5, 8, 8)]
    out = decode_levels(raws, FPN)
    assert out.shape == (2, 32 * 32 + 16 * 16 + 8 * 8, 5)
    torch.testing.assert_close(out[:, -64:, :4], decode_level(raws[2], 32)[0])
    with pytest.raises(ValueError, match="expected 3 levels"):
        decode_levels(raws[:2], FPN)


def loop_loss(raws, boxes, config):
    """fpn_loss one positive cell at a time, with torchvision's GIoU and IoU."""
    assignment = assign_levels(boxes, config)
    sums, num_pos = {"box": 0.0, "obj": 0.0, "noobj": 0.0}, 0
    for raw, stride, owner in zip(raws, config.strides, assignment.cells):
        pred_boxes, _ = loop_decode(raw.detach(), stride)
        n, _, rows, cols = raw.shape
        for i in range(n):
            for r in range(rows):
                for c in range(cols):
                    logit = float(raw[i, 0, r, c])
                    f = int(owner[i, r, c])
                    if f < 0:
                        sums["noobj"] += F.softplus(torch.tensor(logit)).item()  # BCE against 0
                        continue
                    num_pos += 1
                    p, g = pred_boxes[i, r * cols + c][None], assignment.faces[f][None]
                    sums["box"] += 1 - float(torchvision.ops.generalized_box_iou(p, g))
                    target = float(torchvision.ops.box_iou(p, g)) if config.conf_target == "iou" else 1.0
                    sums["obj"] += float(F.binary_cross_entropy_with_logits(torch.tensor(logit), torch.tensor(target)))
    weights = {"box": config.lambda_coord, "obj": config.lambda_obj, "noobj": config.lambda_noobj}
    out = {k: weights[k] * v / max(num_pos, 1) for k, v in sums.items()}
    out["total"] = sum(out.values())
    return out


@pytest.mark.parametrize("config", [DetectorConfig(head="fpn", image_size=64, num_cells=2),
                                    DetectorConfig(head="fpn", image_size=64, num_cells=2, conf_target="one",
                                                   lambda_noobj=1.0, center_radius=0.0)])
def test_loss_matches_the_loop(config):
    g = torch.Generator().manual_seed(1)
    raws = [torch.randn(2, 5, 64 // s, 64 // s, generator=g) for s in config.strides]
    boxes = [torch.tensor([[3.0, 4.0, 13.0, 15.0], [20.0, 20.0, 60.0, 50.0], [30.0, 2.0, 36.0, 9.0]]),
             torch.tensor([[0.0, 0.0, 64.0, 64.0]])]
    got = fpn_loss(raws, boxes, config)
    want = loop_loss(raws, boxes, config)
    for key in ("box", "obj", "noobj", "total"):
        assert float(got[key]) == pytest.approx(want[key], rel=1e-4, abs=1e-5), key
    assert float(sum(got[f"level_{k}"] for k in range(3))) == pytest.approx(float(got["total"]), rel=1e-5)


def test_loss_is_non_finite_for_non_finite_predictions_and_has_gradients():
    config = DetectorConfig(head="fpn", image_size=64, num_cells=2)
    raws = [torch.randn(1, 5, 64 // s, 64 // s, requires_grad=True) for s in config.strides]
    boxes = [torch.tensor([[3.0, 4.0, 13.0, 15.0]])]
    fpn_loss(raws, boxes, config)["total"].backward()
    assert all(r.grad is not None and torch.isfinite(r.grad).all() for r in raws)
    bad = [r.detach().clone() for r in raws]
    bad[0][0, 1, 0, 0] = float("nan")
    assert not torch.isfinite(fpn_loss(bad, boxes, config)["total"])
    with pytest.raises(ValueError, match="level 1"):
        fpn_loss([raws[0], raws[0], raws[2]], boxes, config)


@pytest.mark.parametrize("backbone", ["poolresnet", "resnet", "mobilenet_v3", "mobilenet_v2"])
def test_model_with_the_fpn_head_at_any_size(backbone):
    model = YoloDetector(FPN, backbone=backbone, preset="small").eval()
    for h, w in [(256, 256), (320, 480), (96, 64)]:
        out = model(torch.rand(1, 3, h, w))
        assert out.shape == (1, (h // 8) * (w // 8) + (h // 16) * (w // 16) + (h // 32) * (w // 32), 5)
        raws = model.raw(torch.rand(1, 3, h, w))
        assert [tuple(r.shape[2:]) for r in raws] == [(h // s, w // s) for s in (8, 16, 32)]


def test_a_trained_box_decodes_to_the_same_pixels_at_any_input_size():
    """Sizes are in strides: a hand-set cell predicts a 40 px box at 256 and at 480 px."""
    model = YoloDetector(FPN, preset="small").eval()
    for head in model.head.heads:
        torch.nn.init.zeros_(head[-1].weight)
        with torch.no_grad():
            head[-1].bias.copy_(torch.tensor([-20.0, 0.0, 0.0, math.log(40 / 16), math.log(40 / 16)]))
    model.head.heads[1][-1].bias.data[0] = 20.0  # every stride-16 cell is sure
    for size in (256, 480):
        found = model.predict(torch.full((3, size, size), 0.5), image_size=size, score_threshold=0.5)[0]
        wh = found["boxes"][:, 2:] - found["boxes"][:, :2]
        inside = (found["boxes"][:, :2] > 0).all(1) & (found["boxes"][:, 2:] < size).all(1)  # not clipped
        assert inside.sum() > 10
        torch.testing.assert_close(wh[inside], torch.full_like(wh[inside], 40.0))


def test_the_module_trains_the_fpn_head():
    module = YoloModule(DetectorConfig(head="fpn", image_size=64, num_cells=2), preset="small")
    images = torch.rand(2, 3, 64, 64)
    boxes = [torch.tensor([[3.0, 4.0, 23.0, 25.0]]), torch.zeros(0, 4)]
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        terms, out = module.loss(images, boxes)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        losses.append(float(terms["total"]))
    assert module.model.decode(out).shape == (2, 64 + 16 + 4, 5)
    assert losses[-1] < 0.2 * losses[0], losses[::10]
    found = module.model.eval().predict(images[0], score_threshold=0.3)[0]
    assert len(found["boxes"]) >= 1
    assert float(torchvision.ops.box_iou(found["boxes"][:1], boxes[0])) > 0.5


def test_config_checks_the_pyramid():
    with pytest.raises(ValueError, match="num_levels=4 needs cell_size=4"):
        DetectorConfig(head="fpn", image_size=64, num_cells=16, num_levels=4)
    with pytest.raises(ValueError, match="head must be one of"):
        DetectorConfig(head="v3")
    with pytest.raises(ValueError, match="center_radius"):
        DetectorConfig(head="fpn", center_radius=float("nan"))
    with pytest.raises(ValueError, match="resolutions"):
        YoloDetector(DetectorConfig(head="fpn", image_size=64, num_cells=4), preset="small")  # stride 16: 2 levels


def test_the_iou_score_target_sends_no_gradient_into_the_boxes():
    """The score learns the IoU its box has; it must not move the box to change that IoU (YOLOX, VFL detach it)."""
    config = DetectorConfig(head="fpn", lambda_coord=0.0, lambda_noobj=0.0, conf_target="iou")
    torch.manual_seed(0)
    raws = [torch.randn(2, 5, 256 // s, 256 // s, requires_grad=True) for s in config.strides]
    boxes = [torch.tensor([[20.0, 30.0, 60.0, 80.0], [100.0, 100.0, 200.0, 220.0]]), torch.tensor([[5.0, 5.0, 12.0, 13.0]])]
    fpn_loss(raws, boxes, config)["total"].backward()
    assert any(bool(raw.grad[:, 0].abs().sum() > 0) for raw in raws)  # the scores learn
    for raw in raws:
        assert torch.equal(raw.grad[:, 1:], torch.zeros_like(raw.grad[:, 1:]))  # the boxes do not
