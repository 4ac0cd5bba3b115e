"""Fine-tuning: ``freeze_backbone`` keeps layers as they start, ``init_weights`` starts from a checkpoint."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning import Callback

from scratchdet.model import YoloDetector
from scratchdet.pipeline import run_training
from scratchdet.training import YoloModule


def smoke(tmp_path, name: str, **overrides):
    """``configs/smoke.yaml`` into ``tmp_path/name`` (one thread, shared data cache)."""
    return run_training("smoke", {"output_dir": str(tmp_path / name), "data.root": str(tmp_path / "data"),
                                  "threads": 1, **overrides})


def _backbone_layers(module: YoloModule, count: int) -> dict[str, torch.Tensor]:
    """Weights and BatchNorm statistics of the backbone's first ``count`` feature layers (copies)."""
    layers = module.model.backbone.feature_layers()[:count]
    return {f"{i}.{k}": v.detach().clone() for i, layer in enumerate(layers) for k, v in layer.state_dict().items()}


def test_frozen_layers_keep_weights_and_batchnorm_statistics(tmp_path):
    first = YoloModule.load_from_checkpoint(smoke(tmp_path, "start", **{"trainer.max_epochs": 1}).last_checkpoint)
    start = first.model.state_dict()
    torch.save({**first.model.hyperparameters, "state_dict": start}, tmp_path / "start.pt")
    result = smoke(tmp_path, "frozen", **{"model.freeze_backbone": 2, "model.init_weights": str(tmp_path / "start.pt")})
    trained = YoloModule.load_from_checkpoint(result.last_checkpoint)
    before, after = _backbone_layers(first, 2), _backbone_layers(trained, 2)
    assert before.keys() == after.keys() and any("running_mean" in k for k in before)
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
    # the layers after the frozen ones, and the head, did learn
    layers = len(trained.model.backbone.feature_layers())
    rest, start_rest = _backbone_layers(trained, layers), _backbone_layers(first, layers)
    changed = {k.split(".")[0] for k in rest if not torch.equal(rest[k], start_rest[k])}
    assert changed and min(int(i) for i in changed) >= 2


def test_frozen_layers_stay_in_eval_mode_and_out_of_the_optimizer():
    module = YoloModule(backbone="poolresnet", preset="small", freeze_backbone=-1)
    module.train()
    layers = module.model.backbone.feature_layers()
    assert all(not m.training for layer in layers for m in layer.modules())
    assert module.model.head.training
    optimised = {id(p) for group in module._param_groups() for p in group["params"]}
    assert not optimised & {id(p) for p in module.model.backbone.parameters()}
    assert optimised  # the head still trains


@pytest.mark.parametrize("value", [-2, 999, 1.5, True, "all"])
def test_freeze_backbone_rejects_bad_values(value):
    with pytest.raises(ValueError, match="freeze_backbone"):
        YoloModule(backbone="poolresnet", preset="small", freeze_backbone=value)


def test_init_weights_starts_from_the_checkpoint_and_a_resume_keeps_its_own(tmp_path):
    source = smoke(tmp_path, "source", **{"trainer.max_epochs": 1})
    weights = YoloDetector.from_checkpoint(source.last_checkpoint).state_dict()
    module = YoloModule.load_from_checkpoint(source.last_checkpoint)
    fresh = YoloModule(config=module.config, backbone="poolresnet", preset="small",
                       init_weights=str(source.last_checkpoint))
    assert not all(torch.equal(v, fresh.model.state_dict()[k]) for k, v in weights.items())
    fresh.setup("fit")
    for key, value in weights.items():
        assert torch.equal(fresh.model.state_dict()[key], value), key
    # a resumed fine-tune starts from its own last.ckpt, not from init_weights
    tuned = smoke(tmp_path, "tuned", **{"model.init_weights": str(source.last_checkpoint), "trainer.max_epochs": 1})
    tuned_weights = YoloDetector.from_checkpoint(tuned.last_checkpoint).state_dict()
    seen = {}

    class Snapshot(Callback):
        def on_train_start(self, trainer, module):
            seen.update({k: v.detach().clone() for k, v in module.model.state_dict().items()})

    run_training("smoke", {"output_dir": str(tmp_path / "tuned"), "data.root": str(tmp_path / "data"),
                           "threads": 1, "resume": True, "trainer.max_epochs": 2}, extra_callbacks=[Snapshot()])
    assert seen.keys() == tuned_weights.keys()
    for key, value in tuned_weights.items():
        assert torch.equal(seen[key], value), key
    assert any(not torch.equal(tuned_weights[k], weights[k]) for k in weights)


