"""The progressive engine's pieces: the plain functions' signatures, the stop rule, the KernelSHAP pair layout."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
import torch

import livexai
from livexai._design import PairLayout
from livexai._progressive import FlatSequence, StopRule


@pytest.mark.parametrize(
    ("function", "name", "own"),
    [
        (livexai.lime, "lime", ("baseline", "kernel_width", "alpha", "discretize")),
        (livexai.kernel_shap, "kernel_shap", ("background_size", "interactions")),
    ],
)
def test_plain_functions_show_the_real_keywords_without_every_chunk(function, name, own) -> None:
    parameters = inspect.signature(function).parameters
    shared = (
        "model",
        "x",
        "target",
        "n_segments",
        "segments",
        "segmentation",
        "segmentation_options",
        "image",
    )
    for keyword in (*shared, "blur_sigma", "n_samples", "background", "seed", "tol", "chunk_size", *own):
        assert keyword in parameters, keyword
    assert "every_chunk" not in parameters
    assert parameters["n_segments"].default == 50 and parameters["seed"].default == 0
    assert inspect.signature(function).return_annotation == "Explanation"
    assert function.__name__ == name and function.__qualname__ == name
    assert function.__doc__ and "every_chunk" not in function.__doc__
    with pytest.raises(TypeError, match="every_chunk"):
        function(torch.nn.Linear(3, 2), torch.zeros(3), every_chunk=True)


def test_stop_rule_ratio_and_convergence() -> None:
    fit = SimpleNamespace(values=torch.tensor([1.0, 3.0, -1.0]), stderr=torch.tensor([0.1, 0.2, 0.05]))
    rule = StopRule(tol=0.1, min_done=10)
    assert rule.ratio(fit) == pytest.approx(0.2 / 4.0)
    assert rule.converged(0.05, done=10, final=False)
    assert not rule.converged(0.05, done=9, final=False)  # standard errors not trusted yet
    assert not rule.converged(0.05, done=10, final=True)  # nothing left to save
    assert not rule.converged(0.2, done=10, final=False)
    assert not StopRule(tol=None, min_done=0).converged(0.0, done=10, final=False)
    flat = SimpleNamespace(values=torch.ones(3), stderr=torch.zeros(3))
    assert rule.ratio(flat) == float("inf")


def test_flat_sequence_chunks_end_after_whole_units() -> None:
    pairs = FlatSequence(11, evals_per_item=3, first=1, align=2)
    assert [pairs.boundary(t) for t in (0, 1, 2, 3, 4, 10, 50)] == [1, 1, 3, 3, 5, 11, 11]
    assert [pairs.units_done(stop) for stop in (1, 3, 11)] == [0, 1, 5]
    samples = FlatSequence(5)
    assert [samples.boundary(t) for t in (0, 1, 4, 9)] == [1, 1, 4, 5]


def test_pair_layout_walks_empty_then_each_pair_and_its_complement_per_fill_row() -> None:
    units = torch.tensor([[True, False, False], [True, True, False]])
    layout = PairLayout(units, n_fill=2)
    assert layout.sequence == FlatSequence(5, evals_per_item=2, first=1, align=2)
    masks = layout.masks(0, 10)
    expected = [[0, 0, 0], [1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]]
    assert masks.tolist() == [[bool(v) for v in row] for row in expected for _ in range(2)]
    assert torch.equal(layout.masks(3, 7), masks[3:7])
    assert layout.fill_rows(3, 7).tolist() == [1, 0, 1, 0]
    assert PairLayout(units, n_fill=1).fill_rows(0, 5) is None
    assert torch.equal(PairLayout(units, n_fill=1).masks(1, 5), masks[2::2])
    assert PairLayout(units[:0], n_fill=1).masks(0, 1).tolist() == [[False, False, False]]
    values = torch.tensor([0.0, 5.0, 2.0, 7.0, 1.0])
    assert layout.differences(values, 2).tolist() == [3.0, 6.0]
