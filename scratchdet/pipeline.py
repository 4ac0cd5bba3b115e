"""End-to-end jobs built from the parts: train from a recipe, evaluate a model.

:func:`run_training` is what ``scratchdet train``, the demo, the study and
the tests call: it parses a recipe (:mod:`scratchdet.recipe`: YAML files in
``configs/`` and dotted-key overrides), checks the run folder, builds the
:class:`~scratchdet.training.YoloModule`, the data module and a Lightning
``Trainer`` with the checkpoints of :mod:`scratchdet.checkpoints`, and fits.
Everything device-, precision- and multi-GPU-related is Lightning's
(``trainer.accelerator``, ``devices``, ``strategy="ddp"``, ``num_nodes``,
``precision``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import Callback, LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger

from scratchdet._io import atomic_write_text
from scratchdet.checkpoints import AtomicCheckpointIO, checkpoint_callbacks, read_recipe, recipe_conflicts
from scratchdet.config import EVAL_SCORE_THRESHOLD, MAX_DETECTIONS, NMS_IOU_THRESHOLD
from scratchdet.data.labelled import LABELLED_FORMATS, open_labelled
from scratchdet.data.synthfaces import SPLIT_SIZES, SynthFaces
from scratchdet.data.wider import WiderFace, find_wider_root
from scratchdet.evaluation import evaluate_by_crowd, evaluate_by_size
from scratchdet.recipe import check_trainer, override_args, parse_recipe, recipe_dict, recipe_path
from scratchdet.training import YoloModule
from scratchdet.wider_eval import write_wider_predictions

__all__ = ["TrainResult", "TrainingInterrupted", "RunFolderError", "run_training", "evaluate_model",
           "predict_source", "open_split", "latest_log", "quiet_lightning", "jsonable_metrics"]


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (it holds checkpoints, or there is nothing to resume)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; ``checkpoint`` (or ``None``) and ``resume_command`` say how to go on."""

    def __init__(self, message: str, checkpoint: str | None, resume_command: str) -> None:
        super().__init__(message)
        self.checkpoint, self.resume_command = checkpoint, resume_command


