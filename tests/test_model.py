"""Tests for scratchdet.model: output layout, gradients, export, predict, checkpoints."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from scratchdet.config import DetectorConfig
from scratchdet.grid import encode_targets, encode_targets_batch
from scratchdet.loss import yolo_loss
from scratchdet.model import CONF_PRIOR, YoloDetector

BACKBONE_CASES = [("poolresnet", "small"), ("resnet", "small"), ("mobilenet_v3", "small")]


def small_model(backbone="poolresnet", config=None, **kwargs) -> YoloDetector:
    torch.manual_seed(0)
    return YoloDetector(config or DetectorConfig(image_size=128, num_cells=4), backbone, "small", **kwargs)


def reference_forward(model: YoloDetector, images: torch.Tensor) -> torch.Tensor:
    """The forward pass spelled out: normalise, backbone, head, permute, per-channel sigmoid."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    raw = model.head(model.backbone((images - mean) / std)).permute(0, 2, 3, 1)  # (N, S, S, B*5)
    out = raw.clone()
    for b in range(model.config.boxes_per_cell):
        for k in (0, 1, 4):  # x, y, conf
            out[..., 5 * b + k] = torch.sigmoid(raw[..., 5 * b + k])
    return out


@pytest.mark.parametrize("backbone, preset", BACKBONE_CASES)
@pytest.mark.parametrize("num_cells, boxes_per_cell", [(4, 1), (4, 2), (5, 3)])
def test_forward_layout_matches_reference(backbone, preset, num_cells, boxes_per_cell):
    config = DetectorConfig(image_size=32 * num_cells, num_cells=num_cells, boxes_per_cell=boxes_per_cell)
    model = YoloDetector(config, backbone, preset).eval()
    images = torch.rand(2, 3, config.image_size, config.image_size)
    with torch.no_grad():
        out = model(images)
        torch.testing.assert_close(out, reference_forward(model, images))
    assert out.shape == (2, num_cells, num_cells, 5 * boxes_per_cell)


def test_initial_predictions_follow_the_documented_prior():
    model = small_model().eval()
    with torch.no_grad():
        cells = model(torch.rand(3, 3, 128, 128)).unflatten(-1, (2, 5))  # (N, S, S, B, 5)
    assert abs(cells[..., 4].mean().item() - CONF_PRIOR) < 0.005
    assert abs(cells[..., 0:2].mean().item() - 0.5) < 0.05
    assert abs(cells[..., 2:4].mean().item() - (1 / 4) ** 0.5) < 0.1  # one cell of S = 4


