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
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from scratchdet.config import EVAL_SCORE_THRESHOLD, MAX_DETECTIONS, NMS_IOU_THRESHOLD, DetectorConfig
from scratchdet.evaluation import evaluate_by_size
from scratchdet.fpn_loss import fpn_loss
from scratchdet.grid import encode_targets_batch
from scratchdet.loss import yolo_loss
from scratchdet.model import YoloDetector
from scratchdet.nms import postprocess

__all__ = ["YoloModule", "TrainingDiverged", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("warmup_cosine", "cosine", "constant")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and the loss term."""


def _choice(value: str, options: tuple[str, ...], name: str) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def _number(value: float, name: str, low: float = 0.0, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (strict and value == low):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


class YoloModule(pl.LightningModule):
    """Train and validate a :class:`YoloDetector` with the YOLO v1 loss.

    Every argument is reachable from ``scratchdet train`` and from the YAML
    recipes in ``configs/`` as ``model.<name>`` (``model.config.<field>`` for
    the :class:`DetectorConfig`), and is saved in the checkpoint.

    Args:
        config: the detector geometry and loss weights (a :class:`DetectorConfig`
            or a dict of its fields); ``config.image_size`` is the training
            input size, linked to ``data.image_size`` by the CLI.
        backbone: feature extractor, one of ``scratchdet.backbones.BACKBONES``
            (``poolresnet``, ``resnet``, ``mobilenet_v3``, ``mobilenet_v2``).
        preset: backbone size, ``small``, ``medium`` or ``large``.
        pretrained: start from torchvision's ImageNet weights (MobileNet
            backbones only; from the torch hub cache, or downloaded).
        head_channels: width of the head; ``None``: ``min(backbone channels, 128)``.
        backbone_kwargs: extra arguments of the backbone (e.g. ``{"width": 48}``).
        optimizer: ``adamw`` or ``sgd`` (momentum, Nesterov).
        lr: peak learning rate (finite, > 0).
        weight_decay: decoupled weight decay (not applied to norms and biases).
        momentum: SGD momentum.
        schedule: ``warmup_cosine`` (linear warm-up from lr/25, then cosine
            decay to lr/100, stepped per batch), ``cosine`` (no warm-up) or
            ``constant``. It follows the trainer's current step budget, so a
            resumed run with more epochs stretches it.
        warmup_fraction: share of the steps spent warming up (warmup_cosine).
        eval_score_threshold: lowest score kept for validation AP (low: AP
            needs the whole precision-recall curve).
        nms_iou_threshold: NMS IoU threshold for validation.
        max_detections: detections kept per validation image.
        stop_on_nonfinite: stop at the first training step whose loss is NaN
            or infinite (:class:`TrainingDiverged`, naming the step and the
            term); costs one host sync per step.
        freeze_backbone: keep the first this many of the backbone's feature
            layers (its ``feature_layers()``, MobileNetV2: 19) as
            they start, weights and BatchNorm statistics (with
            ``pretrained``: ImageNet's features, which carry to real photos
            better than features learned on drawn faces); ``-1``: all of them;
            ``0``: train everything. Frozen layers also skip the backward pass.
        init_weights: fine-tune: start from this checkpoint's weights (a
            ``.pt`` from :meth:`YoloDetector.save`, e.g. the bundled
            ``models/faces_mobilenet_v2_fpn.pt``, or a training ``.ckpt``).
            ``pretrained`` then loads nothing (no download): these weights
            replace ImageNet's. Its architecture (backbone, preset, head) must be this recipe's:
            a mismatch stops before training, naming what differs. Loaded when
            ``fit`` starts, so a resumed run keeps its own newer weights.

    ``YoloModule.load_from_checkpoint(path)`` and
    ``YoloDetector.from_checkpoint(path)`` both rebuild the model.
    Logged: ``train/<term>`` and ``val/<term>`` for each loss term, and
    ``val/ap50``, ``val/ap50_ge24`` and ``val/ap50_small`` at each epoch end.
    """

    def __init__(self, config: DetectorConfig = DetectorConfig(), backbone: str = "poolresnet",
                 preset: Literal["small", "medium", "large"] = "medium", pretrained: bool = False,
                 head_channels: int | None = None, backbone_kwargs: dict | None = None,
                 optimizer: Literal["adamw", "sgd"] = "adamw", lr: float = 2e-3, weight_decay: float = 5e-4,
                 momentum: float = 0.9, schedule: Literal["warmup_cosine", "cosine", "constant"] = "warmup_cosine",
                 warmup_fraction: float = 0.1, eval_score_threshold: float = EVAL_SCORE_THRESHOLD,
                 nms_iou_threshold: float = NMS_IOU_THRESHOLD, max_detections: int = MAX_DETECTIONS,
                 stop_on_nonfinite: bool = True, freeze_backbone: int = 0,
                 init_weights: str | None = None) -> None:
        super().__init__()
        config = config if isinstance(config, DetectorConfig) else DetectorConfig.from_dict(dict(config))
        _choice(optimizer, OPTIMIZERS, "optimizer")
        _choice(schedule, SCHEDULES, "schedule")
        _number(lr, "lr", strict=True)
        _number(weight_decay, "weight_decay")
        _number(momentum, "momentum")
        if not 0.0 <= _number(warmup_fraction, "warmup_fraction") < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
        backbone_kwargs = dict(backbone_kwargs or {})
        if pretrained:
            if not backbone.startswith("mobilenet"):
                raise ValueError(f"pretrained=True needs a MobileNet backbone (ImageNet weights exist only for "
                                 f"torchvision's models), got backbone={backbone!r}")
            # with init_weights the checkpoint's weights replace ImageNet's: no need to load (or download) them
            backbone_kwargs["pretrained"] = not init_weights
        self.save_hyperparameters({
            "config": config.to_dict(), "backbone": backbone, "preset": preset, "pretrained": bool(pretrained),
            "backbone_kwargs": backbone_kwargs, "head_channels": head_channels,
            "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay, "momentum": momentum,
            "schedule": schedule, "warmup_fraction": warmup_fraction,
            "eval_score_threshold": eval_score_threshold, "nms_iou_threshold": nms_iou_threshold,
            "max_detections": max_detections, "stop_on_nonfinite": stop_on_nonfinite,
            "freeze_backbone": freeze_backbone, "init_weights": init_weights,
        })
        self.config = config
        self.model = YoloDetector(config, backbone=backbone, preset=preset, head_channels=head_channels,
                                  **backbone_kwargs)
        self._val_outputs: list[tuple[list[dict], list[Tensor]]] = []
        self._frozen = self._freeze(freeze_backbone)

    def forward(self, images: Tensor) -> Tensor:
        """``Tensor[N, 3, H, W]`` in [0, 1] -> ``Tensor[N, S, S, B*5]``."""
        return self.model(images)

    def loss(self, images: Tensor, boxes: list[Tensor]) -> tuple[dict[str, Tensor], Tensor | list[Tensor]]:
        """The loss terms of a batch for this model's head, and the raw output (:meth:`YoloDetector.raw`).

        v1: encode the boxes on the grid and take :func:`~scratchdet.loss.yolo_loss`;
        fpn: :func:`~scratchdet.fpn_loss.fpn_loss` assigns the faces to levels
        and cells itself. ``self.model.decode(raw)`` is what ``postprocess`` takes.
        """
        raw = self.model.raw(images)  # v1: (N, S, S, B*5); fpn: one (N, 5, H_l, W_l) per level
        if self.config.head == "v1":
            return yolo_loss(raw, encode_targets_batch(boxes, self.config), self.config), raw
        return fpn_loss(raw, boxes, self.config), raw

    def shared_step(self, batch: tuple[Tensor, list[Tensor]], stage: str) -> tuple[Tensor, Tensor]:
        """Loss of one batch, each term logged as ``<stage>/<term>``; returns (total, raw output)."""
        images, boxes = batch
        terms, pred = self.loss(images, boxes)
        on_step = stage == "train"
        if on_step and self.hparams.stop_on_nonfinite and not torch.isfinite(terms["total"]):
            self._diverged(terms)
        self.log_dict({f"{stage}/{k}": v.detach() for k, v in terms.items()}, on_step=on_step,
                      on_epoch=True, prog_bar=False, batch_size=len(images))
        self.log(f"{stage}_loss", terms["total"].detach(), on_step=False, on_epoch=True,
                 prog_bar=True, batch_size=len(images))
        return terms["total"], pred

    def _diverged(self, terms: dict[str, Tensor]) -> None:
        bad = [k for k, v in terms.items() if k != "total" and not torch.isfinite(v)] or ["total"]
        raise TrainingDiverged(
            f"training diverged at step {self.global_step} (epoch {self.current_epoch}): loss term "
            f"{bad[0]!r} is {terms[bad[0]].detach().item()} (lr={self.hparams.lr}); lower model.lr or check the "
            f"loss weights")

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self.shared_step(batch, "train")[0]

    def validation_step(self, batch, batch_idx: int) -> None:
        _, pred = self.shared_step(batch, "val")
        detections = postprocess(self.model.decode(pred).detach(), self.config, self.hparams.eval_score_threshold,
                                 self.hparams.nms_iou_threshold, self.hparams.max_detections,
                                 input_size=tuple(batch[0].shape[-2:]))
        self._val_outputs.append(([{k: v.cpu() for k, v in d.items()} for d in detections],
                                  [b.detach().cpu() for b in batch[1]]))

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        detections = [d for dets, _ in self._val_outputs for d in dets]
        truths = [g for _, gts in self._val_outputs for g in gts]
        metrics = evaluate_by_size(detections, truths)
        self.log_dict({f"val/{k}": float(metrics[k]) for k in ("ap50", "ap50_ge24", "ap50_small")},
                      prog_bar=False, sync_dist=True)
        self.log("val_ap50", float(metrics["ap50"]), prog_bar=True, sync_dist=True)
        self._val_outputs = []

    def setup(self, stage: str) -> None:
        """Lightning hook: before ``fit``, load ``init_weights`` (a resume then restores its own weights over them)."""
        if stage == "fit" and self.hparams.init_weights:
            self.model.load_state_dict(self._init_state(self.hparams.init_weights))

    def _init_state(self, path: str) -> dict[str, Tensor]:
        """The state dict of checkpoint ``path``, checked against this model's architecture."""
        source = YoloDetector.from_checkpoint(path)
        theirs, ours = source.hyperparameters, self.model.hyperparameters
        differ = [f"{key}: checkpoint {theirs.get(key)!r}, recipe {ours.get(key)!r}"
                  for key in ("backbone", "preset", "head_channels") if theirs.get(key) != ours.get(key)]
        geometry = ("head", "num_levels", "boxes_per_cell")
        differ += [f"model.config.{key}: checkpoint {getattr(source.config, key)!r}, recipe "
                   f"{getattr(self.config, key)!r}" for key in geometry
                   if getattr(source.config, key) != getattr(self.config, key)]
        if differ:
            raise ValueError(f"init_weights {path!r} does not fit this recipe (use the checkpoint's own recipe, "
                             f"e.g. configs/finetune.yaml for the bundled model): " + "; ".join(differ))
        return source.state_dict()

    def _freeze(self, count: int) -> list[nn.Module]:
        """Stop gradients in the first ``count`` backbone layers (``-1``: all); returns them."""
        layers = self.model.backbone.feature_layers()
        if isinstance(count, bool) or not isinstance(count, int) or not -1 <= count <= len(layers):
            raise ValueError(f"freeze_backbone must be an int in [-1, {len(layers)}] (the backbone has "
                             f"{len(layers)} feature layers; -1 freezes all), got {count!r}")
        frozen = layers if count == -1 else layers[:count]
        for layer in frozen:
            layer.requires_grad_(False)
            layer.eval()
        return frozen

    def train(self, mode: bool = True) -> "YoloModule":
        """As ``nn.Module.train``, but frozen backbone layers stay in eval mode (BatchNorm statistics fixed)."""
        super().train(mode)
        for layer in getattr(self, "_frozen", ()):
            layer.eval()
        return self

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
