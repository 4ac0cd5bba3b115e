"""Figures of the study: the three claims, and detections of the baseline and the improvement.

:func:`plot_study` draws what :func:`~scratchdet.study.report.summarize`
computed; :func:`plot_examples` reloads two trained models from the study's
run folders. matplotlib is imported inside the two public functions, so that
reading or tabulating results does not load it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from scratchdet.model import YoloDetector
from scratchdet.study.plan import StudyPlan
from scratchdet.study.report import CROWD_KEYS, SIZE_KEYS, matching_runs
from scratchdet.viz import RED, draw_boxes, draw_grid

__all__ = ["plot_study", "plot_examples"]


def plot_study(results: dict, out_dir: str | os.PathLike | None = None) -> dict:
    """Figures of the study; with ``out_dir``, also saved there as PNG (and closed).

    Returns ``{name: Figure}``: ``backbones`` (AP50 vs latency, AP by size),
    ``loss_weights`` (heat maps of AP50 and FP/image), ``small_faces`` (AP by
    size with collision losses, AP by faces per image) and ``summary`` (one
    figure of all three claims, for the README).
    """
    import matplotlib.pyplot as plt  # lazy, as in scratchdet.viz: the study's numbers need no matplotlib

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
            fig.savefig(out / f"{name}.png", dpi=100)
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
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(keys))
    for i, row in enumerate(rows):
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, [row[k] or 0 for k in keys], width, label=name(row))
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AP50")
    ax.set_title(title)
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3, axis="y")


def _plot_heat(ax, grid: dict, key: str, title: str, cmap: str) -> None:
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
    ax.legend(handles[0] + twin_handles[0], handles[1] + twin_handles[1], fontsize=9, loc="upper left", ncol=2)
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
    import matplotlib.pyplot as plt  # lazy, as in plot_study

    plan = StudyPlan.from_dict(results["plan"])
    threshold = plan.score_threshold if score_threshold is None else score_threshold
    models = []
    for label, values in (("baseline", plan.baseline()), (plan.improvement_label, {**plan.baseline(),
                                                                                   **plan.improvement})):
        runs = matching_runs(results, values, plan.baseline_seeds[:1])
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
        fig.savefig(out_png, dpi=100)
        plt.close(fig)
    return fig