@pytest.mark.parametrize("backbone", ["poolresnet", "resnet", "mobilenet_v3"])
def test_forward_backward_with_the_yolo_loss_is_finite(backbone):
    model = small_model(backbone).train()
    boxes = [torch.tensor([[10.0, 20.0, 60.0, 90.0]]), torch.zeros(0, 4)]
    targets = encode_targets_batch(boxes, model.config)  # (2, S, S, 5)
    loss = yolo_loss(model(torch.rand(2, 3, 128, 128)), targets, model.config)["total"]
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(bool(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)


@pytest.mark.parametrize("images, error, match", [
    (torch.rand(1, 3, 96, 100), ValueError, r"multiples of the stride 32 \(config.cell_size\), got \[1, 3, 96, 100\]"),
    (torch.rand(3, 128, 128), ValueError, r"got \[3, 128, 128\]"),
    (torch.zeros(1, 3, 128, 128, dtype=torch.uint8), TypeError, r"float RGB in \[0, 1\], got dtype torch.uint8"),
])
def test_forward_rejects_bad_images(images, error, match):
    with pytest.raises(error, match=match):
        small_model()(images)


@pytest.mark.parametrize("call, error, match", [
    (lambda: YoloDetector({"image_size": 128}), TypeError, r"config must be a DetectorConfig, got dict"),
    (lambda: YoloDetector(DetectorConfig(), "vgg"), ValueError, r"unknown backbone 'vgg'"),
    (lambda: YoloDetector(DetectorConfig(240, 10)), ValueError, r"stride of 24"),
    (lambda: YoloDetector(DetectorConfig(), head_channels=0), ValueError, r"head_channels must be a positive int"),
])
def test_bad_construction_gives_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def perfect_grid(model: YoloDetector, boxes: torch.Tensor) -> torch.Tensor:
    """What a perfect network outputs for xyxy boxes of the network input: ``(S, S, B*5)``."""
    t = encode_targets(boxes, model.config)  # (S, S, 5) of (x, y, w, h, obj)
    predictor = torch.cat([t[..., :2], t[..., 2:4].sqrt(), t[..., 4:]], dim=-1)  # (S, S, 5)
    return predictor.repeat(1, 1, model.config.boxes_per_cell)  # (S, S, B*5)


def test_predict_maps_boxes_back_to_each_photo(monkeypatch):
    model = small_model()
    faces = [torch.tensor([[100.0, 50.0, 200.0, 170.0]]), torch.tensor([[5.0, 10.0, 45.0, 90.0]])]
    photos = [np.zeros((300, 500, 3), np.uint8), torch.rand(3, 100, 60)]
    grids = []
    for face, photo in zip(faces, photos):  # the face in letterboxed pixels, by hand
        h, w = (photo.shape[:2] if isinstance(photo, np.ndarray) else photo.shape[1:])
        scale = 128 / max(h, w)
        sx, sy = round(w * scale) / w, round(h * scale) / h
        grids.append(perfect_grid(model, face * torch.tensor([sx, sy, sx, sy])))
    monkeypatch.setattr(model, "forward", lambda images: torch.stack(grids)[: len(images)])
    detections = model.predict(photos)
    assert len(detections) == 2
    for face, detection in zip(faces, detections):
        torch.testing.assert_close(detection["boxes"], face, rtol=0, atol=1e-3)
        assert detection["scores"].tolist() == [1.0]


def hand_set_grid(boxes: torch.Tensor, input_hw: tuple[int, int], config: DetectorConfig) -> torch.Tensor:
    """The grid a perfect network outputs at input ``(H, W)`` for xyxy input-pixel boxes, written
    from the contract: ``(H/stride, W/stride, B*5)`` cells, centres cell-relative, sqrt sizes
    relative to the *training* size ``config.image_size``, conf 1 in the centre's cell only."""
    stride, B = config.cell_size, config.boxes_per_cell
    grid = torch.zeros(input_hw[0] // stride, input_hw[1] // stride, B * 5)
    for x1, y1, x2, y2 in boxes.tolist():
        cx, cy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
        j, i = int(cx), int(cy)
        cell = [cx - j, cy - i, ((x2 - x1) / config.image_size) ** 0.5, ((y2 - y1) / config.image_size) ** 0.5, 1.0]
        grid[i, j] = torch.tensor(cell * B)
    return grid


SIZES = [256, 320, 480, 640, (256, 384), (480, 320)]


@pytest.mark.parametrize("image_size", SIZES)
def test_predict_at_any_input_size_returns_photo_pixels(image_size, monkeypatch):
    config = DetectorConfig(image_size=256, num_cells=8)  # stride 32
    model = small_model(config=config)
    faces = [torch.tensor([[100.0, 50.0, 200.0, 170.0], [300.0, 200.0, 330.0, 240.0]]),
             torch.tensor([[5.0, 10.0, 45.0, 90.0]])]
    photos = [np.zeros((300, 500, 3), np.uint8), torch.rand(3, 100, 60)]
    hw = (image_size, image_size) if isinstance(image_size, int) else image_size
    grids = []
    for face, photo in zip(faces, photos):  # the faces in letterboxed pixels, by hand
        h, w = (photo.shape[:2] if isinstance(photo, np.ndarray) else photo.shape[1:])
        factor = min(hw[0] / h, hw[1] / w)
        sx, sy = round(w * factor) / w, round(h * factor) / h
        grids.append(hand_set_grid(face * torch.tensor([sx, sy, sx, sy]), hw, config))
    seen = []

    def forward(images):
        seen.append(tuple(images.shape))
        return torch.stack(grids)[: len(images)]
    monkeypatch.setattr(model, "forward", forward)
    detections = model.predict(photos, image_size=image_size)
    assert seen == [(2, 3, *hw)]
    for face, detection in zip(faces, detections):
        order = detection["boxes"][:, 0].argsort()
        torch.testing.assert_close(detection["boxes"][order], face, rtol=0, atol=1e-3)
        assert detection["scores"].tolist() == [1.0] * len(face)


def test_forward_grid_follows_the_input_size():
    model = small_model(config=DetectorConfig(image_size=256, num_cells=8)).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 480, 480)).shape == (1, 15, 15, 10)
        assert model(torch.rand(2, 3, 256, 384)).shape == (2, 8, 12, 10)


@pytest.mark.parametrize("image_size, match", [
    (250, r"image_size 250 must be a multiple of the model's stride 32.*\(256, 256\)"),
    ((256, 300), r"image_size \(256, 300\) must be a multiple"),
    (0, r"positive int"),
    ("256", r"positive int or \(height, width\)"),
])
def test_predict_rejects_input_sizes_off_the_stride(image_size, match):
    model = small_model(config=DetectorConfig(image_size=256, num_cells=8))
    with pytest.raises(ValueError, match=match):
        model.predict(np.zeros((20, 30, 3), np.uint8), image_size=image_size)


