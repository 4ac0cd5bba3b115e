"""The training config tree: one ``LightningCLI`` over ``YoloModule``, ``FaceDataModule`` and the Trainer.

A *recipe* is a nested mapping with four sections, the same in a YAML file
(``configs/*.yaml``), on the command line and in Python::

    seed_everything: 0
    model:            # YoloModule's arguments
      config:         # DetectorConfig: image_size, num_cells, boxes_per_cell, lambda_*, conf_target
        image_size: 256
      backbone: poolresnet
      lr: 0.002
    data:             # FaceDataModule's arguments (image_size and seed are linked, not set)
      train_size: 4000
    trainer:          # Lightning's Trainer: max_epochs, max_time, accelerator, devices, precision, ...
      max_epochs: 7

Every constructor argument is reachable as a dotted key
(``--model.config.num_cells 16``, ``--trainer.max_time 00:00:10:00``), types
and allowed values come from the signatures (``scratchdet train --help``
lists them with their docs), and ``model.config.image_size`` is set once:
the CLI links it to ``data.image_size`` (and ``seed_everything`` to
``data.seed``). Beside the tree, ``--output_dir`` picks the run folder,
``--resume`` continues from its ``last.ckpt``, ``--overwrite`` allows a new
run in a folder that holds checkpoints, and ``--threads`` sets torch's CPU
threads.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from pytorch_lightning.cli import LightningCLI

from scratchdet.data.datamodule import FaceDataModule
from scratchdet.training import YoloModule

__all__ = ["TrainCLI", "RUN_KEYS", "CONFIGS_DIR", "TRAINER_DEFAULTS", "recipe_path", "parse_recipe",
           "recipe_dict", "override_args", "check_trainer", "max_time_seconds"]

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
# Keys of a run that are not part of the recipe (where and how to run it).
RUN_KEYS = ("config", "output_dir", "resume", "overwrite", "threads", "__default_config__")
_SWITCHES = ("resume", "overwrite")
# Trainer defaults that differ from Lightning's; a recipe or a flag overrides them.
TRAINER_DEFAULTS = {
    "max_epochs": 10, "gradient_clip_val": 10.0, "deterministic": "warn", "num_sanity_val_steps": 0,
    "log_every_n_steps": 10, "enable_model_summary": False,
}


class TrainCLI(LightningCLI):
    """``scratchdet train``: Lightning's CLI with the image size linked and the run flags added.

    Classes are not built when parsing (:meth:`instantiate_classes` is
    deferred): :func:`scratchdet.pipeline.run_training` first checks the run
    folder and the resume, so a refused run touches nothing, then calls
    :meth:`build` with the callbacks, loggers and plugins of the run.
    """

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.config.image_size", "data.image_size")
        parser.link_arguments("seed_everything", "data.seed")
        parser.add_argument("--output_dir", "--output-dir", type=str, default="runs/train",
                            help="run folder: checkpoints/, logs/ and config.yaml go here")
        parser.add_argument("--resume", action="store_true",
                            help="continue from <output_dir>/checkpoints/last.ckpt with its saved recipe; flags "
                                 "may change only trainer.* (e.g. more epochs) and data.num_workers / data.root")
        parser.add_argument("--overwrite", action="store_true",
                            help="allow a new run in an output_dir that already holds checkpoints (replaces them)")
        parser.add_argument("--threads", type=Optional[int], default=None,
                            help="torch CPU threads (null: torch's default)")

    def instantiate_classes(self) -> None:
        """Deferred: see :meth:`build`."""

    def build(self, **trainer_kwargs: Any) -> None:
        """Build ``self.model``, ``self.datamodule`` and ``self.trainer`` (extra Trainer arguments given here)."""
        self._trainer_kwargs = trainer_kwargs
        super().instantiate_classes()

    def instantiate_trainer(self, **kwargs: Any):
        return super().instantiate_trainer(**{**getattr(self, "_trainer_kwargs", {}), **kwargs})


def recipe_path(name: str | os.PathLike) -> Path:
    """A recipe file: a path, or the name of one in ``configs/`` (``"demo"`` -> ``configs/demo.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = CONFIGS_DIR / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    known = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")) if CONFIGS_DIR.is_dir() else []
    raise FileNotFoundError(f"no recipe {os.fspath(name)!r}: not a file, and not one of configs/ {known}")


def override_args(overrides: Mapping[str, Any] | Sequence[str]) -> list[str]:
    """Dotted-key overrides -> command-line arguments (``{"model.lr": 0.1}`` -> ``["--model.lr=0.1"]``)."""
    if not isinstance(overrides, Mapping):
        return [str(a) for a in overrides]
    args = []
    for key, value in overrides.items():
        if key in _SWITCHES:  # flags without a value
            args += [f"--{key}"] if value else []
            continue
        if isinstance(value, bool) or value is None:
            text = {True: "true", False: "false", None: "null"}[value]
        elif isinstance(value, (dict, list, tuple)):
            text = json.dumps(value)
        else:
            text = str(value)
        args.append(f"--{key}={text}")
    return args


def _named_configs(args: Sequence[str]) -> list[str]:
    """``--config demo`` -> ``--config <repo>/configs/demo.yaml`` (paths that exist stay as they are)."""
    out, args = [], list(args)
    for i, arg in enumerate(args):
        if arg.startswith("--config=") or arg.startswith("-c="):
            flag, value = arg.split("=", 1)
            arg = f"{flag}={recipe_path(value)}"
        elif i > 0 and args[i - 1] in ("--config", "-c") and not arg.lstrip().startswith("{"):
            arg = str(recipe_path(arg))
        out.append(arg)
    return out


def parse_recipe(args: Sequence[str] = ()) -> TrainCLI:
    """Parse command-line style ``args`` into a :class:`TrainCLI` (nothing built or written yet).

    Raises:
        jsonargparse.ArgumentError (a ``ValueError``'s sibling): unknown keys,
        bad types or values; the message names the key.
    """
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")  # Lightning 2.6 calls deprecated APIs
    with warnings.catch_warnings():  # args are given on purpose (from scratchdet's own argv or Python)
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
        return TrainCLI(YoloModule, FaceDataModule, args=_named_configs(args), run=False, save_config_callback=None,
                        auto_configure_optimizers=False, seed_everything_default=0,
                        trainer_defaults=dict(TRAINER_DEFAULTS),
                        parser_kwargs={"prog": "scratchdet train", "exit_on_error": False,
                                       "description": "Train a face detector. Recipes: configs/*.yaml (--config). "
                                                      "Every key below can be set in a recipe or as a flag."})


def recipe_dict(cli: TrainCLI) -> dict[str, Any]:
    """The resolved recipe of a parsed CLI as a plain nested dict, without the run keys."""
    tree = cli.config.clone().as_dict()
    return {k: v for k, v in tree.items() if k not in RUN_KEYS}


def max_time_seconds(value: Any) -> float | None:
    """Lightning's ``max_time`` (``"DD:HH:MM:SS"``, a dict of timedelta fields, a timedelta) in seconds."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            parts = [float(p) for p in value.split(":")]
            if len(parts) != 4:
                raise ValueError(value)
            return dt.timedelta(days=parts[0], hours=parts[1], minutes=parts[2], seconds=parts[3]).total_seconds()
        if isinstance(value, Mapping):
            return dt.timedelta(**value).total_seconds()
        return value.total_seconds()
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"trainer.max_time must be 'DD:HH:MM:SS' or a mapping like {{minutes: 10}}, "
                         f"got {value!r}") from None


def check_trainer(trainer: Mapping[str, Any]) -> None:
    """Refuse trainer settings that would silently do nothing or never stop.

    Raises:
        ValueError: ``max_epochs`` not a positive int (0 trains nothing, -1
            never stops), or a ``max_time`` that is not positive.
    """
    epochs = trainer.get("max_epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"trainer.max_epochs must be a positive number of epochs, got {epochs!r}"
                         + (" (-1 would train forever)" if epochs == -1 else ""))
    seconds = max_time_seconds(trainer.get("max_time"))
    if seconds is not None and (not math.isfinite(seconds) or seconds <= 0):
        raise ValueError(f"trainer.max_time must be a positive duration, got {trainer.get('max_time')!r}")
