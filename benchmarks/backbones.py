"""Backbones side by side: parameters, MACs, CPU latency, throughput, training speed.

    python benchmarks/backbones.py [--threads 1] [--quick] [--sizes 480 256]
                                   [--backbones resnet poolresnet mobilenet_v3]
                                   [--presets small medium large]

Each case is the whole YoloDetector (backbone + head) at ``size x size`` with
S = size / 32 (480 -> 15, 256 -> 8), so every backbone lands on the grid:

* ``macs``: multiply-accumulates of one forward pass at batch 1, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2);
* ``latency_b1_ms``: median eval-mode forward at batch 1 (``torch.inference_mode``);
* ``throughput_b16_img_s``: 16 / median eval-mode forward at batch 16;
* ``train_img_s``: 16 / median training step at batch 16 (forward, a stand-in
  squared-output loss -- the YOLO loss costs nothing next to the network --,
  backward, AdamW step).

``ratios`` compares ResNet with PoolResNet at the same preset and size (equal
parameters): the study's claim is that PoolResNet is much faster. Prints one
JSON document to stdout (progress goes to stderr). Timings need a quiet
machine: two processes sharing 2 cores slow each other down many times.
"""

from __future__ import annotations

import sys
import time

import torch

from _timing import benchmark_parser, emit, environment, median_seconds, parse_args
from scratchdet.config import DetectorConfig
from scratchdet.model import YoloDetector
from scratchdet.profiling import count_macs

BATCH = 16


def train_step_seconds(model: torch.nn.Module, image_size: int, repeats: int, warmup: int) -> float:
    """Median seconds of one training step (forward, backward, AdamW) at batch 16."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.rand(BATCH, 3, image_size, image_size)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(images).square().mean().backward()
        optimizer.step()

    return median_seconds(step, repeats=repeats, warmup=warmup)


def measure(backbone: str, preset: str, image_size: int, reps: dict) -> dict:
    """All numbers for one backbone, preset and input size."""
    torch.manual_seed(0)
    config = DetectorConfig(image_size=image_size, num_cells=image_size // 32)
    model = YoloDetector(config, backbone, preset).eval()
    one, batch = torch.rand(1, 3, image_size, image_size), torch.rand(BATCH, 3, image_size, image_size)
    with torch.inference_mode():
        latency = median_seconds(lambda: model(one), repeats=reps["b1"], warmup=2)
        batch_time = median_seconds(lambda: model(batch), repeats=reps["b16"], warmup=1)
    return {
        "backbone": backbone,
        "preset": preset,
        "image_size": image_size,
        "num_cells": config.num_cells,
        "params_backbone": sum(p.numel() for p in model.backbone.parameters()),
        "params_total": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(model, image_size),
        "latency_b1_ms": round(latency * 1e3, 3),
        "throughput_b16_img_s": round(BATCH / batch_time, 2),
        "train_img_s": round(BATCH / train_step_seconds(model, image_size, reps["train"], 1), 2),
    }


def ratios(results: list[dict]) -> list[dict]:
    """ResNet / PoolResNet at each preset and size: > 1 means PoolResNet is faster (or cheaper)."""
    index = {(r["backbone"], r["preset"], r["image_size"]): r for r in results}
    out = []
    for (name, preset, size), pool in index.items():
        resnet = index.get(("resnet", preset, size))
        if name != "poolresnet" or resnet is None:
            continue
        out.append({
            "preset": preset,
            "image_size": size,
            "equal_params": resnet["params_total"] == pool["params_total"],
            "macs_resnet_over_poolresnet": round(resnet["macs"] / pool["macs"], 3),
            "latency_resnet_over_poolresnet": round(resnet["latency_b1_ms"] / pool["latency_b1_ms"], 3),
            "throughput_poolresnet_over_resnet": round(
                pool["throughput_b16_img_s"] / resnet["throughput_b16_img_s"], 3),
            "train_poolresnet_over_resnet": round(pool["train_img_s"] / resnet["train_img_s"], 3),
        })
    return out


def main() -> None:
    parser = benchmark_parser(__doc__, "small presets at 256 px, few repeats")
    parser.add_argument("--sizes", type=int, nargs="+", default=[480, 256])
    parser.add_argument("--backbones", nargs="+", default=["resnet", "poolresnet", "mobilenet_v3"])
    parser.add_argument("--presets", nargs="+", default=["small", "medium", "large"])
    args = parse_args(parser)
    for size in args.sizes:
        if size % 32:
            parser.error(f"--sizes must be multiples of 32 (S = size / 32), got {size}")
    sizes, presets = ([256], ["small"]) if args.quick else (args.sizes, args.presets)
    reps = {"b1": 3, "b16": 1, "train": 1} if args.quick else {"b1": 10, "b16": 3, "train": 3}
    start, results = time.perf_counter(), []
    for size in sizes:
        for preset in presets:
            for backbone in args.backbones:
                results.append(measure(backbone, preset, size, reps))
                print(f"{backbone:>13} {preset:>6} {size}: {results[-1]['latency_b1_ms']:.1f} ms",
                      file=sys.stderr)
    emit({
        "benchmark": "backbones",
        "environment": environment(args.threads),
        "quick": args.quick,
        "batch": BATCH,
        "repeats": reps,
        "seconds": round(time.perf_counter() - start, 1),
        "results": results,
        "ratios": ratios(results),
    })


if __name__ == "__main__":
    main()
