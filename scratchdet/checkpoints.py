"""Checkpoints that never lose work: what is saved when, atomically, with its recipe.

A training run writes two files to ``<output_dir>/checkpoints/``:

* ``last.ckpt``: the end of the last finished epoch (after its validation),
  and the moment of an interrupt (Ctrl-C or a crash) once a step has been
  taken in this run; ``--resume`` continues from it.
* ``best.ckpt``: the epoch with the best ``val/ap50`` so far.

Both are written atomically (:class:`AtomicCheckpointIO`: a temporary file
in the same folder, then a rename), so a crash mid-write leaves the previous
file whole. A checkpoint whose weights are not all finite is never written
(:class:`FiniteModelCheckpoint`). Every checkpoint carries the run's resolved
recipe (:class:`RecipeInCheckpoint`, key ``"scratchdet_recipe"``), so
``--resume`` needs no flag repeated, and :func:`recipe_conflicts` names the
keys where a resume contradicts it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from scratchdet._io import atomic_write
from scratchdet.training import TrainingDiverged

__all__ = ["AtomicCheckpointIO", "FiniteModelCheckpoint", "InterruptCheckpoint", "RecipeInCheckpoint",
           "RECIPE_KEY", "RESUMABLE_KEYS", "read_recipe", "recipe_conflicts", "flatten", "checkpoint_callbacks",
           "weights_are_finite"]

RECIPE_KEY = "scratchdet_recipe"
# Keys a resume may change: how long and how to run, not what is trained.
RESUMABLE_KEYS = ("trainer.", "data.num_workers", "data.root")


def weights_are_finite(module: torch.nn.Module) -> bool:
    """Whether every parameter and buffer of ``module`` is finite (no NaN, no inf)."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoint I/O, written to a temporary file and renamed into place."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


class FiniteModelCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` that refuses to write weights with NaN or inf (it raises instead)."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        if not weights_are_finite(trainer.lightning_module):
            raise RuntimeError(f"not saving {filepath}: the model's weights are NaN or infinite "
                               f"(training diverged by step {trainer.global_step})")
        super()._save_checkpoint(trainer, filepath)


class InterruptCheckpoint(Callback):
    """Writes ``path`` when training stops on Ctrl-C or a crash, if there is new work to keep.

    Nothing is written when no optimiser step was taken in this run (an
    interrupt while the data cache is built, a failed resume: the previous
    ``last.ckpt`` stays byte-identical), when the weights are not finite, or
    when the exception is a divergence (the last good epoch stays).
    ``interrupted`` tells whether the run ended on Ctrl-C.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.start_step: int | None = None
        self.interrupted = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_step = trainer.global_step

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.interrupted = isinstance(exception, KeyboardInterrupt)
        if isinstance(exception, TrainingDiverged) or self.start_step is None:
            return
        if trainer.global_step > self.start_step and weights_are_finite(pl_module):
            trainer.save_checkpoint(str(self.path))


class RecipeInCheckpoint(Callback):
    """Stores the run's resolved recipe (a plain nested dict) in every checkpoint."""

    def __init__(self, recipe: Mapping[str, Any]) -> None:
        self.recipe = dict(recipe)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[RECIPE_KEY] = self.recipe


def checkpoint_callbacks(folder: str | os.PathLike, recipe: Mapping[str, Any]) -> dict[str, Callback]:
    """The callbacks that keep ``best.ckpt``, ``last.ckpt`` and the recipe in ``folder``.

    Returns:
        ``{"best": ..., "last": ..., "interrupt": ..., "recipe": ...}``.
    """
    folder = Path(folder)
    best = FiniteModelCheckpoint(dirpath=str(folder), filename="best", monitor="val/ap50", mode="max",
                                 save_top_k=1, save_last=False, enable_version_counter=False)
    # monitor=None, top_k=1: overwritten at every epoch end, after validation.
    last = FiniteModelCheckpoint(dirpath=str(folder), filename="last", monitor=None, save_top_k=1,
                                 save_on_train_epoch_end=True, enable_version_counter=False)
    return {"best": best, "last": last, "interrupt": InterruptCheckpoint(folder / "last.ckpt"),
            "recipe": RecipeInCheckpoint(recipe)}


def read_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """The recipe stored in a training checkpoint (clear errors for other files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"{path} is not a readable checkpoint ({type(error).__name__})") from None
    recipe = checkpoint.get(RECIPE_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(recipe, dict):
        raise ValueError(f"{path} holds no scratchdet recipe (written by an older scratchdet or another "
                         "tool); start a new run in another --output-dir")
    return recipe


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"lr": 1}}`` -> ``{"model.lr": 1}`` (dicts only; lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def recipe_conflicts(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Dotted keys where ``wanted`` differs from ``saved``, other than :data:`RESUMABLE_KEYS`.

    Returns:
        Sorted ``"key: checkpoint X, now Y"`` strings; empty when the resume
        trains the same model on the same data.
    """
    a, b = flatten(saved), flatten(wanted)
    keys = sorted(k for k in set(a) | set(b) if not k.startswith(RESUMABLE_KEYS) and a.get(k) != b.get(k))
    return [f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}" for k in keys]
