"""explain_dataset: per-input seeds, targets, metrics, Parquet shards and resume, and the Ray engine.

The Ray tests (``-m ray``) share one local Ray started with 2 CPUs for the module, and explain 32 shapes images.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import livexai
from livexai import datasets, models
from livexai.dataset import DatasetExplanations, explain_dataset, input_seed

LAYER = "features.conv2"
LIME = {"n_samples": 60, "n_segments": 16}


@pytest.fixture(scope="module")
def shapes() -> datasets.Shapes:
    return datasets.shapes(32, seed=3)


def fixed_cnn() -> livexai.ModelAdapter:
    """The shapes CNN with a fixed batch size: bit-identical scores in every process (no batch-size trials)."""
    return livexai.ModelAdapter(models.shapes_cnn(), batch_size=32)


def interrupting_cnn(at: int) -> nn.Module:
    """The shapes CNN (same layer names) raising KeyboardInterrupt, as a user's Ctrl-C, on forward pass ``at``."""
    model, calls = models.shapes_cnn(), []

    def count(module: nn.Module, inputs: tuple) -> None:
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt

    model.register_forward_pre_hook(count)
    return model


def same(a: DatasetExplanations, b: DatasetExplanations) -> None:
    assert a.indices == b.indices
    assert torch.equal(a.attributions, b.attributions)
    assert [e.target for e in a] == [e.target for e in b]
    assert a.metrics == b.metrics
    for x, y in zip(a, b, strict=True):
        assert (x.weights is None) == (y.weights is None)
        if x.weights is not None:
            assert torch.equal(x.weights, y.weights) and torch.equal(x.segments, y.segments)


# -- the local engine --------------------------------------------------------------------------------------------


def test_each_input_gets_the_seed_derived_from_its_index(shapes):
    model = fixed_cnn()
    result = explain_dataset(model, shapes.images[:3], "lime", seed=5, progress=False, **LIME)
    for index, explanation in zip(result.indices, result, strict=True):
        alone = livexai.lime(model, shapes.images[index], seed=input_seed(5, index), **LIME)
        assert torch.equal(explanation.attributions, alone.attributions)
    assert input_seed(5, 0) != input_seed(5, 1) != input_seed(6, 1)


def test_targets_come_from_x_target_pairs(shapes):
    pairs = list(zip(shapes.images[:6], shapes.labels[:6], strict=True))
    result = explain_dataset(fixed_cnn(), pairs, "grad_cam", layer=LAYER, progress=False)
    assert [e.target for e in result] == shapes.labels[:6].tolist()
    with pytest.raises(ValueError, match="not both"):
        explain_dataset(fixed_cnn(), pairs, "grad_cam", layer=LAYER, target=0, progress=False)


def test_a_torch_dataset_and_a_model_factory(shapes):
    data = torch.utils.data.TensorDataset(shapes.images[:4], shapes.labels[:4])
    built = []

    def factory() -> livexai.ModelAdapter:
        built.append(1)
        return fixed_cnn()

    result = explain_dataset(factory, data, "saliency", progress=False)
    assert len(built) == 1 and len(result) == 4
    assert [e.target for e in result] == shapes.labels[:4].tolist()


def test_metrics_per_input_have_known_answers(shapes):
    def the_mask(model, x, *, mask_of, **kwargs):  # an "explanation" that is the object's own mask
        explanation = livexai.saliency(model, x)
        explanation.attributions = mask_of[int(x.sum() * 0) + len(seen)].float()
        seen.append(1)
        return explanation

    seen: list[int] = []
    result = explain_dataset(
        fixed_cnn(),
        shapes.images[:4],
        the_mask,
        metrics=("pointing_game", "energy_pointing_game"),
        masks=shapes.masks[:4],
        mask_of=shapes.masks[:4],
        progress=False,
    )
    assert result.metrics == {"pointing_game": [1.0] * 4, "energy_pointing_game": [1.0] * 4}
    with pytest.raises(ValueError, match="needs a ground-truth mask"):
        explain_dataset(
            fixed_cnn(), shapes.images[:1], "saliency", metrics=("pointing_game",), progress=False
        )
    with pytest.raises(ValueError, match="unknown metrics"):
        explain_dataset(fixed_cnn(), shapes.images[:1], "saliency", metrics=("auc",), progress=False)


