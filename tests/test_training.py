"""The LightningModule and training runs from recipes (training.py, recipe.py, pipeline.py).

Every run here is ``configs/smoke.yaml`` (64 px, S = 4, 16 images), a few
seconds each. The guarantees about checkpoints, resume and interrupts are in
``test_checkpoints.py``.
"""

import pytest
import pytorch_lightning as pl
import torch
import yaml

from scratchdet.config import DetectorConfig
from scratchdet.model import YoloDetector
from scratchdet.pipeline import run_training
from scratchdet.recipe import CONFIGS_DIR, check_trainer, max_time_seconds, override_args, parse_recipe, recipe_dict
from scratchdet.training import YoloModule


def smoke(tmp_path, **overrides):
    """``configs/smoke.yaml`` in ``tmp_path/run``, data cached in ``tmp_path/data``, one thread."""
    return run_training("smoke", {"output_dir": str(tmp_path / "run"), "data.root": str(tmp_path.parent / "data"),
                                  "threads": 1, **overrides})


def test_overfit_one_batch_drives_loss_near_zero(tmp_path):
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    run_training("smoke", {"output_dir": str(tmp_path / "run"), "data.root": str(tmp_path / "data"), "threads": 1,
                           "trainer.overfit_batches": 1, "trainer.max_epochs": 120, "data.augment": False,
                           "model.lr": 3e-3, "model.schedule": "constant", "model.weight_decay": 0.0,
                           "trainer.gradient_clip_val": None}, extra_callbacks=[Record()])
    assert len(losses) == 120
    assert losses[-1] < 0.05 * losses[0], f"loss went from {losses[0]:.3f} to {losses[-1]:.3f}"


def test_same_seed_and_threads_give_same_metrics(tmp_path):
    a = smoke(tmp_path / "a")
    b = smoke(tmp_path / "b")
    ma, mb = a.trainer.callback_metrics, b.trainer.callback_metrics
    assert set(ma) == set(mb) and "val/ap50" in ma
    for key in ma:
        assert float(ma[key]) == pytest.approx(float(mb[key]), abs=1e-6, nan_ok=True), key


def test_checkpoint_rebuilds_the_model(tmp_path):
    result = smoke(tmp_path)
    assert result.best_checkpoint and result.last_checkpoint
    restored = YoloDetector.from_checkpoint(result.best_checkpoint).eval()
    module = YoloModule.load_from_checkpoint(result.best_checkpoint).eval()
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(restored(x), module(x))
    assert result.images_per_second > 0 and result.train_seconds > 0
    assert result.images_per_rank == [16 * 2]  # one process, 2 epochs of 16 images


def test_the_image_size_is_set_once_and_linked():
    cli = parse_recipe(["--config", "smoke", "--model.config.image_size", "96", "--seed_everything", "3"])
    recipe = recipe_dict(cli)
    assert recipe["model"]["config"]["image_size"] == 96 and recipe["data"]["image_size"] == 96
    assert recipe["data"]["seed"] == 3
    with pytest.raises(Exception, match="data.image_size"):
        parse_recipe(["--data.image_size", "128"])  # linked: not a key of its own


def test_every_module_argument_is_a_key():
    recipe = recipe_dict(parse_recipe([]))
    for name in ("backbone", "preset", "pretrained", "head_channels", "backbone_kwargs", "optimizer", "lr",
                 "weight_decay", "momentum", "schedule", "warmup_fraction", "eval_score_threshold",
                 "nms_iou_threshold", "max_detections", "stop_on_nonfinite"):
        assert name in recipe["model"], name
    assert set(recipe["model"]["config"]) == set(DetectorConfig().to_dict())  # lambda_obj included
    for name in ("dataset", "root", "batch_size", "num_workers", "augment", "train_size", "val_size", "test_size",
                 "wider_root"):
        assert name in recipe["data"], name


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
def test_shipped_recipes_parse(name):
    recipe = recipe_dict(parse_recipe(["--config", name]))
    text = yaml.safe_load((CONFIGS_DIR / f"{name}.yaml").read_text())
    assert recipe["model"]["config"]["image_size"] == text["model"]["config"]["image_size"]
    check_trainer(recipe["trainer"])


def test_demo_and_study_read_their_recipes():
    from scratchdet.demo import DEMO_RECIPE
    from scratchdet.study import FULL_PLAN

    demo = yaml.safe_load((CONFIGS_DIR / f"{DEMO_RECIPE}.yaml").read_text())
    study = yaml.safe_load((CONFIGS_DIR / "study.yaml").read_text())
    assert demo["trainer"]["max_epochs"] == 5 and demo["model"]["config"]["head"] == "fpn"
    assert FULL_PLAN.base["epochs"] == study["trainer"]["max_epochs"]
    assert FULL_PLAN.base["preset"] == study["model"]["preset"]
    assert FULL_PLAN.base["train_size"] == study["data"]["train_size"]


def test_override_args():
    assert override_args({"model.lr": 0.1, "data.val_size": None, "data.augment": False, "resume": True,
                          "overwrite": False}) == ["--model.lr=0.1", "--data.val_size=null", "--data.augment=false",
                                                   "--resume"]
    assert override_args(["--x=1"]) == ["--x=1"]


def test_max_time():
    assert max_time_seconds("00:00:10:00") == 600 and max_time_seconds({"minutes": 2}) == 120
    assert max_time_seconds(None) is None
    with pytest.raises(ValueError, match="DD:HH:MM:SS"):
        max_time_seconds("10 minutes")
    with pytest.raises(ValueError, match="train forever"):
        check_trainer({"max_epochs": -1})


def test_module_rejects_bad_arguments():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        YoloModule({"image_size": 64, "num_cells": 4}, optimizer="adam")
    for lr in (0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="lr must be a finite number"):
            YoloModule({"image_size": 64, "num_cells": 4}, lr=lr)
    with pytest.raises(ValueError, match="needs a MobileNet"):
        YoloModule({"image_size": 64, "num_cells": 4}, backbone="poolresnet", pretrained=True)


@pytest.mark.parametrize("name", ["lambda_coord", "lambda_noobj", "lambda_obj"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_config_rejects_non_finite_loss_weights(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a finite non-negative number"):
        DetectorConfig(**{name: value})
