"""TabularExplorer without a browser: each view equals the core function it shows, and mistakes are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import livexai
from livexai import datasets, models
from livexai._features import subsample_indices
from livexai.widgets._serialize import from_wire
from livexai.widgets.tabular import SWARM_SAMPLES

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def case():
    data = datasets.breast_cancer("test")
    return (
        models.breast_cancer_mlp(),
        data.x[:40],
        data.y[:40],
        list(data.feature_names),
        list(data.class_names),
    )


def make(case, **options):
    model, rows, labels, names, classes = case
    return livexai.TabularExplorer(model, rows, y=labels, feature_names=names, class_names=classes, **options)


def test_the_table_lists_every_row_with_its_prediction_and_label(case) -> None:
    model, rows, labels, _, classes = case
    widget = make(case)
    widget.wait(60)
    table = widget.table
    assert table["classes"] == classes and len(table["columns"]) == 30
    np.testing.assert_array_equal(from_wire(table["predicted"]), model(rows).argmax(1).numpy())
    np.testing.assert_array_equal(from_wire(table["labels"]), labels.numpy())
    probabilities = torch.softmax(model(rows), 1).max(1).values.detach().numpy()
    np.testing.assert_allclose(from_wire(table["confidence"]), probabilities, rtol=1e-5)
    widget.close()


def test_the_row_waterfall_is_kernel_shap_on_kmeans_centres_and_follows_the_selected_row(case) -> None:
    model, rows, _, names, classes = case
    widget = make(case, n_samples=300, background_size=6)
    widget.set_state({"selected": 7, "target": 1})
    explanation = widget.wait(60)
    background = livexai.kmeans(rows, 6, seed=0)
    direct = livexai.kernel_shap(
        model, rows[7], background=background, n_samples=300, target=1, feature_names=names
    )
    torch.testing.assert_close(explanation.attributions, direct.attributions)
    local = widget.local
    np.testing.assert_allclose(from_wire(local["values"]), direct.attributions.numpy(), rtol=1e-6)
    np.testing.assert_allclose(from_wire(local["features"]), rows[7].numpy())
    assert local["base"] == pytest.approx(direct.base_value, abs=1e-5) and local["target"] == classes[1]
    assert widget.predictions[0]["probability"] == pytest.approx(
        float(torch.softmax(model(rows[7:8]), 1).max())
    )
    widget.set_state({"summary": "random"})
    sampled = widget.wait(60)
    kept = rows[subsample_indices(40, 6, 0)]
    direct = livexai.kernel_shap(model, rows[7], background=kept, n_samples=300, target=1)
    torch.testing.assert_close(sampled.attributions, direct.attributions)
    widget.close()


def test_deep_shap_and_lime_use_a_random_sample_of_the_background(case) -> None:
    model, rows, *_ = case
    widget = make(case, method="deep", background_size=5)
    explanation = widget.wait(60)
    kept = rows[subsample_indices(40, 5, 0)]
    direct = livexai.deep_shap(model, rows[0], background=kept, target=explanation.target)
    torch.testing.assert_close(explanation.attributions, direct.attributions)
    assert [c["name"] for c in widget.controls] == ["method", "background_size"]
    widget.set_state({"method": "lime", "n_samples": 200})
    explanation = widget.wait(60)
    assert explanation.method == "lime" and widget.local["title"] == "LIME"
    widget.close()


def test_the_global_tab_shows_importance_a_filling_beeswarm_and_a_tree_of_the_chosen_depth(case) -> None:
    model, rows, labels, names, classes = case
    widget = make(case)
    widget.wait(60)
    assert widget.global_view == {}  # nothing global is computed until the tab is opened
    widget.show_global()
    widget.wait(120)
    parts = widget.global_view
    importance = livexai.permutation_importance(model, rows, labels, n_repeats=5, feature_names=names)
    np.testing.assert_allclose(from_wire(parts["importance"]["mean"]), importance.mean.numpy(), atol=1e-6)
    swarm = parts["swarm"]
    assert swarm["done"] == swarm["total"] == 40 and from_wire(swarm["values"]).shape == (40, 30)
    target = classes.index(swarm["target"])
    first = livexai.kernel_shap(
        model, rows[0], background=livexai.kmeans(rows, 10), n_samples=SWARM_SAMPLES, target=target
    )
    np.testing.assert_allclose(
        from_wire(swarm["values"])[0], first.attributions.numpy(), rtol=1e-5, atol=1e-6
    )
    tree = livexai.distill(model, rows, max_depth=3, y=labels, feature_names=names, class_names=classes)
    assert parts["tree"]["fidelity"] == pytest.approx(tree.fidelity, abs=1e-4) and parts["tree"]["depth"] == 3
    assert "depth" in [c["name"] for c in widget.controls]
    before = widget.global_view["swarm"]
    widget.set_state({"depth": 1})
    widget.wait(60)
    assert widget.global_view["tree"]["depth"] == 1 and len(widget.global_view["tree"]["rules"]) == 2
    assert widget.global_view["swarm"] is before  # only the tree was recomputed
    widget.close()


def test_mistakes_are_named_and_the_widget_keeps_working(case) -> None:
    model, rows, labels, *_ = case
    with pytest.raises(ValueError, match="y has 3 labels for 40 rows"):
        livexai.TabularExplorer(model, rows, y=labels[:3])
    with pytest.raises(ValueError, match="background has 2 columns; expected 30"):
        livexai.TabularExplorer(model, rows, background=torch.zeros(4, 2))
    widget = livexai.TabularExplorer(model, rows)
    widget.wait(60)
    widget.set_state({"method": "forest"})
    assert "method must be one of" in widget.error
    widget.set_state({"method": "kernel", "selected": 3})
    assert widget.wait(60) is not None and widget.error == "" and widget.local is not None
    widget.close()
