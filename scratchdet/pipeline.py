"""End-to-end jobs built from the parts: train from settings, evaluate a model.

:class:`TrainSettings` is the one typed description of a training run: the
CLI builds it from a YAML file and flags, the demo and the notebooks build it
in Python. :func:`run_training` turns it into a :class:`FaceDataModule`, a
:class:`YoloModule` and a Lightning ``Trainer``; everything device-, precision-
and multi-GPU-related is Lightning's (``accelerator``, ``devices``,
``strategy="ddp"``, ``num_nodes``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence, get_args, get_type_hints

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint

from scratchdet.config import DetectorConfig
from scratchdet.training import YoloModule

__all__ = ["TrainSettings", "TrainResult", "load_settings", "run_training", "evaluate_model", "predict_source",
           "open_split", "latest_log", "quiet_lightning"]


@dataclass
class TrainSettings:
    """Everything a training run needs; YAML keys and CLI flags have these names.

    Data: ``dataset`` (``synthfaces`` | ``wider``), ``data_root`` (SynthFaces
    cache), ``wider_root``, ``train_size`` / ``val_size`` (images, ``None``:
    the whole split), ``augment``, ``num_workers``. Model: ``backbone``,
    ``preset``, ``pretrained`` (ImageNet weights, MobileNets only; from the
    torch hub cache or the internet), ``image_size``, ``num_cells`` (S), ``boxes_per_cell`` (B),
    ``lambda_coord``, ``lambda_noobj``, ``conf_target``. Optimisation:
    ``epochs``, ``batch_size``, ``lr``, ``optimizer``, ``weight_decay``,
    ``schedule``, ``gradient_clip``, ``early_stopping_patience`` (epochs
    without a better ``val/ap50``; ``None``: off). Hardware (Lightning):
    ``accelerator``, ``devices``, ``strategy``, ``num_nodes``, ``precision``,
    ``threads`` (CPU threads; ``None``: torch's default). Run: ``seed``,
    ``output_dir``, ``resume`` (continue from ``output_dir/checkpoints/last.ckpt``),
    ``overfit_batches`` (> 0: Lightning's overfit mode on that many batches,
    augmentation off), ``max_minutes`` (a time limit; ``None``: none),
    ``progress_bar``.
    """

    dataset: str = "synthfaces"
    data_root: str = "data"
    wider_root: str | None = None
    train_size: int | None = None
    val_size: int | None = None
    augment: bool = True
    num_workers: int = 0
    backbone: str = "poolresnet"
    preset: str = "medium"
    pretrained: bool = False
    image_size: int = 256
    num_cells: int = 8
    boxes_per_cell: int = 2
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5
    conf_target: str = "iou"
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-3
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    schedule: str = "warmup_cosine"
    gradient_clip: float = 10.0
    early_stopping_patience: int | None = None
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    threads: int | None = None
    seed: int = 0
    output_dir: str = "runs/train"
    resume: bool = False
    overfit_batches: int = 0
    max_minutes: float | None = None
    progress_bar: bool = True

    def detector_config(self) -> DetectorConfig:
        """The :class:`DetectorConfig` these settings describe (validated)."""
        return DetectorConfig(image_size=self.image_size, num_cells=self.num_cells,
                              boxes_per_cell=self.boxes_per_cell, lambda_coord=self.lambda_coord,
                              lambda_noobj=self.lambda_noobj, conf_target=self.conf_target)


def _field_types() -> dict[str, type]:
    hints = get_type_hints(TrainSettings)
    out = {}
    for f in fields(TrainSettings):
        hint = hints[f.name]
        args = [a for a in get_args(hint) if a is not type(None)]  # Optional[X] -> X
        out[f.name] = args[0] if args else hint
    return out


def coerce_setting(name: str, value: Any) -> Any:
    """Convert a YAML or command-line value to the type of setting ``name``."""
    types = _field_types()
    if name not in types:
        raise ValueError(f"unknown setting {name!r}; known settings: {', '.join(sorted(types))}")
    kind = types[name]
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        default = next(f for f in fields(TrainSettings) if f.name == name).default
        if default is not None:
            raise ValueError(f"setting {name!r} cannot be empty")
        return None
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name!r} must be {kind.__name__}, got {value!r}") from None


def load_settings(path: str | os.PathLike | None = None, overrides: dict | None = None) -> TrainSettings:
    """Settings from a YAML file (optional), then ``overrides`` on top; unknown keys are errors."""
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ValueError(f"config file {os.fspath(path)!r} does not exist") from None
        except yaml.YAMLError as error:
            raise ValueError(f"config file {os.fspath(path)!r} is not valid YAML: {error}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {os.fspath(path)!r} must hold a mapping of settings")
        values.update(loaded)
    values.update(overrides or {})
    return TrainSettings(**{k: coerce_setting(k, v) for k, v in values.items()})


def quiet_lightning() -> None:
    """Silence Lightning's informational logs and known harmless warnings."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*does not have many workers.*", ".*`isinstance.*LeafSpec.*", ".*GPU available but not used.*",
                    ".*Checkpoint directory .* exists and is not empty.*", ".*The number of training batches.*",
                    ".*torch.use_deterministic_algorithms.*", ".*Deterministic behavior was enabled.*",
                    ".*You defined a `validation_step` but have no `val_dataloader`.*",
                    ".*You requested to overfit but enabled train dataloader shuffling.*"):
        warnings.filterwarnings("ignore", message=pattern)