def quiet_lightning() -> None:
    """Silence Lightning's informational logs and known harmless warnings."""
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")  # Lightning 2.6 uses deprecated calls
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*does not have many workers.*", ".*`isinstance.*LeafSpec.*", ".*GPU available but not used.*",
                    ".*The number of training batches.*", ".*torch.use_deterministic_algorithms.*",
                    ".*Deterministic behavior was enabled.*",
                    ".*You defined a `validation_step` but have no `val_dataloader`.*",
                    ".*You requested to overfit but enabled train dataloader shuffling.*",
                    ".*module\\(s\\) in eval mode at the start of training.*",  # freeze_backbone's frozen layers
                    ".*litlogger.*", ".*Checkpoint directory .* exists and is not empty.*", "(?s).*was deprecated in v4"):  # Lightning 2.6 on jsonargparse >= 4.49
        warnings.filterwarnings("ignore", message=pattern)


class ThroughputMonitor(Callback):
    """Training images per second (data loading and augmentation included, validation not), all ranks."""

    def __init__(self) -> None:
        self.images, self.seconds, self._start = 0, 0.0, None
        self.images_per_rank: list[int] = []

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

    def on_fit_end(self, trainer, pl_module) -> None:
        counts = pl_module.all_gather(torch.tensor(self.images))  # (world_size,) or a scalar on one process
        self.images_per_rank = [int(c) for c in counts.reshape(-1)]

    @property
    def images_per_second(self) -> float:
        """Images per second of this process (times the world size for the whole job)."""
        return self.images / self.seconds if self.seconds else 0.0


@dataclass
class TrainResult:
    """What :func:`run_training` returns."""

    module: YoloModule
    trainer: pl.Trainer
    best_checkpoint: str | None
    last_checkpoint: str | None
    train_seconds: float
    images_per_second: float
    recipe: dict = field(repr=False, default_factory=dict)
    output_dir: str = ""
    images_per_rank: list = field(default_factory=list)
    steps_this_run: int = 0


def _loggers(output_dir: Path) -> list:
    loggers = [CSVLogger(save_dir=str(output_dir), name="logs")]  # logs/version_<k>/metrics.csv
    try:
        import tensorboard  # noqa: F401 - optional: TensorBoard logs only where it is installed
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


def _is_main_process() -> bool:
    """False in the worker processes that Lightning's DDP launcher starts (they skip folder checks)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def _saved_recipe_file(last: Path) -> tuple[str, dict]:
    """The recipe stored in ``last`` (for a resume), written to a temporary YAML file; its path and the recipe."""
    if not last.is_file():
        raise RunFolderError(f"--resume: no checkpoint to resume from at {last}")
    saved = read_recipe(last)
    handle, name = tempfile.mkstemp(prefix="scratchdet-resume-", suffix=".yaml")
    with os.fdopen(handle, "w") as file:
        yaml.safe_dump(saved, file, sort_keys=False)
    return name, saved


def _check_run_folder(checkpoints: Path, resume: bool, overwrite: bool) -> None:
    existing = sorted(p.name for p in checkpoints.glob("*.ckpt")) if checkpoints.is_dir() else []
    if existing and not resume and not overwrite:
        raise RunFolderError(f"{checkpoints.parent} already holds checkpoints ({', '.join(existing)}); use "
                             f"--resume to continue that run, --overwrite to replace it, or another --output_dir")


def _resume_command(output_dir: Path) -> str:
    return f"scratchdet train --output_dir {output_dir} --resume"


def run_training(config: str | os.PathLike | None = None, overrides: Mapping[str, Any] | Sequence[str] = (),
                 extra_callbacks: Sequence[Callback] = (), args: Sequence[str] | None = None) -> TrainResult:
    """Train a detector from a recipe; return the module, trainer and checkpoints.

    Args:
        config: a recipe file or the name of one in ``configs/`` (``"smoke"``,
            ``"demo"``, ...); ``None``: the defaults of the signatures.
        overrides: dotted keys on top of it, as a mapping
            (``{"trainer.max_epochs": 3, "output_dir": "runs/x"}``) or as
            command-line arguments (``["--trainer.max_epochs=3"]``). The run
            keys ``output_dir``, ``resume``, ``overwrite`` and ``threads`` go here too.
        extra_callbacks: more Lightning callbacks for this run.
        args: the whole command line instead of ``config`` + ``overrides``
            (what ``scratchdet train`` passes).

    Writes ``<output_dir>/checkpoints/{best,last}.ckpt`` (see
    :mod:`scratchdet.checkpoints`), ``<output_dir>/config.yaml`` (the resolved
    recipe) and ``<output_dir>/logs/version_<k>/metrics.csv`` (one version per
    run or resume; :func:`latest_log`).

    Raises:
        RunFolderError: a new run into a folder holding checkpoints (without
            ``overwrite``), or ``resume`` with nothing to resume.
        ValueError: a bad recipe, or a resume whose recipe contradicts the
            checkpoint's (the message names the keys). Nothing is written.
        TrainingDiverged: the loss became NaN or infinite (no such weights are saved).
        TrainingInterrupted: Ctrl-C; ``last.ckpt`` holds the moment of the interrupt.
    """
    quiet_lightning()
    if args is None:
        args = ([] if config is None else ["--config", str(recipe_path(config))]) + override_args(overrides)
    pre = parse_recipe(args)  # the run keys, before any resume
    output_dir = Path(pre.config.output_dir)
    checkpoints, resume = output_dir / "checkpoints", bool(pre.config.resume)
    cli, saved = pre, None
    if resume:  # the checkpoint's recipe first, the command line on top
        path, saved = _saved_recipe_file(checkpoints / "last.ckpt")
        try:
            cli = parse_recipe(["--config", path, *args])
        finally:
            os.remove(path)
    recipe = recipe_dict(cli)
    check_trainer(recipe["trainer"])
    if _is_main_process():
        if saved is not None:
            conflicts = recipe_conflicts(saved, recipe)
            if conflicts:
                raise ValueError(f"--resume: the recipe contradicts {checkpoints / 'last.ckpt'} at "
                                 f"{len(conflicts)} key(s): {'; '.join(conflicts)}")
        _check_run_folder(checkpoints, resume, bool(cli.config.overwrite))
    if cli.config.threads:
        torch.set_num_threads(cli.config.threads)
    kept = checkpoint_callbacks(checkpoints, recipe)
    throughput = ThroughputMonitor()
    trainer_config = recipe["trainer"]
    cli.build(callbacks=[*(trainer_config.get("callbacks") or []), *kept.values(), throughput,
                         LearningRateMonitor(logging_interval="step"), *extra_callbacks],
              logger=_loggers(output_dir) if trainer_config.get("logger") in (None, True) else None,
              plugins=[AtomicCheckpointIO()], default_root_dir=str(output_dir))
    if _is_main_process():
        atomic_write_text(output_dir / "config.yaml", yaml.safe_dump(recipe, sort_keys=False))
    trainer, module = cli.trainer, cli.model
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=cli.datamodule,
                    ckpt_path=str(checkpoints / "last.ckpt") if resume else None)
    except SystemExit:  # Lightning turns Ctrl-C into exit(1) after calling on_exception
        if not kept["interrupt"].interrupted:
            raise
        where = str(kept["interrupt"].path) if kept["interrupt"].path.exists() else None
        raise TrainingInterrupted(
            f"training interrupted at step {trainer.global_step} (epoch {trainer.current_epoch}); "
            + (f"checkpoint: {where}" if where else "no checkpoint was written (no step finished)"),
            where, _resume_command(output_dir)) from None
    start_step = kept["interrupt"].start_step  # None: fit had nothing left to train
    last = checkpoints / "last.ckpt"
    best = kept["best"].best_model_path or None
    return TrainResult(module=module, trainer=trainer, best_checkpoint=best,
                       last_checkpoint=str(last) if last.exists() else None,
                       train_seconds=time.perf_counter() - start, images_per_second=throughput.images_per_second,
                       recipe=recipe, output_dir=str(output_dir), images_per_rank=throughput.images_per_rank,
                       steps_this_run=0 if start_step is None else trainer.global_step - start_step)


def open_split(dataset: str, split: str, image_size: int, data_root: str | os.PathLike | None = None,
               wider_root: str | os.PathLike | None = None, num_images: int | None = None, *,
               annotations: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
               category: str | int | None = None):
    """A dataset source for evaluation: SynthFaces at ``image_size``, WIDER FACE, or your own data.

    WIDER FACE has no public test boxes, so its ``"test"`` is the val split.
    Your own data (``dataset`` ``"coco"``, ``"yolo"``, ``"voc"`` or
    ``"imglab"``): ``annotations``, ``images`` and ``category`` go to
    :func:`scratchdet.data.labelled.open_labelled` (malformed entries raise,
    naming the file and the entry); ``images`` defaults to ``data_root``.
    ``num_images`` keeps the first images only; more than the split holds is
    an error (SynthFaces could draw more, but then it would not be that split).
    ``data_root=None``: :func:`scratchdet.data.cache.default_data_root`.
    """
    if num_images is not None and (isinstance(num_images, bool) or not isinstance(num_images, int)
                                   or num_images <= 0):
        raise ValueError(f"num_images must be a positive int, got {num_images!r}")
    if dataset == "synthfaces":
        if split not in SPLIT_SIZES:
            raise ValueError(f"split must be one of {sorted(SPLIT_SIZES)}, got {split!r}")
        if num_images is not None and num_images > SPLIT_SIZES[split]:
            raise ValueError(f"num_images={num_images} is more than the {SPLIT_SIZES[split]} images of the "
                             f"SynthFaces {split} split")
        return SynthFaces(split, image_size=image_size, root=data_root, num_images=num_images)
    if dataset == "wider":
        source = WiderFace(find_wider_root(wider_root or data_root), split="val" if split == "test" else split)
        if num_images is not None and num_images > len(source):
            raise ValueError(f"num_images={num_images} is more than the {len(source)} images of the "
                             f"WIDER FACE {source.split if hasattr(source, 'split') else split} split")
        return source if num_images is None else torch.utils.data.Subset(source, range(num_images))
    if dataset in LABELLED_FORMATS:
        source = open_labelled(dataset, annotations, images if images is not None else data_root, split, category)
        if num_images is not None and num_images > len(source):
            raise ValueError(f"num_images={num_images} is more than the {len(source)} images of {source.report.file}")
        return source if num_images is None else torch.utils.data.Subset(source, range(num_images))
    raise ValueError(f"dataset must be one of {('synthfaces', 'wider', *LABELLED_FORMATS)}, got {dataset!r}")


@torch.no_grad()
def predict_source(model, source, batch_size: int = 32, score_threshold: float = EVAL_SCORE_THRESHOLD,
                   iou_threshold: float = NMS_IOU_THRESHOLD, max_detections: int = MAX_DETECTIONS,
                   image_size: int | tuple[int, int] | None = None) -> tuple[list[dict], list[torch.Tensor]]:
    """Detections of ``model`` on every image of a dataset source, and the source's boxes.

    Args:
        model: a :class:`~scratchdet.model.YoloDetector` (any device).
        source: ``source[i] -> (image uint8 (H, W, 3) RGB, boxes (M, 4) xyxy px)``.
        batch_size: images per forward pass.
        score_threshold, iou_threshold, max_detections, image_size: passed to
            ``predict`` (``image_size``: the network input, a multiple of the
            stride; ``None``: the training size).

    Returns:
        ``(detections, truths)``: per image ``{"boxes": Tensor[K, 4], "scores":
        Tensor[K]}`` on the CPU, and ``Tensor[M, 4]`` float32 ground truth.
    """
    detections, truths = [], []
    size = {} if image_size is None else {"image_size": image_size}
    for start in range(0, len(source), batch_size):
        samples = [source[i] for i in range(start, min(start + batch_size, len(source)))]
        detections += [{k: v.cpu() for k, v in d.items()} for d in model.predict(
            [image for image, _ in samples], score_threshold=score_threshold, iou_threshold=iou_threshold,
            max_detections=max_detections, **size)]
        truths += [torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) for _, boxes in samples]
    return detections, truths


@torch.no_grad()
def evaluate_model(model, source, batch_size: int = 32, score_threshold: float = EVAL_SCORE_THRESHOLD,
                   iou_threshold: float = NMS_IOU_THRESHOLD, max_detections: int = MAX_DETECTIONS,
                   wider_out: str | None = None, image_size: int | tuple[int, int] | None = None) -> dict:
    """AP of ``model`` on a dataset source, overall and by face size.

    Args:
        model: a :class:`~scratchdet.model.YoloDetector` (any device).
        source: a sequence of ``(image uint8 (H, W, 3) RGB, boxes (M, 4) xyxy px)``.
        batch_size: images per forward pass.
        score_threshold, iou_threshold, max_detections, image_size: passed to
            ``predict`` (keep the score threshold low: AP needs the whole PR curve).
        wider_out: also write the detections in the official WIDER FACE
            layout there (``source`` must be a WIDER FACE source).

    Returns:
        :func:`scratchdet.evaluation.evaluate_by_size` of the detections
        (``ap50``, ``ap50_small``, ``ap50_medium``, ``ap50_large``,
        ``ap50_ge24``, ...), :func:`~scratchdet.evaluation.evaluate_by_crowd`
        (``ap50_single``, ``ap50_few``, ``ap50_group``, ``ap50_crowd`` and
        their ``num_images_*``), plus ``num_images`` and ``num_faces``.
    """
    paths = _wider_paths(source) if wider_out is not None else None  # fail before the work
    detections, truths = predict_source(model, source, batch_size, score_threshold, iou_threshold, max_detections,
                                        image_size)
    metrics = dict(evaluate_by_size(detections, truths))
    metrics.update(evaluate_by_crowd(detections, truths))
    metrics.update(num_images=len(truths), num_faces=int(sum(len(t) for t in truths)))
    if wider_out is not None:
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
