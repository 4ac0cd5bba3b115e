"""Parameters, MACs and latency (scratchdet.profiling), on models whose costs are known by hand."""

import pytest
import torch
from torch import nn

from scratchdet.profiling import count_macs, count_parameters, latency_ms, median_seconds


def test_count_macs_and_parameters_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    conv = 16 * 16 * 8 * (3 * 3 * 3)  # output pixels x output channels x kernel volume
    linear = 8 * 16 * 16 * 10
    assert count_macs(model, 16) == conv + linear
    assert count_parameters(model) == (8 * 27 + 8) + (8 * 16 * 16 * 10 + 10)


def test_count_macs_keeps_the_training_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()
    count_macs(model, 8)
    assert model.training


def test_latency_restores_threads_and_mode():
    model = nn.Conv2d(3, 4, 3).train()
    before = torch.get_num_threads()
    assert latency_ms(model, 32, repeats=3, threads=1) > 0
    assert torch.get_num_threads() == before and model.training


def test_median_seconds_is_a_median_and_checks_arguments():
    calls = []
    median_seconds(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        median_seconds(lambda: None, repeats=0)
