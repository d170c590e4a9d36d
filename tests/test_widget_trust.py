"""Can I trust this map, in the widgets: faithfulness curves under each map, "points at the object" lines, and the
sanity check's strip. Each is checked against the core function called directly (known answers), and for what
reaches the browser (binary buffers) and when (after the map, cancelled with stale work)."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import livexai
from livexai import datasets, models
from livexai.metrics import deletion, energy_pointing_game, insertion, pointing_game
from livexai.sanity import sanity_check
from livexai.widgets._base import CURVE_STEPS, SANITY_CHECK, strip_steps
from livexai.widgets._runner import Runner
from livexai.widgets._serialize import from_wire


@pytest.fixture(scope="module")
def shapes() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    images, _, masks = datasets.shapes(3, seed=1)
    return models.shapes_cnn(), images, masks


def curve_arrays(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return from_wire(entry["fractions"]), from_wire(entry["deletion"]), from_wire(entry["insertion"])


# -- faithfulness curves ---------------------------------------------------------------------------------------
def test_layer_widget_curves_are_the_core_curves_of_its_map(shapes) -> None:
    model, images, _ = shapes
    widget = livexai.LayerWidget(model, images[0])
    explanation = widget.wait(60)
    entry = widget.curves["cam"]
    assert entry["status"] == "done", entry
    fractions, down, up = curve_arrays(entry)
    expected_down = deletion(model, images[0], explanation, n_steps=CURVE_STEPS)
    expected_up = insertion(model, images[0], explanation, n_steps=CURVE_STEPS)
    assert fractions.shape == down.shape == up.shape == (CURVE_STEPS + 1,)
    np.testing.assert_allclose(fractions, expected_down.fractions.numpy(), atol=1e-6)
    np.testing.assert_allclose(down, expected_down.scores.numpy(), atol=1e-5)
    np.testing.assert_allclose(up, expected_up.scores.numpy(), atol=1e-5)
    assert entry["deletion_auc"] == pytest.approx(expected_down.auc, abs=1e-4)
    assert entry["insertion_auc"] == pytest.approx(expected_up.auc, abs=1e-4)
    assert entry["deletion_auc"] < entry["insertion_auc"]  # a trained model's Grad-CAM is faithful here


def test_lime_widget_curves_follow_the_superpixel_order(shapes) -> None:
    model, images, _ = shapes
    widget = livexai.LimeWidget(model, images[1], n_segments=12, n_samples=200)
    explanation = widget.wait(60)
    _, down, _ = curve_arrays(widget.curves["lime"])
    # 12 superpixels over 20 steps: whole superpixels go at once, so some steps repeat the same image
    np.testing.assert_allclose(
        down, deletion(model, images[1], explanation, n_steps=CURVE_STEPS).scores, atol=1e-5
    )
    assert len(np.unique(down)) <= 13


def test_curves_come_after_the_final_map_and_can_be_turned_off(shapes) -> None:
    model, images, _ = shapes
    order: list[str] = []
    widget = livexai.LayerWidget(model, images[0], runner=Runner())
    widget.wait(60)
    widget.observe(lambda change: order.append(f"status:{change['new']}"), names=["status"])
    widget.observe(
        lambda change: order.append("curves:" + ",".join(v["status"] for v in change["new"].values())),
        names=["curves"],
    )
    widget.target = 1
    widget.wait(60)
    # cleared as the new request starts (the old curves were of the old map), drawn after the map is final
    assert order.index("curves:") < order.index("status:idle") < order.index("curves:computing")
    assert order.index("curves:computing") < order.index("curves:done")

    off = livexai.LayerWidget(model, images[0], faithfulness=False)
    off.wait(60)
    assert off.curves == {} and off.status == "idle"
    with pytest.raises(TypeError, match="faithfulness must be True or False"):
        livexai.LayerWidget(model, images[0], faithfulness="yes")


def test_rapid_changes_end_with_the_curves_of_the_final_map(shapes) -> None:
    model, images, _ = shapes
    widget = livexai.LayerWidget(model, images[0])
    layers = next(control for control in widget.controls if control["name"] == "layer")["choices"]
    for step in range(12):
        widget.set_state({"layer": layers[step % len(layers)], "target": step % 4})
    explanation = widget.wait(60)
    assert explanation.target == 11 % 4
    _, down, _ = curve_arrays(widget.curves["cam"])
    np.testing.assert_allclose(
        down, deletion(model, images[0], explanation, n_steps=CURVE_STEPS).scores, atol=1e-5
    )


def test_curves_travel_as_binary_buffers(shapes, monkeypatch) -> None:
    import comm

    log: list[dict[str, Any]] = []

    class Recording(comm.base_comm.BaseComm):
        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            log.append({"data": data, "buffers": list(buffers or [])})

    monkeypatch.setattr(comm, "create_comm", lambda *args, **kwargs: Recording(*args, **kwargs))
    model, images, _ = shapes
    widget = livexai.LayerWidget(model, images[0])
    widget.wait(60)
    widget.send_state(["curves"])
    message = log[-1]
    state = message["data"]["state"]["curves"]["cam"]
    assert state["status"] == "done" and len(message["buffers"]) == 3  # fractions, deletion, insertion
    assert all(len(bytes(buffer)) == 4 * (CURVE_STEPS + 1) for buffer in message["buffers"])
    assert not any(isinstance(value, list) for value in state.values())


def test_explorer_scores_every_map_and_reuses_curves_of_maps_it_keeps(shapes) -> None:
    model, images, masks = shapes
    widget = livexai.Explorer(model, images, masks=masks, n_segments=10, n_samples=100)
    results = widget.wait(120)
    assert set(widget.curves) == set(results)
    for method, result in results.items():
        _, down, up = curve_arrays(widget.curves[method])
        np.testing.assert_allclose(
            down, deletion(model, images[0], result, n_steps=CURVE_STEPS).scores, atol=1e-5
        )
        np.testing.assert_allclose(
            up, insertion(model, images[0], result, n_steps=CURVE_STEPS).scores, atol=1e-5
        )
    kept = widget.curves["grad_cam"]
    evaluations = widget._adapter.n_evals
    widget.n_samples = 120  # Grad-CAM and GradientSHAP are kept, and so are their curves
    widget.wait(120)
    assert widget.curves["grad_cam"] is kept or widget.curves["grad_cam"] == kept
    # LIME and KernelSHAP were recomputed and scored again: 2 maps x 2 curves x at most 20 evaluations
    assert widget._adapter.n_evals - evaluations <= 120 + 120 * 4 + 4 * CURVE_STEPS + 10


# -- points at the object -------------------------------------------------------------------------------------
def test_explorer_says_whether_each_map_points_at_the_object(shapes) -> None:
    model, images, masks = shapes
    widget = livexai.Explorer(model, images, masks=masks, n_segments=10, n_samples=100, selected=2)
    results = widget.wait(120)
    for entry in widget.panels:
        pointing, result = entry["pointing"], results[entry["key"]]
        assert pointing["tolerance"] == 4.0  # 15 pixels at 224, scaled to 64
        assert pointing["hit"] == pointing_game(result, masks[2], tolerance=4)
        assert pointing["energy"] == pytest.approx(energy_pointing_game(result, masks[2]), abs=1e-4)
        assert pointing["share"] == pytest.approx(float(masks[2].float().mean()), abs=1e-4)
    plain = livexai.Explorer(model, images[:1], n_segments=10, n_samples=100, faithfulness=False)
    plain.wait(120)
    assert all("pointing" not in entry for entry in plain.panels)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda masks: masks[:2], ValueError, "masks has 2 masks for 3 images"),
        (lambda masks: masks[:, :32], ValueError, r"masks\[0\]: mask has shape \(32, 64\)"),
        (lambda masks: masks[0], TypeError, r"tensor \(N, H, W\) or a list .* of shape \(64, 64\)"),
        (lambda masks: torch.zeros_like(masks), ValueError, r"masks\[0\]: mask is empty"),
        (lambda masks: masks.float() * 2, ValueError, "boolean"),
        (lambda masks: "masks", TypeError, "tensor"),
    ],
)
def test_explorer_refuses_masks_that_do_not_fit(shapes, change, error, message) -> None:
    model, images, masks = shapes
    with pytest.raises(error, match=message):
        livexai.Explorer(model, images, masks=change(masks))


# -- sanity check ---------------------------------------------------------------------------------------------
def test_strip_steps_keep_the_last_layer_and_spread_the_rest() -> None:
    assert strip_steps(5, 5) == [0, 1, 2, 3, 4]
    assert strip_steps(5, 2) == [0, 1]
    assert strip_steps(62, 62, most=10) == [0, 7, 14, 20, 27, 34, 41, 47, 54, 61]
    assert strip_steps(62, 21, most=10) == [0, 7, 14, 20]


def test_layer_widget_sanity_check_matches_the_core_and_reaches_the_browser(shapes) -> None:
    model, images, _ = shapes
    widget = livexai.LayerWidget(model, images[0])
    widget.wait(60)
    widget._on_message(widget, {"kind": SANITY_CHECK, "key": "cam"}, [])  # the panel's button
    widget.wait(60)
    strip, report = widget.sanity, widget.sanity_report
    expected = sanity_check(model, images[0], "grad_cam", layer=widget.layer, output="logits")
    assert report is not None and report.passed and strip["passed"] is True
    assert strip["status"] == "done" and strip["done"] == strip["total"] == len(expected.layers) == 9
    assert strip["layers"] == ["original", *expected.layers]
    np.testing.assert_allclose(from_wire(strip["similarity"]), [1.0, *expected.similarity], atol=1e-6)
    maps = from_wire(strip["maps"])
    assert maps.shape == (10, 64, 64) and maps.dtype == np.float32
    np.testing.assert_allclose(maps[-1], expected.maps[-1].numpy(), atol=1e-6)
    assert from_wire(strip["image"]).shape == (64, 64, 3)
    assert strip["summary"] == expected.summary and "passes" in strip["summary"]
    assert widget.panels[0]["sanity"] is True


def test_a_parameter_change_cancels_and_clears_the_sanity_check(shapes) -> None:
    model, images, _ = shapes
    gate = threading.Event()
    widget = livexai.LayerWidget(model, images[0], runner=Runner())
    widget.wait(60)
    widget._runner.submit(object(), lambda context: gate.wait(10))  # hold the runner: the check stays pending
    widget.sanity_check()
    assert widget.sanity["status"] == "computing"
    widget.target = 2
    gate.set()
    widget.wait(60)
    assert widget.sanity is None and widget.sanity_report is None
    assert widget.explanation.target == 2


def test_sanity_check_errors_show_in_the_strip_and_keep_the_widget(shapes) -> None:
    model, images, _ = shapes
    widget = livexai.LayerWidget(model, images[0], method="activations")
    widget.wait(60)
    widget._on_message(widget, {"kind": SANITY_CHECK, "key": "cam"}, [])
    assert widget.sanity["status"] == "error" and "choose grad_cam" in widget.sanity["summary"]
    assert widget.status == "idle" and widget.error == ""
    lime = livexai.LimeWidget(model, images[0], n_samples=50)
    with pytest.raises(ValueError, match="LimeWidget has no sanity check"):
        lime.sanity_check()
    lime.wait(60)
    # an error inside the check's job (here: a keyword the method refuses) reaches the strip
    explorer = livexai.Explorer(model, images[:1], n_segments=6, n_samples=50)
    explorer.wait(60)
    request = explorer._sanity_request("grad_cam")
    explorer._sanity_request = lambda key: replace(request, kwargs={"no_such_keyword": 1})
    explorer.sanity_check("grad_cam")
    explorer.wait(60)
    assert explorer.sanity["status"] == "error" and "no_such_keyword" in explorer.sanity["summary"]
    assert explorer.status == "idle" and all(entry["status"] == "done" for entry in explorer.panels)


def test_explorer_sanity_check_of_each_panel_uses_its_method(shapes) -> None:
    model, images, _ = shapes
    widget = livexai.Explorer(model, images, n_segments=8, n_samples=60, selected=1)
    widget.wait(120)
    assert all(entry["sanity"] is True for entry in widget.panels)
    widget.sanity_check("gradient_shap")
    widget.wait(120)
    expected = sanity_check(
        model, images[1], "gradient_shap", background=images, n_samples=50, seed=0, output="logits"
    )
    assert widget.sanity["key"] == "gradient_shap" and widget.sanity["signed"] is True
    np.testing.assert_allclose(from_wire(widget.sanity["similarity"])[1:], expected.similarity, atol=1e-5)
    with pytest.raises(ValueError, match="unknown panel 'cam'"):
        widget.sanity_check("cam")