def test_parquet_shards_round_trip(shapes, tmp_path: Path):
    kwargs = {"seed": 1, "batch_size": 2, "progress": False, "metrics": ("deletion",), **LIME}
    in_memory = explain_dataset(fixed_cnn(), shapes.images[:5], "lime", **kwargs)
    on_disk = explain_dataset(fixed_cnn(), shapes.images[:5], "lime", output=tmp_path, **kwargs)
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == [f"shard-{k:06d}.parquet" for k in range(3)]
    same(on_disk, in_memory)
    same(DatasetExplanations.read(tmp_path), in_memory)
    first, again = in_memory[0], on_disk[0]
    assert again.image is None and again.params["seed"] == first.params["seed"] == input_seed(1, 0)
    assert (again.prediction, again.base_value, again.n_evals) == (
        first.prediction,
        pytest.approx(first.base_value),
        first.n_evals,
    )
    table = on_disk.to_pandas()
    assert list(table["index"]) == list(range(5)) and list(table["method"]) == ["lime"] * 5
    assert list(table["deletion"]) == in_memory.metrics["deletion"]
    assert (table["attributions"][4] == in_memory[4].attributions.numpy()).all()


def test_summary_plot_shows_the_mean_absolute_map(shapes):
    def signed_mask(model, x, **kwargs):  # maps +1 and -1: their mean absolute value is 1 everywhere
        explanation = livexai.saliency(model, x)
        explanation.attributions = torch.where(x[0] > 0.5, 1.0, -1.0)
        return explanation

    result = explain_dataset(fixed_cnn(), shapes.images[:3], signed_mask, progress=False)
    figure = result.plot_summary()
    assert (figure.axes[0].images[0].get_array() == 1.0).all()
    assert "saliency over 3 inputs" in figure.axes[0].get_title()


def test_an_interrupted_run_resumes_with_only_the_missing_shards(shapes, tmp_path: Path):
    images = shapes.images[:12]
    full = explain_dataset(fixed_cnn(), images, "grad_cam", layer=LAYER, batch_size=4, progress=False)
    # Ctrl-C during input 6's forward pass (Grad-CAM runs the model once per input): shard 0 is finished, 1 not.
    stopped = livexai.ModelAdapter(interrupting_cnn(at=6 + 1), batch_size=32)
    with pytest.warns(UserWarning, match="interrupted after 6 of 12"):
        partial = explain_dataset(
            stopped, images, "grad_cam", layer=LAYER, batch_size=4, output=tmp_path, progress=False
        )
    assert not partial.complete and partial.indices == list(range(6))
    assert [p.name for p in tmp_path.glob("*.parquet")] == ["shard-000000.parquet"]

    counted = fixed_cnn()
    resumed = explain_dataset(
        counted, images, "grad_cam", layer=LAYER, batch_size=4, output=tmp_path, progress=False
    )
    assert resumed.complete and resumed.n_explained == 8
    assert counted.n_evals == sum(e.n_evals for e in full[4:]) == 8
    same(resumed, full)

    again = fixed_cnn()
    assert (
        explain_dataset(
            again, images, "grad_cam", layer=LAYER, batch_size=4, output=tmp_path, progress=False
        ).n_explained
        == 0
    )
    assert again.n_evals == 0


