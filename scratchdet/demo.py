"""The main job: train a PoolResNet on SynthFaces on the CPU, evaluate, detect.

``scratchdet demo`` (and ``./run.sh demo``) trains the recipe
``configs/demo.yaml`` and writes a fresh folder ``runs/demo`` (``runs/demo2``,
... when an earlier demo is there, so no run is overwritten):

* ``checkpoints/best.ckpt``, ``last.ckpt`` and ``model.pt`` (``YoloDetector.save``);
* ``config.yaml``: the resolved recipe;
* ``metrics.json``: AP50 on SynthFaces test overall and by face size
  (``ap50_small`` < 16 px, ``ap50_medium`` 16-48 px, ``ap50_large`` > 48 px,
  ``ap50_ge24`` >= 24 px), ``train_seconds``, ``images_per_second``, the recipe;
* ``curves.png``: training and validation loss, validation AP per epoch;
* ``detections/``: SynthFaces test images with the trained model's boxes, and
  the sample photos with the boxes of the bundled real-photo model
  (``models/faces_mobilenet_v2_fpn.pt``, notebook 12; a model trained on drawn
  faces alone finds few faces in photos), or of the trained model where the
  bundled one is missing.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import cv2
import matplotlib.pyplot as plt

from scratchdet._io import atomic_write_text, fresh_dir
from scratchdet.config import SCORE_THRESHOLD
from scratchdet.data.photos import read_image, sample_photos
from scratchdet.data.synthfaces import SynthFaces
from scratchdet.detect import default_checkpoint
from scratchdet.model import YoloDetector
from scratchdet.pipeline import evaluate_model, jsonable_metrics, latest_log, run_training
from scratchdet.viz import RED, draw_boxes

__all__ = ["DEMO_RECIPE", "QUICK_OVERRIDES", "run_demo", "plot_training_log"]

DEMO_RECIPE = "demo"  # configs/demo.yaml
# --quick: a tiny run that only checks the pipeline.
QUICK_OVERRIDES = {"trainer.max_epochs": 1, "data.train_size": 32, "data.val_size": 16,
                   "trainer.max_time": "00:00:02:00"}


def _read_log(path: Path) -> dict[str, list[tuple[float, float]]]:
    """``{column: [(step, value), ...]}`` from Lightning's ``metrics.csv``."""
    series: dict[str, list[tuple[float, float]]] = {}
    if not path.exists():
        return series
    with path.open() as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    series.setdefault(key, []).append((float(row.get("step") or 0), float(value)))
    return series


