"""Tests for scratchdet.backbones: grid shapes, presets, layouts, errors, pretrained loading."""

from __future__ import annotations

import os
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from scratchdet.backbones import (
    BACKBONES,
    PoolResNetBackbone,
    ResidualBlock,
    ResNetBackbone,
    get_backbone,
    hub_checkpoint_path,
)
from scratchdet.config import DetectorConfig

PRESETS = ("small", "medium", "large")

# Pinned backbone parameter counts (the module docstring's table).
PARAMETER_COUNTS = {
    ("resnet", "small"): 121_024,
    ("resnet", "medium"): 759_168,
    ("resnet", "large"): 2_024_256,
    ("poolresnet", "small"): 121_024,
    ("poolresnet", "medium"): 759_168,
    ("poolresnet", "large"): 2_024_256,
    ("mobilenet_v3", "small"): 256_296,
    ("mobilenet_v3", "medium"): 927_008,
    ("mobilenet_v3", "large"): 2_971_952,
    ("mobilenet_v2", "small"): 687_680,
    ("mobilenet_v2", "medium"): 2_223_872,
    ("mobilenet_v2", "large"): 4_315_776,
}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache under tmp_path, and any download fails as offline."""
    def no_download(url, *args, **kwargs):
        raise urllib.error.URLError(f"offline (test): {url}")

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


@pytest.mark.parametrize("name", ["resnet", "poolresnet"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("image_size, num_cells", [(256, 8), (480, 15), (160, 5), (64, 8), (256, 16)])
def test_residual_backbones_land_on_the_grid(name, preset, image_size, num_cells):
    config = DetectorConfig(image_size=image_size, num_cells=num_cells)
    backbone = get_backbone(name, config, preset).eval()
    with torch.no_grad():
        out = backbone(torch.rand(1, 3, image_size, image_size))
    assert backbone.stride == image_size // num_cells
    assert out.shape == (1, backbone.out_channels, num_cells, num_cells)


@pytest.mark.parametrize("name", ["mobilenet_v3", "mobilenet_v2"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("image_size, num_cells", [(256, 8), (224, 7), (160, 5)])
def test_mobilenets_land_on_the_grid(name, preset, image_size, num_cells):
    config = DetectorConfig(image_size=image_size, num_cells=num_cells)
    backbone = get_backbone(name, config, preset).eval()
    with torch.no_grad():
        out = backbone(torch.rand(1, 3, image_size, image_size))
    assert (backbone.stride, out.shape) == (32, (1, backbone.out_channels, num_cells, num_cells))


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("config", [DetectorConfig(256, 8), DetectorConfig(256, 16), DetectorConfig(64, 8)],
                         ids=["stride32", "stride16", "stride8"])
@pytest.mark.parametrize("rows, cols", [(15, 15), (8, 12), (12, 8), (3, 5), (7, 1), (2, 2)])
def test_any_multiple_of_the_stride_lands_on_h_w_over_stride(name, config, rows, cols):
    """Trained at one size, run at another: (H, W) = stride * (rows, cols) -> a rows x cols grid."""
    if name.startswith("mobilenet") and config.cell_size != 32:
        pytest.skip("MobileNets have stride 32 only")
    backbone = get_backbone(name, config, "small").eval()
    stride = config.cell_size
    with torch.no_grad():
        out = backbone(torch.rand(1, 3, stride * rows, stride * cols))
    assert out.shape == (1, backbone.out_channels, rows, cols)


@pytest.mark.parametrize("name, preset", sorted(PARAMETER_COUNTS))
def test_parameter_counts_are_stable(name, preset):
    assert n_params(get_backbone(name, preset=preset)) == PARAMETER_COUNTS[name, preset]


@pytest.mark.parametrize("width, depth", [(16, 3), (64, 10), (40, 7)])
@pytest.mark.parametrize("config", [DetectorConfig(256, 8), DetectorConfig(128, 16), DetectorConfig(480, 15)])
def test_resnet_and_poolresnet_have_equal_parameters(width, depth, config):
    resnet = ResNetBackbone(config, width=width, depth=depth)
    pool = PoolResNetBackbone(config, width=width, depth=depth)
    assert n_params(resnet) == n_params(pool)
    assert n_params(pool) == n_params(PoolResNetBackbone(DetectorConfig(), width=width, depth=depth))


def block_resolutions(backbone: torch.nn.Module, image_size: int) -> list[int]:
    """Output side length of each residual block, by forward hooks."""
    sides: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: sides.append(o.shape[-1]))
             for m in backbone.blocks if isinstance(m, ResidualBlock)]
    with torch.no_grad():
        backbone.eval()(torch.rand(1, 3, image_size, image_size))
    for h in hooks:
        h.remove()
    return sides


def test_poolresnet_runs_most_blocks_at_low_resolution():
    config = DetectorConfig(image_size=480, num_cells=15)  # stride 32 = stem 8 * 2**2
    assert block_resolutions(ResNetBackbone(config), 480) == [60, 60, 60, 30, 30, 30, 30, 15, 15, 15]
    assert block_resolutions(PoolResNetBackbone(config), 480) == [60, 30] + [15] * 8
    pools = [m for m in PoolResNetBackbone(config).blocks if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 2


def reference_block(block: ResidualBlock, x: torch.Tensor) -> torch.Tensor:
    """The basic block written out with torch.nn.functional (eval-mode BatchNorm)."""
    def bn(y, m):
        return F.batch_norm(y, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
    stride = block.conv1.stride[0]
    out = F.relu(bn(F.conv2d(x, block.conv1.weight, stride=stride, padding=1), block.bn1))
    out = bn(F.conv2d(out, block.conv2.weight, padding=1), block.bn2)
    shortcut = x if stride == 1 else (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]) / 4
    return F.relu(out + shortcut)


@pytest.mark.parametrize("stride", [1, 2])
def test_residual_block_matches_functional_reference(stride):
    torch.manual_seed(0)
    block = ResidualBlock(8, stride)
    for bn in (block.bn1, block.bn2):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(block.eval()(x), reference_block(block, x))
    assert block(x).shape == (2, 8, 12 // stride, 12 // stride)


@pytest.mark.parametrize("name, config, match", [
    ("poolresnet", DetectorConfig(240, 10), r"stride of 24.*image_size 160 or 320.*num_cells in \[30, 15\]"),
    ("resnet", DetectorConfig(512, 1), r"stride of 512.*k <= depth - 1"),
    ("resnet", DetectorConfig(96, 8), r"stride of 12"),
    ("mobilenet_v3", DetectorConfig(256, 16), r"must be 32.*stride 16.*image_size=512.*num_cells=8"),
    ("mobilenet_v2", DetectorConfig(300, 10), r"stride 30.*image_size=320"),
])
def test_config_the_backbone_cannot_land_on_gives_a_clear_error(name, config, match):
    with pytest.raises(ValueError, match=match):
        get_backbone(name, config, "small")


@pytest.mark.parametrize("call, match", [
    (lambda: get_backbone("vgg16"), r"unknown backbone 'vgg16'; known backbones: \['mobilenet_v2'"),
    (lambda: get_backbone("resnet", preset="huge"), r"unknown preset 'huge'.*'small', 'medium', 'large'"),
    (lambda: get_backbone("resnet", width=0), r"width must be a positive int, got 0"),
    (lambda: get_backbone("poolresnet", depth=2.5), r"depth must be a positive int, got 2.5"),
    (lambda: get_backbone("mobilenet_v3", arch="mobilenet_v4"), r"arch must be one of"),
    (lambda: get_backbone("mobilenet_v2", width_mult=-1), r"width_mult must be a positive number"),
    (lambda: ResidualBlock(8, stride=3), r"stride must be 1 or 2, got 3"),
])
def test_bad_arguments_give_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("name, preset, filename", [
    ("mobilenet_v3", "medium", "mobilenet_v3_small-047dcff4.pth"),
    ("mobilenet_v3", "large", "mobilenet_v3_large-8738ca79.pth"),
    ("mobilenet_v2", "medium", "mobilenet_v2-b0353104.pth"),
])
def test_pretrained_offline_says_where_to_put_the_weights(offline_hub, name, preset, filename):
    expected = os.path.join(str(offline_hub), "checkpoints", filename)
    with pytest.raises(RuntimeError, match=r"could not download the pretrained weights") as info:
        get_backbone(name, preset=preset, pretrained=True)
    assert expected in str(info.value) and "pretrained=False" in str(info.value)


@pytest.mark.parametrize("name, builder, weights", [
    ("mobilenet_v3", torchvision.models.mobilenet_v3_small, torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1),
    ("mobilenet_v2", torchvision.models.mobilenet_v2, torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1),
])
def test_pretrained_weights_are_read_from_the_hub_cache(offline_hub, name, builder, weights):
    torch.manual_seed(0)
    reference = builder(weights=None)
    path = hub_checkpoint_path(weights)
    assert path == os.path.join(str(offline_hub), "checkpoints", os.path.basename(weights.url))
    os.makedirs(os.path.dirname(path))
    torch.save(reference.state_dict(), path)
    torch.manual_seed(1)  # a fresh random init would differ
    backbone = get_backbone(name, preset="medium", pretrained=True)
    for key, value in reference.features.state_dict().items():
        torch.testing.assert_close(backbone.features.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"preset": "small", "pretrained": True}, r"pretrained weights exist only for width_mult=1.0, got 0.5"),
    ({"preset": "medium", "pretrained": "IMAGENET9K"}, r"pretrained must be a bool or one of \['IMAGENET1K_V1'\]"),
])
def test_pretrained_with_bad_options_fails_before_downloading(offline_hub, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_backbone("mobilenet_v3", **kwargs)


def test_registry_lists_every_backbone():
    assert sorted(BACKBONES) == ["mobilenet_v2", "mobilenet_v3", "poolresnet", "resnet"]
    for cls in BACKBONES.values():
        assert list(cls.PRESETS) == list(PRESETS)