class ThroughputMonitor(Callback):
    """Measures training images per second (data loading and augmentation included, validation not)."""

    def __init__(self) -> None:
        self.images, self.seconds, self._start = 0, 0.0, None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += len(batch[0])

    def _stop(self) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def on_validation_start(self, trainer, pl_module) -> None:
        self._stop()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop()

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


class CheckpointOnInterrupt(Callback):
    """Writes ``path`` when training stops on an exception, Ctrl-C included.

    (Lightning's ``OnExceptionCheckpoint`` would also make every later
    ``fit`` resume from it silently; resuming here is explicit: ``resume``.)
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        trainer.save_checkpoint(str(self.path))


@dataclass
class TrainResult:
    """What :func:`run_training` returns."""

    module: YoloModule
    trainer: pl.Trainer
    best_checkpoint: str | None
    last_checkpoint: str | None
    train_seconds: float
    images_per_second: float
    settings: TrainSettings = field(repr=False, default=None)


def _loggers(output_dir: Path) -> list:
    from pytorch_lightning.loggers import CSVLogger

    loggers = [CSVLogger(save_dir=str(output_dir), name="logs")]  # logs/version_<k>/metrics.csv
    try:
        import tensorboard  # noqa: F401
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(output_dir), name="tensorboard"))
    except ImportError:
        pass
    return loggers


def latest_log(output_dir: str | os.PathLike) -> Path | None:
    """``metrics.csv`` of the newest run in ``output_dir`` (each run or resume adds a version)."""
    versions = sorted(Path(output_dir).glob("logs/version_*/metrics.csv"),
                      key=lambda p: int(p.parent.name.split("_")[1]))
    return versions[-1] if versions else None


def _callbacks(settings: TrainSettings, checkpoints: Path) -> tuple[list, ModelCheckpoint, ThroughputMonitor]:
    checkpoint = ModelCheckpoint(dirpath=str(checkpoints), filename="best", monitor="val/ap50", mode="max",
                                 save_last=True, enable_version_counter=False)
    throughput = ThroughputMonitor()
    callbacks = [checkpoint, throughput, LearningRateMonitor(logging_interval="step"),
                 CheckpointOnInterrupt(checkpoints / "last.ckpt")]
    if settings.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor="val/ap50", mode="max", patience=settings.early_stopping_patience))
    return callbacks, checkpoint, throughput


def build_datamodule(settings: TrainSettings):
    """The :class:`FaceDataModule` for ``settings`` (augmentation off when overfitting)."""
    from scratchdet.data.datamodule import FaceDataModule

    return FaceDataModule(dataset=settings.dataset, root=settings.data_root, image_size=settings.image_size,
                          batch_size=settings.batch_size, num_workers=settings.num_workers,
                          augment=settings.augment and not settings.overfit_batches,
                          train_size=settings.train_size, val_size=settings.val_size, seed=settings.seed,
                          wider_root=settings.wider_root)


def run_training(settings: TrainSettings, datamodule=None, extra_callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train a detector as ``settings`` say; return the module, trainer and checkpoints.

    Checkpoints go to ``output_dir/checkpoints/`` (``best.ckpt`` by
    ``val/ap50``, ``last.ckpt`` at each epoch end and on an exception such as
    Ctrl-C), logs to ``output_dir/logs/version_<k>/metrics.csv`` (one version
    per run or resume; :func:`latest_log`) and TensorBoard when it is installed. With ``resume=True`` training continues from ``last.ckpt``.
    """
    quiet_lightning()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    output_dir = Path(settings.output_dir)
    checkpoints = output_dir / "checkpoints"
    resume_from = None
    if settings.resume:
        resume_from = checkpoints / "last.ckpt"
        if not resume_from.exists():
            raise ValueError(f"--resume: no checkpoint to resume from at {resume_from}")
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    config = settings.detector_config()
    datamodule = datamodule or build_datamodule(settings)
    if settings.pretrained and not settings.backbone.startswith("mobilenet"):
        raise ValueError(f"pretrained=True needs a MobileNet backbone (ImageNet weights exist only for "
                         f"torchvision's models), got backbone={settings.backbone!r}")
    backbone_kwargs = {"pretrained": True} if settings.pretrained else None
    module = YoloModule(config, backbone=settings.backbone, preset=settings.preset, backbone_kwargs=backbone_kwargs,
                        optimizer=settings.optimizer, lr=settings.lr, weight_decay=settings.weight_decay,
                        schedule=settings.schedule)
    callbacks, checkpoint, throughput = _callbacks(settings, checkpoints)
    trainer = pl.Trainer(
        max_epochs=settings.epochs, accelerator=settings.accelerator, devices=settings.devices,
        strategy=settings.strategy, num_nodes=settings.num_nodes, precision=settings.precision,
        gradient_clip_val=settings.gradient_clip or None, deterministic="warn",
        overfit_batches=settings.overfit_batches, callbacks=[*callbacks, *extra_callbacks],
        logger=_loggers(output_dir), enable_progress_bar=settings.progress_bar, enable_model_summary=False,
        max_time={"minutes": settings.max_minutes} if settings.max_minutes else None,
        num_sanity_val_steps=0, log_every_n_steps=10, default_root_dir=str(output_dir),
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - start
    last = checkpoints / "last.ckpt"
    return TrainResult(module=module, trainer=trainer, best_checkpoint=checkpoint.best_model_path or None,
                       last_checkpoint=str(last) if last.exists() else None, train_seconds=seconds,
                       images_per_second=throughput.images_per_second, settings=settings)


def open_split(dataset: str, split: str, image_size: int, data_root: str = "data",
               wider_root: str | None = None, num_images: int | None = None):
    """A dataset source for evaluation: SynthFaces at ``image_size``, or WIDER FACE.

    WIDER FACE has no public test boxes, so its ``"test"`` is the val split.
    ``num_images`` keeps the first images only.
    """
    if num_images is not None and num_images <= 0:
        raise ValueError(f"num_images must be positive, got {num_images}")
    if dataset == "synthfaces":
        from scratchdet.data.synthfaces import SynthFaces

        return SynthFaces(split, image_size=image_size, root=data_root, num_images=num_images)
    if dataset == "wider":
        from scratchdet.data.wider import WiderFace, find_wider_root

        source = WiderFace(find_wider_root(wider_root or data_root), split="val" if split == "test" else split)
        return source if num_images is None else torch.utils.data.Subset(source, range(min(num_images, len(source))))
    raise ValueError(f"dataset must be 'synthfaces' or 'wider', got {dataset!r}")


@torch.no_grad()
def predict_source(model, source, batch_size: int = 32, score_threshold: float = 0.01, iou_threshold: float = 0.45,
                   max_detections: int = 100) -> tuple[list[dict], list[torch.Tensor]]:
    """Detections of ``model`` on every image of a dataset source, and the source's boxes.

    Args:
        model: a :class:`~scratchdet.model.YoloDetector` (any device).
        source: ``source[i] -> (image uint8 (H, W, 3) RGB, boxes (M, 4) xyxy px)``.
        batch_size: images per forward pass.
        score_threshold, iou_threshold, max_detections: passed to ``predict``.

    Returns:
        ``(detections, truths)``: per image ``{"boxes": Tensor[K, 4], "scores":
        Tensor[K]}`` on the CPU, and ``Tensor[M, 4]`` float32 ground truth.
    """
    detections, truths = [], []
    for start in range(0, len(source), batch_size):
        samples = [source[i] for i in range(start, min(start + batch_size, len(source)))]
        detections += [{k: v.cpu() for k, v in d.items()} for d in model.predict(
            [image for image, _ in samples], score_threshold, iou_threshold, max_detections)]
        truths += [torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) for _, boxes in samples]
    return detections, truths