def test_predict_accepts_all_input_kinds_and_restores_the_mode():
    model = small_model().train()
    photo = (np.random.default_rng(0).random((90, 140, 3)) * 255).astype(np.uint8)
    as_tensor = torch.from_numpy(photo).permute(2, 0, 1)
    kinds = [photo, [photo], as_tensor, as_tensor.float() / 255, (as_tensor.float() / 255)[None]]
    results = [model.predict(k, score_threshold=0.0) for k in kinds]
    assert model.training
    for result in results:
        assert len(result) == 1
        torch.testing.assert_close(result[0]["boxes"], results[0][0]["boxes"], rtol=0, atol=1e-4)
        assert result[0]["boxes"].shape[1] == 4 and len(result[0]["boxes"]) == len(result[0]["scores"])
        assert (result[0]["boxes"][:, 2:] <= torch.tensor([140.0, 90.0])).all()
    assert model.predict([]) == []


@pytest.mark.parametrize("images, error, match", [
    (np.zeros((10, 10, 3), np.float32), ValueError, r"\(H, W, 3\) uint8 RGB, got shape \(10, 10, 3\) dtype float32"),
    (np.zeros((10, 10), np.uint8), TypeError, r"got ndarray"),
    (torch.rand(3, 10, 10) * 255, ValueError, r"divide 0-255 images by 255"),
    ([torch.rand(1, 10, 10)], ValueError, r"images\[0\] must be a Tensor\[3, H, W\]"),
    (torch.zeros(3, 10, 10, dtype=torch.int64), TypeError, r"uint8 or float"),
    ("photo.jpg", TypeError, r"got str"),
])
def test_predict_rejects_bad_images(images, error, match):
    with pytest.raises(error, match=match):
        small_model().predict(images)


def test_save_and_from_checkpoint_round_trip(tmp_path):
    model = small_model("resnet", width=24, head_channels=16).eval()
    model.save(tmp_path / "model.pt")
    loaded = YoloDetector.from_checkpoint(tmp_path / "model.pt")
    images = torch.rand(2, 3, 128, 128)
    assert not loaded.training and loaded.hyperparameters == model.hyperparameters
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)


def test_from_checkpoint_reads_a_lightning_checkpoint(tmp_path, monkeypatch):
    model = small_model("mobilenet_v3").eval()
    hparams = {**model.hyperparameters, "backbone_kwargs": {"pretrained": True}, "lr": 1e-3}
    checkpoint = {"state_dict": {**{f"model.{k}": v for k, v in model.state_dict().items()},
                                 "loss_scale": torch.ones(1)},
                  "hyper_parameters": hparams, "pytorch-lightning_version": "2.6.0"}
    torch.save(checkpoint, tmp_path / "last.ckpt")

    def no_download(*args, **kwargs):
        raise urllib.error.URLError("no download expected")
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    loaded = YoloDetector.from_checkpoint(tmp_path / "last.ckpt")
    images = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)


def test_from_checkpoint_errors_name_the_problem(tmp_path):
    small_model().save(tmp_path / "small.pt")
    checkpoint = torch.load(tmp_path / "small.pt", weights_only=False)
    torch.save({**checkpoint, "preset": "medium"}, tmp_path / "mismatch.pt")
    mismatch = (r"\(poolresnet\) does not fit the model: 54 missing keys.*66 shape mismatches "
                r"\['backbone.blocks.0.bn1.bias: checkpoint \[32\] vs model \[64\]")
    with pytest.raises(ValueError, match=mismatch):
        YoloDetector.from_checkpoint(tmp_path / "mismatch.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"not a YoloDetector checkpoint.*got \['weights'\]"):
        YoloDetector.from_checkpoint(tmp_path / "other.pt")
    torch.save({"state_dict": {"net.w": torch.ones(1)}, "hyper_parameters": {}}, tmp_path / "pl.ckpt")
    with pytest.raises(ValueError, match=r"without 'model\.\*' weights; keys start with \['net'\]"):
        YoloDetector.from_checkpoint(tmp_path / "pl.ckpt")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint file"):
        YoloDetector.from_checkpoint(tmp_path / "missing.pt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = small_model().eval()
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected = model(images)
        got = model.cuda()(images.cuda())
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-3, atol=1e-3)
    detections = model.predict([np.zeros((60, 90, 3), np.uint8)], score_threshold=0.0)
    assert detections[0]["boxes"].device.type == "cuda"


def test_from_checkpoint_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        YoloDetector.from_checkpoint(path)