def test_init_weights_from_another_architecture_names_what_differs(tmp_path):
    source = smoke(tmp_path, "source", **{"trainer.max_epochs": 1})
    with pytest.raises(ValueError, match=r"preset: checkpoint 'small', recipe 'medium'"):
        smoke(tmp_path, "other", **{"model.preset": "medium", "model.init_weights": str(source.last_checkpoint)})
    assert not (tmp_path / "other" / "checkpoints" / "last.ckpt").exists()


def test_init_weights_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        smoke(tmp_path, "run", **{"model.init_weights": str(tmp_path / "nowhere.pt")})


def _coco_photos(folder, count: int):
    """``count`` SynthFaces test images as a user's labelled photos: ``folder/*.png`` + ``annotations.json``."""
    import json

    import cv2

    from scratchdet.data.synthfaces import SynthFaces

    folder.mkdir(parents=True)
    source, images, annotations = SynthFaces("test", image_size=256, num_images=count), [], []
    for i in range(count):
        image, boxes = source[i]
        cv2.imwrite(str(folder / f"photo_{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        images.append({"id": i, "file_name": f"photo_{i}.png", "width": 256, "height": 256})
        annotations += [{"id": len(annotations), "image_id": i, "category_id": 1, "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1]} for x1, y1, x2, y2 in boxes.tolist()]
    (folder / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "face"}]}))
    return folder


def test_fine_tune_the_bundled_model_on_your_own_coco_photos(tmp_path, monkeypatch):
    """The README's fine-tuning command, on photos the test writes: no ImageNet file is needed or fetched."""
    from scratchdet.cli import main
    from scratchdet.config import DEFAULT_MODEL

    assert DEFAULT_MODEL.is_file(), "the bundled model is committed"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))  # no ImageNet weights to be found here
    photos = _coco_photos(tmp_path / "photos", 8)
    result = run_training("photos", {
        "output_dir": str(tmp_path / "mine"), "threads": 1, "model.init_weights": str(DEFAULT_MODEL),
        "data.dataset": "coco", "data.root": str(photos), "data.annotations": str(photos / "annotations.json"),
        "data.train_size": None, "data.val_size": None, "data.batch_size": 4, "model.lr": 0.0005,
        "trainer.max_epochs": 1, "trainer.max_time": None, "trainer.enable_progress_bar": False})
    bundled, tuned = YoloDetector.from_checkpoint(DEFAULT_MODEL), YoloDetector.from_checkpoint(result.last_checkpoint)
    frozen = len(bundled.backbone.feature_layers()[:14])  # configs/photos.yaml: freeze_backbone 14
    for i, (a, b) in enumerate(zip(bundled.backbone.feature_layers()[:frozen], tuned.backbone.feature_layers())):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), f"layer {i} {name}: a frozen layer moved or did not start from the bundled model"
    head, head_tuned = bundled.head.state_dict(), tuned.head.state_dict()
    assert any(not torch.equal(head[k], head_tuned[k]) for k in head)  # the head learned from the photos
    assert main(["evaluate", str(result.last_checkpoint), "--dataset", "coco", "--annotations",
                 str(photos / "annotations.json"), "--images", str(photos)]) == 0