@torch.no_grad()
def evaluate_model(model, source, batch_size: int = 32, score_threshold: float = 0.01,
                   iou_threshold: float = 0.45, max_detections: int = 100, wider_out: str | None = None) -> dict:
    """AP of ``model`` on a dataset source, overall and by face size.

    Args:
        model: a :class:`~scratchdet.model.YoloDetector` (any device).
        source: a sequence of ``(image uint8 (H, W, 3) RGB, boxes (M, 4) xyxy px)``.
        batch_size: images per forward pass.
        score_threshold, iou_threshold, max_detections: passed to ``predict``
            (keep the score threshold low: AP needs the whole PR curve).
        wider_out: also write the detections in the official WIDER FACE
            layout there (``source`` must be a WIDER FACE source).

    Returns:
        :func:`scratchdet.evaluation.evaluate_by_size` of the detections
        (``ap50``, ``ap50_small``, ``ap50_medium``, ``ap50_large``,
        ``ap50_ge24``, ...) plus ``num_images`` and ``num_faces``.
    """
    from scratchdet.evaluation import evaluate_by_size

    paths = _wider_paths(source) if wider_out is not None else None  # fail before the work
    detections, truths = predict_source(model, source, batch_size, score_threshold, iou_threshold, max_detections)
    metrics = dict(evaluate_by_size(detections, truths))
    metrics.update(num_images=len(truths), num_faces=int(sum(len(t) for t in truths)))
    if wider_out is not None:
        from scratchdet.evaluation import write_wider_predictions

        metrics["wider_files"] = write_wider_predictions(
            wider_out, ((p, d["boxes"], d["scores"]) for p, d in zip(paths, detections)))
        metrics["wider_out"] = str(wider_out)
    return metrics


def _wider_paths(source) -> list[str]:
    """``<event>/<image>.jpg`` of each image of a WIDER FACE source (or a ``Subset`` of one)."""
    indices = range(len(source))
    if isinstance(source, torch.utils.data.Subset):
        source, indices = source.dataset, source.indices
    if not hasattr(source, "records"):
        raise ValueError("--wider-out needs a WIDER FACE dataset (--dataset wider): "
                         f"{type(source).__name__} has no WIDER records")
    return [source.records[i].path for i in indices]


def jsonable_metrics(metrics: dict) -> dict:
    """The entries of a metrics dict that JSON can hold (numpy scalars and arrays become Python)."""
    out = {}
    for key, value in metrics.items():
        if hasattr(value, "tolist"):
            value = value.tolist()
        if isinstance(value, (int, float, str, bool, list, dict)) or value is None:
            out[key] = value
    return out


def settings_dict(settings: TrainSettings) -> dict:
    """Plain dict of the settings (for YAML and JSON)."""
    return dataclasses.asdict(settings)
