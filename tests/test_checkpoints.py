"""Nothing lost: what is saved when, resume, refusals, interrupts and divergence (checkpoints.py, pipeline.py).

Tiny runs of ``configs/smoke.yaml`` (16 images of 64 px, 4 steps an epoch).
"""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from scratchdet._io import atomic_write, fresh_dir
from scratchdet.checkpoints import RECIPE_KEY, AtomicCheckpointIO, read_recipe, recipe_conflicts
from scratchdet.model import YoloDetector
from scratchdet.pipeline import RunFolderError, TrainingInterrupted, run_training
from scratchdet.training import TrainingDiverged

STEPS_PER_EPOCH = 4  # smoke: 16 images, batch 4


def smoke(folder: Path, extra_callbacks=(), **overrides):
    return run_training("smoke", {"output_dir": str(folder / "run"), "data.root": str(folder.parent / "data"),
                                  "threads": 1, **overrides}, extra_callbacks=extra_callbacks)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def finite(state: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def test_last_is_the_last_epoch_and_best_the_best(tmp_path):
    result = smoke(tmp_path, **{"trainer.max_epochs": 3})
    last, best = load(Path(result.last_checkpoint)), load(Path(result.best_checkpoint))
    assert last["epoch"] == 2 and last["global_step"] == 3 * STEPS_PER_EPOCH
    assert best["epoch"] <= 2 and RECIPE_KEY in last and RECIPE_KEY in best
    assert last[RECIPE_KEY]["model"]["preset"] == "small"
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


def test_resume_needs_no_flags_and_continues(tmp_path):
    smoke(tmp_path, **{"trainer.max_epochs": 1})
    resumed = run_training(overrides={"output_dir": str(tmp_path / "run"), "resume": True, "threads": 1,
                                      "trainer.max_epochs": 3})
    assert resumed.trainer.current_epoch == 3 and resumed.steps_this_run == 2 * STEPS_PER_EPOCH
    assert resumed.recipe["model"]["preset"] == "small"  # from the checkpoint, not the defaults (medium)
    assert load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 3 * STEPS_PER_EPOCH


def test_resume_of_a_finished_run_trains_nothing(tmp_path):
    smoke(tmp_path)
    before = (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes()
    again = run_training(overrides={"output_dir": str(tmp_path / "run"), "resume": True, "threads": 1})
    assert again.steps_this_run == 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes() == before


@pytest.mark.parametrize("change,key", [
    ({"model.config.boxes_per_cell": 3}, "model.config.boxes_per_cell"),
    ({"model.preset": "medium"}, "model.preset"),
    ({"model.config.image_size": 128}, "model.config.image_size"),
])
def test_mismatched_resume_stops_before_touching_anything(tmp_path, change, key):
    smoke(tmp_path)
    folder = tmp_path / "run" / "checkpoints"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ValueError, match=f"contradicts .*{key}: checkpoint"):
        run_training(overrides={"output_dir": str(tmp_path / "run"), "resume": True, **change})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_resume_without_a_checkpoint(tmp_path):
    with pytest.raises(RunFolderError, match="no checkpoint to resume from"):
        run_training(overrides={"output_dir": str(tmp_path / "nothing"), "resume": True})


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    smoke(tmp_path)
    run = tmp_path / "run"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RunFolderError, match="already holds checkpoints"):
        smoke(tmp_path, **{"model.lr": 0.01})
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    replaced = smoke(tmp_path, overwrite=True, **{"trainer.max_epochs": 1})  # explicit: allowed
    assert load(Path(replaced.last_checkpoint))["epoch"] == 0


