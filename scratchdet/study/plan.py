"""What the study trains: the plan, its distinct runs and their ids.

A :class:`StudyPlan` holds the settings shared by every run (``base``, a flat
dict of training settings) and what each part varies. :func:`plan_runs`
expands it into the distinct runs (a run needed by several parts trains once),
each named by :func:`run_id`. Nothing here trains: the settings of a run are a
plain dict that :mod:`scratchdet.study.runner` hands to the training code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Mapping, Sequence

import yaml

from scratchdet.backbones import BACKBONES
from scratchdet.checkpoints import flatten
from scratchdet.config import SCORE_THRESHOLD, DetectorConfig
from scratchdet.recipe import recipe_path

__all__ = ["PARTS", "RECIPE_KEYS", "recipe_base", "RUN_FIELDS", "RUN_DEFAULTS", "StudyPlan", "FULL_PLAN", "REDUCED_PLAN", "REDUCED_PARTS",
           "plan_runs", "run_id", "arch_key", "check_parts"]

PARTS = ("backbones", "pretrained", "loss_weights", "small_faces")
# The settings a run may change; everything else comes from the plan's base.
RUN_FIELDS = ("backbone", "preset", "pretrained", "image_size", "num_cells", "boxes_per_cell",
              "lambda_coord", "lambda_noobj", "train_size", "epochs", "seed")
# A run field the base may leave out: runs start from random weights unless a part says otherwise.
RUN_DEFAULTS = {"pretrained": False}
_DETECTOR_FIELDS = tuple(f.name for f in fields(DetectorConfig))
# The study's short names for keys of the recipe tree (configs/study.yaml); ``threads`` is a run key.
RECIPE_KEYS = {
    "dataset": "data.dataset", "data_root": "data.root", "train_size": "data.train_size", "val_size": "data.val_size",
    "batch_size": "data.batch_size", "backbone": "model.backbone", "preset": "model.preset",
    "pretrained": "model.pretrained", "lr": "model.lr", "optimizer": "model.optimizer",
    "schedule": "model.schedule", "epochs": "trainer.max_epochs", "seed": "seed_everything", "threads": "threads",
    **{name: f"model.config.{name}" for name in _DETECTOR_FIELDS},
}


def recipe_base(recipe: str = "study", **values) -> dict:
    """The short-named values of a recipe file (those in :data:`RECIPE_KEYS`), then ``values`` on top."""
    tree = flatten(yaml.safe_load(recipe_path(recipe).read_text()) or {})
    by_key = {key: name for name, key in RECIPE_KEYS.items()}
    return {**{by_key[k]: v for k, v in tree.items() if k in by_key}, **values}


@dataclass(frozen=True)
class StudyPlan:
    """What the study trains and measures.

    Args:
        name: a label stored with the results.
        base: training settings shared by all runs, a flat dict in the
            training code's names (data, budget, optimiser, the baseline
            model); it must set every name in :data:`RUN_FIELDS` but those
            of :data:`RUN_DEFAULTS`. The baseline run is ``base`` itself with
            seed ``baseline_seeds[0]``.
        backbones: compared in ``backbones``, random init, ``backbone_seeds``
            each (the baseline's backbone also gets ``baseline_seeds``).
        equal_time: values of one more baseline run in ``backbones`` that
            trains about as long as the slowest backbone (e.g. ``{"epochs": 6}``):
            accuracy at equal training *time*, not equal images; ``{}``: none.
        pretrained_backbone: the backbone trained with and without ImageNet
            weights in ``pretrained``, beside the baseline's backbone.
        pretrained_values: what ``pretrained`` runs change (all three of
            them; e.g. a smaller budget, as MobileNetV2 trains slowly on a CPU).
        lambda_coord, lambda_noobj: the grid of ``loss_weights``.
        loss_values: what ``loss_weights`` runs change besides the two weights
            (e.g. a smaller preset, so that the grid fits the time budget).
        improvement: settings (names in :data:`RUN_FIELDS`) that change the
            baseline in ``small_faces``; ``improvement_label`` names it.
        baseline_seeds: seeds of the baseline and of the improvement (their
            spread is the study's noise level).
        collision_cells: grid sizes S of the collision table.
        test_images: first N test images (``None``: the whole split).
        score_threshold: the operating point of ``fp_per_image``, precision
            and recall (the default of ``YoloDetector.predict``).
        latency_threads, latency_repeats: CPU latency measurement (medians).
    """

    name: str
    base: Mapping
    backbones: tuple[str, ...] = ("resnet", "poolresnet", "mobilenet_v3")
    backbone_seeds: tuple[int, ...] = (0,)
    equal_time: Mapping = field(default_factory=dict)
    pretrained_backbone: str = "mobilenet_v2"
    pretrained_values: Mapping = field(default_factory=dict)
    lambda_coord: tuple[float, ...] = (1.25, 5.0, 20.0)
    lambda_noobj: tuple[float, ...] = (0.125, 0.5, 2.0)
    loss_values: Mapping = field(default_factory=dict)
    improvement: Mapping = field(default_factory=lambda: {"num_cells": 16})
    improvement_label: str = "finer grid (S=16)"
    baseline_seeds: tuple[int, ...] = (0, 1)
    collision_cells: tuple[int, ...] = (4, 8, 16, 32)
    test_images: int | None = None
    score_threshold: float = SCORE_THRESHOLD
    latency_threads: int = 1
    latency_repeats: int = 20

    def __post_init__(self) -> None:
        missing = [f for f in RUN_FIELDS if f not in self.base and f not in RUN_DEFAULTS]
        if missing:
            raise ValueError(f"base must set every run field but {list(RUN_DEFAULTS)}; missing {missing}")
        unknown = [b for b in (*self.backbones, self.pretrained_backbone) if b not in BACKBONES]
        if unknown:
            raise ValueError(f"unknown backbone(s) {unknown}; known backbones: {sorted(BACKBONES)}")
        if not self.pretrained_backbone.startswith("mobilenet"):
            raise ValueError(f"pretrained_backbone must be a MobileNet (ImageNet weights exist only for "
                             f"torchvision's models), got {self.pretrained_backbone!r}")
        bad = sorted(set(self.improvement) - set(RUN_FIELDS))
        if bad or not self.improvement:
            raise ValueError(f"improvement must change some of {list(RUN_FIELDS)}, got {dict(self.improvement)}")
        free = [f for f in RUN_FIELDS if f not in ("pretrained", "lambda_coord", "lambda_noobj")]
        for name in ("pretrained_values", "loss_values", "equal_time"):
            bad = sorted(set(getattr(self, name)) - set(free))
            if bad:
                raise ValueError(f"{name} may only change {free}, got {bad}")
        for name in ("backbone_seeds", "baseline_seeds", "lambda_coord", "lambda_noobj", "collision_cells"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        if self.test_images is not None and self.test_images <= 0:
            raise ValueError(f"test_images must be positive or None, got {self.test_images}")

    def settings(self, **values) -> dict:
        """The training settings of one run: ``RUN_DEFAULTS``, then ``base``, then ``values``.

        Raises:
            ValueError: ``values`` names a setting outside :data:`RUN_FIELDS`,
                or the detector geometry is invalid (e.g. a grid the image size
                cannot hold), before anything trains.
        """
        bad = sorted(set(values) - set(RUN_FIELDS))
        if bad:
            raise ValueError(f"a run may only change {list(RUN_FIELDS)}, got {bad}")
        settings = {**RUN_DEFAULTS, **self.base, **values}
        DetectorConfig(**{k: settings[k] for k in _DETECTOR_FIELDS if k in settings})  # validates
        return settings

    def baseline(self, seed: int | None = None) -> dict:
        """The baseline run's values (:data:`RUN_FIELDS`)."""
        settings = self.settings(seed=self.baseline_seeds[0] if seed is None else seed)
        return {name: settings[name] for name in RUN_FIELDS}

    def to_dict(self) -> dict:
        """The plan as plain JSON data (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping) -> "StudyPlan":
        """The plan :meth:`to_dict` wrote (e.g. ``results["plan"]``)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


# About 105 minutes on 2 CPU cores (measured: 104). Every run: 256 px, S=8, B=2, AdamW 2e-3 with warm-up +
# cosine, batch 16, 3 epochs of 4,000 SynthFaces training images (750 steps). Two budgets are cut to fit: the
# loss-weight grid (9 runs) uses the small PoolResNet, and the pretrained comparison 3 epochs of 1,600 images
# (MobileNetV2 trains at ~6 images/s here, PoolResNet at ~50). One PoolResNet run gets 6 epochs: ResNet's
# training time.
FULL_PLAN = StudyPlan(
    name="full",
    base=recipe_base("study", threads=2),  # configs/study.yaml
    equal_time={"epochs": 6},
    pretrained_values={"train_size": 1600, "epochs": 3},
    loss_values={"preset": "small"},
)
# A few minutes: the notebook's re-run. Same questions, 1 epoch of 480 images, a 2x2 loss grid, no MobileNetV2.
REDUCED_PLAN = StudyPlan(
    name="reduced",
    base={**FULL_PLAN.base, "epochs": 1, "train_size": 480, "val_size": 50},
    backbones=("resnet", "poolresnet"), lambda_coord=(1.25, 5.0), lambda_noobj=(0.5, 2.0),
    loss_values={"preset": "small"}, baseline_seeds=(0,), test_images=100, latency_repeats=10,
)
REDUCED_PARTS = ("backbones", "loss_weights", "small_faces")


def run_id(values: Mapping) -> str:
    """A readable, unique folder name, e.g. ``poolresnet-medium-256px-S8-B2-lc5-ln0.5-3x4000-seed0``.

    ``3x4000``: 3 epochs of 4,000 training images.
    """
    pretrained = "-pretrained" if values["pretrained"] else ""
    return (f"{values['backbone']}{pretrained}-{values['preset']}-{values['image_size']}px-S{values['num_cells']}"
            f"-B{values['boxes_per_cell']}-lc{values['lambda_coord']:g}-ln{values['lambda_noobj']:g}"
            f"-{values['epochs']}x{values['train_size']}-seed{values['seed']}")


def arch_key(values: Mapping) -> str:
    """What an untrained model's profile depends on, e.g. ``poolresnet-medium-256px-S8-B2``."""
    return f"{values['backbone']}-{values['preset']}-{values['image_size']}px-S{values['num_cells']}" \
           f"-B{values['boxes_per_cell']}"


def check_parts(parts: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``parts`` is a non-empty list of :data:`PARTS`."""
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ValueError(f"parts must be a non-empty list of {list(PARTS)}, got {list(parts)}")


def _wanted(plan: StudyPlan, parts: Sequence[str]) -> list[tuple[str, dict]]:
    """``(part, values)`` of every run each part asks for, duplicates included, in running order."""
    wanted: list[tuple[str, dict]] = []
    if "backbones" in parts:
        for backbone in plan.backbones:
            for seed in plan.backbone_seeds:
                wanted.append(("backbones", {"backbone": backbone, "seed": seed}))
        for seed in plan.baseline_seeds:
            wanted.append(("backbones", {"seed": seed}))
        if plan.equal_time:
            wanted.append(("backbones", dict(plan.equal_time)))
    if "loss_weights" in parts:
        for coord in plan.lambda_coord:
            for noobj in plan.lambda_noobj:
                wanted.append(("loss_weights", {**plan.loss_values, "lambda_coord": float(coord),
                                                "lambda_noobj": float(noobj)}))
    if "small_faces" in parts:
        for seed in plan.baseline_seeds:
            wanted.append(("small_faces", {"seed": seed}))
            wanted.append(("small_faces", {**plan.improvement, "seed": seed}))
    if "pretrained" in parts:  # last: MobileNetV2 trains slowest on a CPU
        wanted.append(("pretrained", dict(plan.pretrained_values)))  # the baseline at this budget
        for pretrained in (False, True):
            wanted.append(("pretrained", {**plan.pretrained_values, "backbone": plan.pretrained_backbone,
                                          "pretrained": pretrained}))
    return wanted


def plan_runs(plan: StudyPlan, parts: Sequence[str] = PARTS) -> list[dict]:
    """The distinct training runs of ``parts``: ``[{"id", "values", "parts"}]``, in running order.

    ``values`` holds every name of :data:`RUN_FIELDS`. A run needed by several
    parts (the baseline) appears once, listing them all.
    """
    check_parts(parts)
    runs: dict[str, dict] = {}
    for part, values in _wanted(plan, parts):
        settings = plan.settings(**{**plan.baseline(), **values})
        resolved = {name: settings[name] for name in RUN_FIELDS}
        key = run_id(resolved)
        run = runs.setdefault(key, {"id": key, "values": resolved, "parts": []})
        if part not in run["parts"]:
            run["parts"].append(part)
    return list(runs.values())
