"""Running the study: train, evaluate and profile each run, resumably.

Every run of :func:`~scratchdet.study.plan.plan_runs` trains once
(:func:`_train`, the one function that calls the training code), is
evaluated on the SynthFaces test split (:func:`evaluate_run`) and writes
``<work_dir>/<run id>/record.json``. Running the study again reuses the
records whose settings match, so an interrupted study continues where it
stopped. Untrained models are profiled once per architecture
(:func:`profile_model`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import torch

from scratchdet._io import atomic_write_text
from scratchdet.config import SCORE_THRESHOLD, DetectorConfig
from scratchdet.data.synthfaces import SynthFaces
from scratchdet.evaluation import SIZE_BINS, evaluate_by_crowd, evaluate_by_size, operating_point
from scratchdet.grid import collision_rates, gather_boxes
from scratchdet.model import YoloDetector
from scratchdet.pipeline import predict_source, run_training
from scratchdet.profiling import count_macs, count_parameters, environment, latency_ms
from scratchdet.study.plan import FULL_PLAN, PARTS, RECIPE_KEYS, StudyPlan, arch_key, check_parts, plan_runs
from scratchdet.study.report import SCHEMA_VERSION, jsonable, summarize
from scratchdet.study.weights import pretrained_weights

__all__ = ["Trained", "evaluate_run", "profile_model", "run_study"]


class Trained(NamedTuple):
    """What :func:`_train` returns about one finished training run."""

    model: YoloDetector  # the checkpoint's model, in eval mode
    checkpoint: Path  # a file in ``<output_dir>/checkpoints/`` (plot_examples reloads it from there)
    train_seconds: float  # time in training steps (data loading included, validation not)
    images_per_second: float  # training throughput over those seconds
    epochs_done: int
    final_val_ap50: float | None  # the last validation AP50, None if none was logged


def _train(settings: Mapping, output_dir: Path) -> Trained:
    """Train one run: ``configs/study.yaml`` with ``settings`` on top (the one place the study trains).

    Args:
        settings: the run's short-named settings (:meth:`StudyPlan.settings`;
            names in :data:`~scratchdet.study.plan.RECIPE_KEYS`).
        output_dir: the run's folder (logs and ``checkpoints/``). A run whose
            record no longer matches trains again there (``overwrite``).

    Returns:
        :class:`Trained`: the best checkpoint by validation AP50 (the last
        one if none was kept), its model, and the training speed.

    Raises:
        ValueError: settings the training code rejects (e.g. ``pretrained``
            with a backbone that has no ImageNet weights), or a name that is
            not in ``RECIPE_KEYS``.
    """
    unknown = sorted(set(settings) - set(RECIPE_KEYS))
    if unknown:
        raise ValueError(f"study settings {unknown} have no recipe key; known: {sorted(RECIPE_KEYS)}")
    overrides = {RECIPE_KEYS[name]: value for name, value in settings.items()}
    overrides.update({"output_dir": str(output_dir), "overwrite": True, "trainer.enable_progress_bar": False})
    result = run_training("study", overrides)
    checkpoint = Path(result.best_checkpoint or result.last_checkpoint)
    metrics = result.trainer.callback_metrics
    return Trained(YoloDetector.from_checkpoint(checkpoint).eval(), checkpoint, result.train_seconds,
                   result.images_per_second, int(result.trainer.current_epoch),
                   float(metrics["val/ap50"]) if "val/ap50" in metrics else None)


def evaluate_run(model: YoloDetector, source, score_threshold: float = SCORE_THRESHOLD,
                 batch_size: int = 32) -> dict:
    """Test metrics of one trained model: AP50 overall, by face size, by faces per image, operating point.

    Args:
        model: a :class:`~scratchdet.model.YoloDetector`.
        source: ``source[i] -> (uint8 (H, W, 3) RGB, boxes (M, 4) xyxy px)``.
        score_threshold: where ``fp_per_image``, ``precision`` and ``recall``
            are counted (AP uses every detection above ``EVAL_SCORE_THRESHOLD``).
        batch_size: images per forward pass.

    Returns:
        dict: ``ap50``, ``ap50_<size bin>``, ``num_gt_<size bin>``,
        ``ap50_<crowd bin>``, ``num_images_<crowd bin>``, ``fp_per_image``,
        ``precision``, ``recall``, ``tp``, ``fp``, ``fn``, ``num_images``,
        ``seconds`` (prediction and evaluation).
    """
    start = time.perf_counter()
    predictions, truths = predict_source(model, source, batch_size)
    out = dict(evaluate_by_size(predictions, truths))
    out.update(evaluate_by_crowd(predictions, truths))
    point = operating_point(predictions, truths, score_threshold)
    out.update({k: point[k] for k in ("fp_per_image", "precision", "recall", "tp", "fp", "fn", "num_images")})
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def profile_model(values: Mapping, repeats: int = 20, threads: int = 1) -> dict:
    """Parameters, MACs and batch-1 CPU latency (median ms) of an untrained model with ``values``."""
    config = DetectorConfig(image_size=values["image_size"], num_cells=values["num_cells"],
                            boxes_per_cell=values["boxes_per_cell"])
    torch.manual_seed(0)
    model = YoloDetector(config, values["backbone"], values["preset"]).eval()
    return {"params": count_parameters(model), "macs": count_macs(model, config.image_size),
            "latency_ms": round(latency_ms(model, config.image_size, repeats=repeats, threads=threads), 3),
            "latency_threads": threads}


def _train_and_evaluate(plan: StudyPlan, run: dict, folder: Path, test) -> dict:
    """The record of one run, trained now: its settings, training speed and test metrics."""
    settings = plan.settings(**run["values"])
    start = time.perf_counter()
    trained = _train(settings, folder)
    train_wall = time.perf_counter() - start
    record = {
        "id": run["id"], "values": run["values"], "settings": settings,
        "train_seconds": round(trained.train_seconds, 1), "train_wall_seconds": round(train_wall, 1),
        "images_per_second": round(trained.images_per_second, 1),
        "train_images": settings["epochs"] * (settings.get("train_size") or 0),
        "epochs_done": trained.epochs_done,
        "final_val_ap50": None if trained.final_val_ap50 is None else round(trained.final_val_ap50, 4),
        "checkpoint": trained.checkpoint.name,
        "test": evaluate_run(trained.model, test, plan.score_threshold),
    }
    record["wall_seconds"] = round(time.perf_counter() - start, 1)
    return record


def _reusable(path: Path, settings: Mapping, test_images: int | None) -> dict | None:
    """The record at ``path`` if it was made with these settings and test images, else ``None``.

    A record may hold more settings than ``settings`` (older records stored
    every training setting, defaults included): it is reused when it agrees
    on every setting the plan names (the output folder aside).
    """
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    stored = record.get("settings") or {}
    same = all(k in stored and stored[k] == v for k, v in settings.items() if k != "output_dir")
    return record if same and record.get("test_images") == test_images \
        and record.get("schema") == SCHEMA_VERSION else None


def _test_source(plan: StudyPlan) -> SynthFaces:
    """The SynthFaces test split the study evaluates on, at the base image size."""
    root = {"root": plan.base["data_root"]} if "data_root" in plan.base else {}
    return SynthFaces("test", image_size=plan.base["image_size"], num_images=plan.test_images, **root)


def _records(plan: StudyPlan, runs: list[dict], work: Path, test, reuse: bool, say) -> dict[str, dict]:
    """``{run id: record}``, training the runs that have no reusable ``record.json``."""
    records = {}
    for number, run in enumerate(runs, 1):
        folder = work / run["id"]
        settings = plan.settings(**run["values"])
        record = _reusable(folder / "record.json", settings, plan.test_images) if reuse else None
        label = f"[{number}/{len(runs)}] {run['id']} ({', '.join(run['parts'])})"
        if record is None:
            say(f"{label}: training")
            record = _train_and_evaluate(plan, run, folder, test)
            record.update(schema=SCHEMA_VERSION, test_images=plan.test_images)
            atomic_write_text(folder / "record.json", json.dumps(jsonable(record), indent=2) + "\n")
        else:
            say(f"{label}: reusing {folder / 'record.json'}")
        record.update(id=run["id"], values=run["values"], parts=run["parts"])  # as this plan names them
        test_metrics = record["test"]
        say(f"    AP50 {test_metrics['ap50']:.3f} (<16 px {test_metrics['ap50_small']:.3f}), "
            f"{test_metrics['fp_per_image']:.2f} FP/image, {record['images_per_second']:.0f} img/s, "
            f"{record['wall_seconds']:.0f} s")
        records[run["id"]] = record
    return records


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
        ``{"schema", "plan", "parts", "skipped_parts", "runs": {id: record},
        "profiles": {arch: profile}, "collisions": [...], "pretrained_weights":
        {...}, "summary": :func:`summarize`, "wall_seconds",
        "train_wall_seconds" (sum over runs, reused or not), "environment"}``.
    """
    check_parts(parts)
    say = progress or (lambda line: None)
    start = time.perf_counter()
    weights = pretrained_weights(plan.pretrained_backbone) if "pretrained" in parts else None
    skipped_parts = ["pretrained"] if weights is not None and not weights["available"] else []
    if skipped_parts:
        say(f"skipping part 'pretrained': {weights['reason']}\n  to run it: {weights['command']}")
    runs = plan_runs(plan, [p for p in parts if p not in skipped_parts])
    test = _test_source(plan)
    records = _records(plan, runs, Path(work_dir), test, reuse, say)
    profiles = {}
    for run in runs:
        if arch_key(run["values"]) not in profiles:
            profiles[arch_key(run["values"])] = profile_model(run["values"], plan.latency_repeats,
                                                              plan.latency_threads)
    boxes, sizes = gather_boxes(test)
    cells = sorted({*plan.collision_cells, *(r["values"]["num_cells"] for r in runs)})
    results = {
        "schema": SCHEMA_VERSION, "plan": plan.to_dict(), "parts": list(parts), "skipped_parts": skipped_parts,
        "runs": records, "profiles": profiles,
        "collisions": collision_rates(boxes, sizes, cells, SIZE_BINS),
        "pretrained_weights": weights,
        "train_wall_seconds": round(sum(r["wall_seconds"] for r in records.values()), 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "environment": environment(plan.base.get("threads")),
    }
    results["summary"] = summarize(results)
    return jsonable(results)