class Interrupt(pl.Callback):
    """Ctrl-C after ``step`` optimiser steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_interrupt_and_resume_end_like_a_clean_run(tmp_path):
    clean = smoke(tmp_path / "clean", **{"trainer.max_epochs": 3})
    with pytest.raises(TrainingInterrupted) as stop:
        smoke(tmp_path / "killed", extra_callbacks=[Interrupt(6)], **{"trainer.max_epochs": 3})
    assert stop.value.checkpoint.endswith("last.ckpt")
    assert stop.value.resume_command == f"scratchdet train --output_dir {tmp_path / 'killed' / 'run'} --resume"
    assert load(Path(stop.value.checkpoint))["global_step"] == 6  # the moment of the interrupt
    resumed = run_training(overrides={"output_dir": str(tmp_path / "killed" / "run"), "resume": True,
                                      "threads": 1})
    assert resumed.trainer.current_epoch == clean.trainer.current_epoch == 3
    assert resumed.trainer.global_step == clean.trainer.global_step == 3 * STEPS_PER_EPOCH


def test_interrupt_before_any_step_keeps_last_ckpt(tmp_path):
    smoke(tmp_path, **{"trainer.max_epochs": 1})
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    class EarlyInterrupt(pl.Callback):
        def on_train_start(self, trainer, module):
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        run_training(overrides={"output_dir": str(tmp_path / "run"), "resume": True, "threads": 1,
                                "trainer.max_epochs": 3}, extra_callbacks=[EarlyInterrupt()])
    assert last.read_bytes() == before


def test_divergence_stops_at_once_and_keeps_no_bad_weights(tmp_path):
    class Poison(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 1:
                with torch.no_grad():
                    next(module.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"training diverged at step 5 \(epoch 1\): loss term '\w+' is nan"):
        smoke(tmp_path, extra_callbacks=[Poison()], **{"trainer.max_epochs": 3})
    folder = tmp_path / "run" / "checkpoints"
    last = load(folder / "last.ckpt")
    assert last["epoch"] == 0 and finite(last["state_dict"])  # the last good epoch
    assert finite(load(folder / "best.ckpt")["state_dict"])


def test_a_huge_learning_rate_stops_in_the_first_epoch(tmp_path):
    with pytest.raises(TrainingDiverged, match="epoch 0"):
        smoke(tmp_path, **{"model.lr": 1e6})
    assert not list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))


def test_atomic_checkpoint_io_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"a": torch.ones(3)}, path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpo")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"a": torch.zeros(3)}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_atomic_write_and_fresh_dir(tmp_path):
    atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("one"))
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "a.txt", lambda tmp: (Path(tmp).write_text("tw"), (_ for _ in ()).throw(
            KeyboardInterrupt()))[0])
    assert (tmp_path / "a.txt").read_text() == "one" and len(list(tmp_path.iterdir())) == 1
    assert [fresh_dir(tmp_path, "run").name for _ in range(3)] == ["run", "run2", "run3"]


def test_recipe_conflicts_ignore_trainer_keys():
    saved = {"model": {"lr": 1.0, "config": {"num_cells": 4}}, "trainer": {"max_epochs": 2}, "data": {"num_workers": 0}}
    wanted = {"model": {"lr": 1.0, "config": {"num_cells": 8}}, "trainer": {"max_epochs": 9}, "data": {"num_workers": 2}}
    assert recipe_conflicts(saved, wanted) == ["model.config.num_cells: checkpoint 4, now 8"]


def test_read_recipe_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_recipe(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        read_recipe(junk)
    old = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}}, old)
    with pytest.raises(ValueError, match="holds no scratchdet recipe"):
        read_recipe(old)


def _cli(*args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.Popen([sys.executable, "-m", "scratchdet", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def test_ctrl_c_on_train_prints_the_resume_command_and_exits_130(tmp_path):
    run = tmp_path / "run"
    proc = _cli("--config", "smoke", "--output_dir", str(run), "--data.root", str(tmp_path / "data"),
                "--trainer.max_epochs", "1000", "--threads", "1")
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.communicate()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # say where it hung instead of a bare timeout
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"train did not exit within 120 s of Ctrl-C; its stderr ends with:\n{err[-3000:]}")
    assert proc.returncode == 130, err
    assert f"resume with: scratchdet train --output_dir {run} --resume" in err
    assert "Traceback" not in err
    saved = load(last)
    assert saved["global_step"] > 0 and finite(saved["state_dict"])
    YoloDetector.from_checkpoint(last)
    epoch = saved["epoch"]
    resumed = subprocess.run([sys.executable, "-m", "scratchdet", "train", "--output_dir", str(run), "--resume",
                              "--trainer.max_epochs", str(epoch + 2), "--threads", "1"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert load(last)["epoch"] == epoch + 1


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_ddp_on_the_cpu_in_two_processes(tmp_path):
    """Lightning's DDP (gloo) on 2 CPU processes: both ranks train, rank 0 writes a loadable checkpoint."""
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "scratchdet", "train", "--config", "smoke", "--output_dir", str(run),
         "--data.root", str(tmp_path / "data"), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
         "--trainer.strategy", "ddp", "--trainer.max_epochs", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "PL_DISABLE_FORK": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training images per rank: [8, 8]" in proc.stdout, proc.stdout  # 16 images split over 2 ranks
    checkpoint = load(run / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2 and checkpoint[RECIPE_KEY]["trainer"]["strategy"] == "ddp"
    model = YoloDetector.from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert math.isfinite(float(model(torch.rand(1, 3, 64, 64)).sum()))
