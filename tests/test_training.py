"""The LightningModule, training runs, resume, interrupts and settings (training.py, pipeline.py)."""

import pytest
import pytorch_lightning as pl
import torch

from scratchdet.model import YoloDetector
from scratchdet.pipeline import TrainSettings, coerce_setting, load_settings, run_training
from scratchdet.training import YoloModule

TINY = dict(image_size=64, num_cells=4, boxes_per_cell=2, backbone="poolresnet", preset="small",
            batch_size=4, train_size=8, val_size=4, progress_bar=False, threads=1, num_workers=0)


def tiny_settings(tmp_path, **kw) -> TrainSettings:
    return TrainSettings(**{**TINY, "data_root": str(tmp_path / "data"), "output_dir": str(tmp_path / "run"),
                            "epochs": 1, **kw})


def test_overfit_one_batch_drives_loss_near_zero(tmp_path):
    settings = tiny_settings(tmp_path, overfit_batches=1, epochs=120, lr=3e-3, schedule="constant",
                             weight_decay=0.0, gradient_clip=0.0)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    run_training(settings, extra_callbacks=[Record()])
    assert len(losses) == 120
    assert losses[-1] < 0.05 * losses[0], f"loss went from {losses[0]:.3f} to {losses[-1]:.3f}"


def test_same_seed_gives_same_metrics(tmp_path):
    a = run_training(tiny_settings(tmp_path / "a"))
    b = run_training(tiny_settings(tmp_path / "b"))
    ma, mb = a.trainer.callback_metrics, b.trainer.callback_metrics
    assert set(ma) == set(mb) and "val/ap50" in ma
    for key in ma:
        assert float(ma[key]) == pytest.approx(float(mb[key]), abs=1e-6, nan_ok=True), key


def test_checkpoint_rebuilds_the_model(tmp_path):
    result = run_training(tiny_settings(tmp_path))
    assert result.best_checkpoint and result.last_checkpoint
    restored = YoloDetector.from_checkpoint(result.best_checkpoint).eval()
    module = YoloModule.load_from_checkpoint(result.best_checkpoint).eval()
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(restored(x), module(x))
    assert result.images_per_second > 0 and result.train_seconds > 0


def test_resume_continues_from_last_checkpoint(tmp_path):
    run_training(tiny_settings(tmp_path, epochs=1))
    resumed = run_training(tiny_settings(tmp_path, epochs=2, resume=True))
    assert resumed.trainer.current_epoch == 2
    with pytest.raises(ValueError, match="no checkpoint to resume from"):
        run_training(tiny_settings(tmp_path / "other", resume=True))


def test_interrupt_leaves_a_usable_last_checkpoint(tmp_path):
    class Interrupt(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx == 1:
                raise KeyboardInterrupt

    settings = tiny_settings(tmp_path, epochs=3)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        run_training(settings, extra_callbacks=[Interrupt()])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.exists()
    YoloDetector.from_checkpoint(last)
    resumed = run_training(tiny_settings(tmp_path, epochs=1, resume=True))
    assert resumed.trainer.current_epoch == 1


def test_settings_from_yaml_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("backbone: resnet\nepochs: 3\nlr: 0.01\naugment: false\nval_size: null\n")
    settings = load_settings(path, {"epochs": "5"})
    assert (settings.backbone, settings.epochs, settings.lr, settings.augment, settings.val_size) == \
        ("resnet", 5, 0.01, False, None)
    assert settings.detector_config().image_size == 256


@pytest.mark.parametrize("yaml_text,match", [
    ("bakbone: resnet\n", "unknown setting 'bakbone'"),
    ("epochs: many\n", "setting 'epochs' must be int"),
    ("- a\n- b\n", "must hold a mapping"),
    ("epochs: [1\n", "not valid YAML"),
])
def test_bad_settings_files(tmp_path, yaml_text, match):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ValueError, match=match):
        load_settings(path)


def test_coerce_setting():
    assert coerce_setting("augment", "false") is False and coerce_setting("resume", "true") is True
    assert coerce_setting("max_minutes", "none") is None
    with pytest.raises(ValueError, match="cannot be empty"):
        coerce_setting("epochs", None)
    with pytest.raises(ValueError, match="must be bool"):
        coerce_setting("augment", "maybe")
    with pytest.raises(ValueError, match="must be int"):
        coerce_setting("epochs", 2.5)
    with pytest.raises(ValueError, match="image_size=100 is not divisible"):
        TrainSettings(image_size=100, num_cells=8).detector_config()


def test_module_rejects_bad_optimiser():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        YoloModule({"image_size": 64, "num_cells": 4}, optimizer="adam")