def test_resume_refuses_other_settings_and_resume_false_starts_over(shapes, tmp_path: Path):
    run = {"layer": LAYER, "batch_size": 4, "output": tmp_path, "progress": False}
    explain_dataset(fixed_cnn(), shapes.images[:4], "grad_cam", **run)
    with pytest.raises(ValueError, match="plus_plus differ"):
        explain_dataset(fixed_cnn(), shapes.images[:4], "grad_cam", plus_plus=True, **run)
    redone = explain_dataset(fixed_cnn(), shapes.images[:4], "grad_cam", plus_plus=True, resume=False, **run)
    assert redone.n_explained == 4 and redone[0].params["plus_plus"] is True


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        ({"method": "lime_v2"}, ValueError, "unknown method 'lime_v2'"),
        ({"engine": "spark"}, ValueError, "engine must be 'local' or 'ray'"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer"),
        ({"data": 3}, TypeError, "data must be a tensor"),
        ({"data": torch.zeros(5)}, ValueError, r"a batch of inputs \(N, ...\)"),
        ({"data": [(torch.zeros(3, 8, 8), 1, 2)]}, ValueError, r"expected x or \(x, target\)"),
        ({"masks": torch.zeros(2, 64, 64)}, ValueError, "masks has 2 entries for 1 inputs"),
    ],
)
def test_mistakes_get_specific_messages(shapes, call, error, match):
    arguments = {"data": shapes.images[:1], "method": "saliency", **call}
    with pytest.raises(error, match=match):
        explain_dataset(fixed_cnn(), progress=False, **arguments)


# -- the Ray engine (a local Ray with 2 CPUs, started once for these tests) -----------------------------------


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.parametrize(
    ("method", "kwargs"), [("grad_cam", {"layer": LAYER}), ("lime", {"seed": 2, **LIME})]
)
def test_ray_gives_the_local_results(local_ray, shapes, method, kwargs):
    run = {"batch_size": 8, "progress": False, **kwargs}
    on_ray = explain_dataset(fixed_cnn(), shapes.images, method, engine="ray", num_workers=2, **run)
    same(on_ray, explain_dataset(fixed_cnn(), shapes.images, method, **run))
    assert on_ray.indices == list(range(32)) and on_ray.n_explained == 32


@pytest.mark.ray
def test_ray_resumes_the_shards_a_local_run_left(local_ray, shapes, tmp_path: Path):
    run = {"layer": LAYER, "batch_size": 8, "output": tmp_path, "progress": False}
    with pytest.warns(UserWarning, match="interrupted after 16 of 32"):
        explain_dataset(
            livexai.ModelAdapter(interrupting_cnn(at=17), batch_size=32), shapes.images, "grad_cam", **run
        )
    resumed = explain_dataset(fixed_cnn(), shapes.images, "grad_cam", engine="ray", num_workers=2, **run)
    assert resumed.complete and resumed.n_explained == 16
    assert len(list(tmp_path.glob("shard-*.parquet"))) == 4
    same(resumed, explain_dataset(fixed_cnn(), shapes.images, "grad_cam", layer=LAYER, progress=False))


@pytest.mark.ray
def test_a_ray_dataset_in_any_row_order(local_ray, shapes):
    rows = [
        {"index": i, "x": shapes.images[i].numpy(), "target": int(shapes.labels[i])}
        for i in reversed(range(8))
    ]
    on_ray = explain_dataset(
        fixed_cnn(),
        local_ray.data.from_items(rows),
        "lime",
        engine="ray",
        batch_size=4,
        progress=False,
        **LIME,
    )
    pairs = list(zip(shapes.images[:8], shapes.labels[:8], strict=True))
    same(on_ray, explain_dataset(fixed_cnn(), pairs, "lime", batch_size=4, progress=False, **LIME))
    no_index = local_ray.data.from_items([{"x": row["x"]} for row in rows])
    with pytest.raises(ValueError, match=r"lacks the columns \['index'\]"):
        explain_dataset(fixed_cnn(), no_index, "lime", engine="ray", progress=False)
    with pytest.raises(ValueError, match="explained with engine='ray'"):
        explain_dataset(fixed_cnn(), no_index, "lime", progress=False)


def test_ray_engine_without_ray_says_how_to_install(shapes, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'livexai\[ray\]'"):
        explain_dataset(fixed_cnn(), shapes.images[:1], "saliency", engine="ray", progress=False)


def test_import_livexai_does_not_import_ray():
    import subprocess

    code = "import sys, livexai; print('ray' in sys.modules, 'pyarrow' in sys.modules)"
    assert subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split() == [
        "False",
        "False",
    ]