def plot_training_log(log_csv: str | Path, out_png: str | Path | None = None):
    """Plot train loss per step, val loss and val AP50 per validation from ``metrics.csv``."""
    series = _read_log(Path(log_csv))
    fig, (loss_ax, ap_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    for key, label in (("train/total_step", "train loss (per step)"), ("val/total", "val loss")):
        if key in series:
            steps, values = zip(*series[key])
            loss_ax.plot(steps, values, label=label, marker="o" if key.startswith("val") else None)
    loss_ax.set_yscale("log"); loss_ax.set_xlabel("step"); loss_ax.set_title("YOLO loss"); loss_ax.legend()
    for key in ("val/ap50", "val/ap50_ge24", "val/ap50_small"):
        if key in series:
            steps, values = zip(*series[key])
            ap_ax.plot(steps, values, marker="o", label=key)
    ap_ax.set_ylim(0, 1); ap_ax.set_xlabel("step"); ap_ax.set_title("validation AP50"); ap_ax.legend()
    for ax in (loss_ax, ap_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    if out_png:
        fig.savefig(out_png, dpi=100)
        plt.close(fig)
    return fig


def photo_model(trained: YoloDetector) -> tuple[YoloDetector, str]:
    """The model for the demo's photos: the bundled real-photo model, else ``trained``; and its name."""
    try:
        path = default_checkpoint()
    except FileNotFoundError:
        return trained, "the model just trained (no bundled model found)"
    return YoloDetector.from_checkpoint(path).eval(), f"the bundled model {path.name}"


def _draw(model: YoloDetector, named: list, out_dir: Path) -> list[Path]:
    """Write each ``(name, image, truth or None)`` with ``model``'s boxes (truth in red) as ``out_dir/name.jpg``."""
    detections = model.predict([image for _, image, _ in named], score_threshold=SCORE_THRESHOLD)
    written = []
    for (name, image, truth), det in zip(named, detections):
        canvas = image if truth is None else draw_boxes(image, truth, color=RED, thickness=1)
        canvas = draw_boxes(canvas, det["boxes"].cpu(), det["scores"].cpu())
        path = out_dir / f"{name}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def _annotate(model, out_dir: Path, test, num_test: int = 8) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    synth = [(f"synthfaces_test_{i:03d}", *test[i]) for i in range(min(num_test, len(test)))]
    written = _draw(model, synth, out_dir)
    photos = [(p.stem, read_image(p), None) for p in sample_photos()]
    if photos:
        on_photos, which = photo_model(model)
        print(f"== photos: {which}")
        written += _draw(on_photos, photos, out_dir)
    return written


def run_demo(output_dir: str | Path | None = None, epochs: int | None = None, train_size: int | None = None,
             quick: bool = False, progress_bar: bool = True, data_root: str | None = None,
             overwrite: bool = False) -> dict:
    """Train ``configs/demo.yaml``, evaluate on SynthFaces test, draw detections; return the metrics dict.

    ``output_dir=None`` makes a fresh ``runs/demo`` (``runs/demo2``, ... if
    taken); an explicit folder that holds checkpoints is refused unless ``overwrite``.
    """
    start = time.perf_counter()
    out = fresh_dir("runs", "demo") if output_dir is None else Path(output_dir)
    overrides = {**(QUICK_OVERRIDES if quick else {}), "output_dir": str(out), "overwrite": overwrite,
                 "trainer.enable_progress_bar": progress_bar}
    overrides.update({k: v for k, v in (("trainer.max_epochs", epochs), ("data.train_size", train_size),
                                         ("data.root", data_root)) if v is not None})
    print(f"== scratchdet demo: training configs/{DEMO_RECIPE}.yaml on SynthFaces -> {out}/")
    result = run_training(DEMO_RECIPE, overrides)
    recipe = result.recipe
    checkpoint = result.best_checkpoint or result.last_checkpoint
    model = YoloDetector.from_checkpoint(checkpoint).eval()
    model.save(out / "model.pt")

    print("== evaluating on SynthFaces test")
    test = SynthFaces("test", image_size=model.config.image_size, root=data_root, num_images=32 if quick else None)
    metrics = evaluate_model(model, test)
    metrics.update(train_seconds=round(result.train_seconds, 1),
                   images_per_second=round(result.images_per_second, 1),
                   checkpoint=str(checkpoint), recipe=recipe)
    plot_training_log(latest_log(out), out / "curves.png")
    written = _annotate(model, out / "detections", test)
    metrics["wall_seconds"] = round(time.perf_counter() - start, 1)
    keep = jsonable_metrics(metrics)
    atomic_write_text(out / "metrics.json", json.dumps(keep, indent=2) + "\n")
    print(f"== SynthFaces test AP50: {metrics['ap50']:.3f} (all faces), {metrics['ap50_small']:.3f} (faces < 16 px), "
          f"{metrics['ap50_ge24']:.3f} (faces >= 24 px), {metrics['ap50_single']:.3f} (single-face images)")
    print(f"== trained {result.train_seconds:.0f} s at {result.images_per_second:.0f} images/s; "
          f"wall time {metrics['wall_seconds']:.0f} s")
    print(f"== wrote {out}/metrics.json, {out}/curves.png, {out}/model.pt and {len(written)} images in {out}/detections/")
    return keep
