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

Every run trains with the plan's ``base`` settings plus the run's own and is
evaluated on the test split (:func:`evaluate_run`). Runs shared by parts (the
baseline PoolResNet is in all four) train once. Each run writes ``<work_dir>/<run id>/record.json``;
running the study again reuses records whose settings match, so an
interrupted study continues where it stopped and plots can be redrawn
without training.

``benchmarks/experiments.py`` runs :data:`FULL_PLAN` end to end and writes
``benchmarks/results/experiments.json`` and the figures in ``docs/study/``;
``notebooks/10_experiments.ipynb`` reads them (or runs :data:`REDUCED_PLAN`).

The package, one concern per module:

* :mod:`~scratchdet.study.plan`    -- :class:`StudyPlan`, the two plans, the distinct runs and their ids;
* :mod:`~scratchdet.study.weights` -- ImageNet weights without the internet;
* :mod:`~scratchdet.study.runner`  -- :func:`run_study`: train, evaluate, profile, resumable records;
* :mod:`~scratchdet.study.report`  -- :func:`summarize`, Markdown tables, results files;
* :mod:`~scratchdet.study.plots`   -- the figures.
"""

from __future__ import annotations

from scratchdet.study.plan import (FULL_PLAN, PARTS, REDUCED_PARTS, REDUCED_PLAN, RUN_FIELDS, StudyPlan, plan_runs,
                                   run_id)
from scratchdet.study.plots import plot_examples, plot_study
from scratchdet.study.report import load_results, save_results, study_tables, summarize
from scratchdet.study.runner import evaluate_run, profile_model, run_study
from scratchdet.study.weights import install_offline_weights, pretrained_weights

__all__ = ["PARTS", "RUN_FIELDS", "StudyPlan", "FULL_PLAN", "REDUCED_PLAN", "REDUCED_PARTS", "plan_runs", "run_id",
           "pretrained_weights", "install_offline_weights", "evaluate_run", "profile_model", "run_study",
           "summarize", "study_tables", "plot_study", "plot_examples", "save_results", "load_results"]
