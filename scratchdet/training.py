"""A thin LightningModule around :class:`~scratchdet.model.YoloDetector`.

The model is a plain ``nn.Module``; this shell adds one shared step for
training and validation (encode the targets, run the model, the YOLO loss,
log every term), the optimiser and its schedule, and validation AP. It knows
nothing about data: any loader of ``(images Tensor[N, 3, H, W] in [0, 1],
list of N Tensor[M_i, 4] xyxy pixels)`` batches works.

Taught in ``notebooks/06_training.ipynb``.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from scratchdet.config import DetectorConfig
from scratchdet.grid import encode_targets_batch
from scratchdet.loss import yolo_loss
from scratchdet.model import YoloDetector
from scratchdet.nms import postprocess

__all__ = ["YoloModule", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("warmup_cosine", "cosine", "constant")


def _choice(value: str, options: tuple[str, ...], name: str) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


class YoloModule(pl.LightningModule):
    """Train and validate a :class:`YoloDetector` with the YOLO v1 loss.

    Args:
        config: the detector geometry and loss weights (dict or
            :class:`DetectorConfig`); stored as a dict in the checkpoint.
        backbone, preset, backbone_kwargs, head_channels: passed to
            :class:`YoloDetector`.
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum, Nesterov).
        lr: peak learning rate.
        weight_decay: decoupled weight decay (not applied to norms and biases).
        momentum: SGD momentum.
        schedule: ``"warmup_cosine"`` (linear warm-up from lr/25, then cosine
            decay to lr/100, stepped per batch), ``"cosine"`` (the same without
            warm-up) or ``"constant"``. The schedule follows the trainer's
            current step budget, so a resumed run with more epochs stretches it.
        warmup_fraction: share of the steps spent warming up (warmup_cosine).
        eval_score_threshold, nms_iou_threshold, max_detections: how
            validation turns grids into detections for AP (a low score
            threshold: AP needs the whole precision-recall curve).

    Every init argument is saved with ``save_hyperparameters``, so
    ``YoloModule.load_from_checkpoint(path)`` and
    ``YoloDetector.from_checkpoint(path)`` both rebuild the model.
    Logged: ``train/<term>`` and ``val/<term>`` for each loss term, and
    ``val/ap50``, ``val/ap50_ge24`` and ``val/ap50_small`` at each epoch end.
    """

    def __init__(self, config: dict | DetectorConfig, backbone: str = "poolresnet", preset: str = "medium",
                 backbone_kwargs: dict | None = None, head_channels: int | None = None,
                 optimizer: str = "adamw", lr: float = 2e-3, weight_decay: float = 5e-4, momentum: float = 0.9,
                 schedule: str = "warmup_cosine", warmup_fraction: float = 0.1, eval_score_threshold: float = 0.01,
                 nms_iou_threshold: float = 0.45, max_detections: int = 100) -> None:
        super().__init__()
        config = config if isinstance(config, DetectorConfig) else DetectorConfig.from_dict(dict(config))
        _choice(optimizer, OPTIMIZERS, "optimizer")
        _choice(schedule, SCHEDULES, "schedule")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        self.save_hyperparameters({
            "config": config.to_dict(), "backbone": backbone, "preset": preset,
            "backbone_kwargs": dict(backbone_kwargs or {}), "head_channels": head_channels,
            "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay, "momentum": momentum,
            "schedule": schedule, "warmup_fraction": warmup_fraction,
            "eval_score_threshold": eval_score_threshold, "nms_iou_threshold": nms_iou_threshold,
            "max_detections": max_detections,
        })
        self.config = config
        self.model = YoloDetector(config, backbone=backbone, preset=preset, head_channels=head_channels,
                                  **(backbone_kwargs or {}))
        self._val_outputs: list[tuple[list[dict], list[Tensor]]] = []

    def forward(self, images: Tensor) -> Tensor:
        """``Tensor[N, 3, H, W]`` in [0, 1] -> ``Tensor[N, S, S, B*5]``."""
        return self.model(images)

    def shared_step(self, batch: tuple[Tensor, list[Tensor]], stage: str) -> tuple[Tensor, Tensor]:
        """Loss of one batch, each term logged as ``<stage>/<term>``; returns (total, predictions)."""
        images, boxes = batch
        targets = encode_targets_batch(boxes, self.config)  # (N, S, S, 5)
        pred = self.model(images)  # (N, S, S, B*5)
        terms = yolo_loss(pred, targets, self.config)
        on_step = stage == "train"
        self.log_dict({f"{stage}/{k}": v.detach() for k, v in terms.items()}, on_step=on_step,
                      on_epoch=True, prog_bar=False, batch_size=len(images))
        self.log(f"{stage}_loss", terms["total"].detach(), on_step=False, on_epoch=True,
                 prog_bar=True, batch_size=len(images))
        return terms["total"], pred

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self.shared_step(batch, "train")[0]

    def validation_step(self, batch, batch_idx: int) -> None:
        _, pred = self.shared_step(batch, "val")
        detections = postprocess(pred.detach(), self.config, self.hparams.eval_score_threshold,
                                 self.hparams.nms_iou_threshold, self.hparams.max_detections)
        self._val_outputs.append(([{k: v.cpu() for k, v in d.items()} for d in detections],
                                  [b.detach().cpu() for b in batch[1]]))

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def on_validation_epoch_end(self) -> None:
        from scratchdet.evaluation import evaluate_by_size

        if not self._val_outputs:
            return
        detections = [d for dets, _ in self._val_outputs for d in dets]
        truths = [g for _, gts in self._val_outputs for g in gts]
        metrics = evaluate_by_size(detections, truths)
        self.log_dict({f"val/{k}": float(metrics[k]) for k in ("ap50", "ap50_ge24", "ap50_small")},
                      prog_bar=False, sync_dist=True)
        self.log("val_ap50", float(metrics["ap50"]), prog_bar=True, sync_dist=True)
        self._val_outputs = []

    def _param_groups(self) -> list[dict[str, Any]]:
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        return [{"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(self._param_groups(), lr=hp.lr)
        else:
            optimizer = torch.optim.SGD(self._param_groups(), lr=hp.lr, momentum=hp.momentum, nesterov=True)
        if hp.schedule == "constant":
            return optimizer
        warmup = hp.warmup_fraction if hp.schedule == "warmup_cosine" else 0.0
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor(warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _lr_factor(self, warmup_fraction: float):
        """Multiplier of the peak lr at a step: linear warm-up from 1/25, cosine decay to 1/100.

        A closure (not saved in checkpoints), so it always uses the trainer's
        current step budget.
        """
        def factor(step: int) -> float:
            total = max(1, int(self.trainer.estimated_stepping_batches))
            warmup = int(warmup_fraction * total)
            if step < warmup:
                return 0.04 + 0.96 * step / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))

        return factor
