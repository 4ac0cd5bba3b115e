"""The study's numbers as tables: records averaged over seeds, Markdown, JSON files.

:func:`summarize` turns the runs of :func:`~scratchdet.study.runner.run_study`
into the rows of each part (means over seeds, with the untrained model's
profile beside them); :func:`study_tables` prints them as Markdown and
:mod:`scratchdet.study.plots` draws them. :func:`save_results` and
:func:`load_results` keep the whole results dict as plain JSON.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Mapping, Sequence

from scratchdet._io import atomic_write_text
from scratchdet.study.plan import StudyPlan, arch_key

__all__ = ["SCHEMA_VERSION", "SIZE_KEYS", "CROWD_KEYS", "METRIC_KEYS", "summarize", "study_tables", "save_results",
           "load_results", "matching_runs", "jsonable"]

SCHEMA_VERSION = 1  # of run records and results files
SIZE_KEYS = ("ap50_small", "ap50_medium", "ap50_large")
CROWD_KEYS = ("ap50_single", "ap50_few", "ap50_group", "ap50_crowd")
METRIC_KEYS = ("ap50", *SIZE_KEYS, "ap50_ge24", *CROWD_KEYS, "fp_per_image", "precision", "recall")


def jsonable(value):
    """Python floats, ints, lists and dicts only (NaN becomes None, as JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _mean(values: Sequence) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def matching_runs(results: dict, values: Mapping, seeds: Sequence[int]) -> list[dict]:
    """The runs with these values (the seed aside) and one of ``seeds``, in seed order."""
    runs = [r for r in results["runs"].values() if r["values"]["seed"] in seeds
            and all(r["values"][k] == v for k, v in values.items() if k != "seed")]
    return sorted(runs, key=lambda r: r["values"]["seed"])


def _aggregate(runs: list[dict]) -> dict:
    """Mean over seeds of each test metric, with the per-seed AP50 and the training speed."""
    out = {key: _mean([r["test"].get(key) for r in runs]) for key in METRIC_KEYS}
    out["ap50_seeds"] = [r["test"]["ap50"] for r in runs]
    out["seeds"] = [r["values"]["seed"] for r in runs]
    out["images_per_second"] = _mean([r["images_per_second"] for r in runs])
    out["train_seconds"] = _mean([r["train_seconds"] for r in runs])
    return out


def summarize(results: dict) -> dict:
    """The study's tables as plain data (what :func:`study_tables` prints and
    :func:`~scratchdet.study.plots.plot_study` draws).

    Metrics are means over the seeds that ran (``ap50_seeds`` lists each);
    ``noise`` is the spread of the baseline's AP50 over its seeds.
    """
    plan = StudyPlan.from_dict(results["plan"])
    baseline = plan.baseline()
    profiles = results["profiles"]
    summary: dict = {}

    def row(values: Mapping, seeds: Sequence[int], **label) -> dict | None:
        runs = matching_runs(results, values, seeds)
        return {**label, **_aggregate(runs), **profiles[arch_key(values)]} if runs else None

    base_runs = matching_runs(results, baseline, plan.baseline_seeds)
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
        cells = [[matching_runs(results, {**values, "lambda_coord": float(c), "lambda_noobj": float(n)},
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


def save_results(results: dict, path: str | os.PathLike) -> Path:
    """Write the results dict as JSON (NaN as null), atomically; returns ``Path(path)``."""
    return atomic_write_text(path, json.dumps(jsonable(results), indent=2) + "\n")


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
