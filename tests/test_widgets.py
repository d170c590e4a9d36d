"""Widgets in plain pytest: set state as the browser would, check what comes back and what was sent.

The machinery (runner hook-up, validation, errors, streaming, serialization) is tested with a fake method whose
answer is known exactly; the real widgets are checked against the core functions called directly with the same
parameters.
"""

from __future__ import annotations

import random
import time
from typing import Any, ClassVar

import comm
import numpy as np
import pytest
import torch
import traitlets
from torch import nn

from livexai import Explanation
from livexai.widgets._base import ExplainerWidget, _static_path, label_names, panel
from livexai.widgets._params import ChoiceParam, FloatParam, IntParam
from livexai.widgets._runner import JobContext
from livexai.widgets._serialize import WIRE_DTYPES, from_wire, image_to_wire, to_wire


# -- fixtures ---------------------------------------------------------------------------------------------------
class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(3, 16, 16, generator=generator)
    image[:, 4:12, 4:12] += 1.0  # a bright square, something for superpixels to find
    return image


class RecordingComm(comm.base_comm.BaseComm):
    """A comm that keeps every message a widget sends, buffers included (ipywidgets' own tests do the same)."""

    log: ClassVar[list[dict[str, Any]]] = []

    def publish_msg(
        self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any
    ):
        RecordingComm.log.append({"type": msg_type, "data": data, "buffers": list(buffers or [])})


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    RecordingComm.log = []
    monkeypatch.setattr(comm, "create_comm", lambda *args, **kwargs: RecordingComm(*args, **kwargs))
    return RecordingComm.log


def updates(log: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Messages that updated trait ``key`` (state and buffers)."""
    return [m for m in log if m["type"] == "comm_msg" and key in m["data"].get("state", {})]


# -- a fake method with a known answer ------------------------------------------------------------------------
def fake_map(
    n_segments: int, scale: float, size: int = 16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vertical stripes: segment = column * n_segments // size, weight of segment k = scale * (k - n/2)."""
    columns = torch.arange(size) * n_segments // size
    segments = columns.expand(size, size).contiguous()
    weights = scale * (torch.arange(n_segments, dtype=torch.float32) - n_segments / 2)
    return weights[segments], segments, weights


class FakeWidget(ExplainerWidget):
    kind = traitlets.Unicode("lime").tag(sync=True)
    n_segments = IntParam(4, "superpixels", low=1, high=16)
    scale = FloatParam(1.0, "scale", low=0.0, high=10.0, open_low=True)
    mode = ChoiceParam("plain", "mode", choices=("plain", "fail"))

    def __init__(self, *args: Any, chunks: int = 4, delay: float = 0.002, **kwargs: Any) -> None:
        self.chunks, self.delay, self.computed = chunks, delay, []
        super().__init__(*args, **kwargs)

    def _compute(self, request: dict[str, Any], context: JobContext) -> None:
        self.computed.append(request)
        values, segments, weights = fake_map(request["n_segments"], request["scale"])
        for chunk in range(1, self.chunks + 1):
            context.check_cancel()
            time.sleep(self.delay)
            partial = Explanation(
                "fake",
                0,
                values * chunk / self.chunks,
                0.0,
                weights,
                segments=segments,
                params=dict(request),
                n_evals=chunk,
            )
            context.update(
                lambda partial=partial: setattr(
                    self, "panels", [panel("fake", "Fake", partial, status="partial")]
                )
            )
        if request["mode"] == "fail":
            raise ValueError("the fake method failed on purpose")
        final = Explanation(
            "fake",
            0,
            values,
            0.0,
            weights,
            segments=segments,
            params=dict(request),
            n_evals=self.chunks,
            elapsed_s=0.01,
            image=self._display,
        )
        context.post(
            lambda: self._finish(final, [panel("fake", "Fake", final)], elapsed_ms=10.0, n_evals=self.chunks)
        )


# -- serialization --------------------------------------------------------------------------------------------
def test_arrays_travel_as_bytes_with_dtype_and_shape() -> None:
    values = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)
    wire = to_wire(values)
    assert wire["dtype"] == "float32" and wire["shape"] == [3, 4] and isinstance(wire["data"], bytes)
    assert len(wire["data"]) == 12 * 4
    np.testing.assert_array_equal(from_wire(wire), values.float().numpy())
    assert to_wire(torch.arange(5))["dtype"] == "int32"
    assert to_wire(np.array([True, False]))["dtype"] == "uint8"
    assert from_wire(
        {**to_wire(np.arange(6, dtype=np.uint8).reshape(2, 3)), "data": memoryview(bytes(range(6)))}
    ).shape == (2, 3)
    assert WIRE_DTYPES == ("float32", "int32", "uint8")


def test_serialization_refuses_what_would_be_silently_wrong() -> None:
    with pytest.raises(ValueError, match="do not fit in int32"):
        to_wire(torch.tensor([2**40]))
    with pytest.raises(ValueError, match="dtype must be one of"):
        to_wire(torch.zeros(2), "float64")
    with pytest.raises(TypeError, match="expected numbers"):
        to_wire(np.array(["a"]))


def test_display_images_are_sent_as_uint8_rgb() -> None:
    image = torch.tensor([[[0.0, 0.5, 1.0]]])
    wire = image_to_wire(image)
    assert wire["dtype"] == "uint8" and wire["shape"] == [1, 1, 3]
    assert list(wire["data"]) == [0, 128, 255]
    assert image_to_wire(None) is None


def test_the_front_end_file_is_found() -> None:
    path = _static_path("widget.js")
    assert path.name == "widget.js" and "export default" in path.read_text()
    assert _static_path("widget.css").is_file()
    with pytest.raises(FileNotFoundError, match="no-such-file"):
        _static_path("no-such-file.js")


def test_labels() -> None:
    assert label_names(None, 3) == ["0", "1", "2"]
    assert label_names({1: "cat"}, 3) == ["0", "cat", "2"]
    assert label_names(["a", "b", "c", "d"], 3) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="2 names but the model has 3 outputs"):
        label_names(["a", "b"], 3)
    with pytest.raises(TypeError, match="labels must be"):
        label_names("abc", 3)


# -- the machinery, with the fake method ----------------------------------------------------------------------
def test_state_from_the_front_end_brings_results_back_as_buffers(model, x, sent) -> None:
    widget = FakeWidget(model, x, labels=[f"class {i}" for i in range(5)])
    widget.wait(10)
    assert widget.status == "idle" and widget.error == ""
    widget.set_state({"n_segments": 8, "scale": 2.0})
    explanation = widget.wait(10)
    assert widget.status == "idle" and widget.progress == 1.0
    assert explanation.params["n_segments"] == 8 and explanation.params["scale"] == 2.0
    expected, segments, weights = fake_map(8, 2.0)
    shown = widget.panels[0]
    np.testing.assert_array_equal(from_wire(shown["map"]), expected.numpy())
    np.testing.assert_array_equal(from_wire(shown["segments"]), segments.numpy())
    np.testing.assert_array_equal(from_wire(shown["weights"]), weights.numpy())
    assert (
        shown["signed"] is True
    )  # the map has negative values: the front end picks the diverging colour map
    # What was sent: the map went out as binary buffers, not as JSON numbers.
    panel_messages = updates(sent, "panels")
    assert panel_messages, "no panels update was sent"
    last = panel_messages[-1]
    assert last["buffers"] and all(isinstance(b, (bytes, memoryview)) for b in last["buffers"])
    assert last["data"]["buffer_paths"], "buffers must be referenced by path"
    assert "map" in last["data"]["state"]["panels"][0]
    image = widget.image
    assert image["dtype"] == "uint8" and image["shape"] == [16, 16, 3]
    assert [p["label"] for p in widget.predictions][:1] and len(widget.predictions) == 5


def test_signed_maps_are_flagged_for_the_diverging_colour_map() -> None:
    values = torch.tensor([[-1.0, 1.0]])
    assert panel("a", "A", Explanation("grad_cam", 0, values.abs(), 0.0))["signed"] is False
    assert panel("a", "A", Explanation("grad_cam", 0, values, 0.0))["signed"] is True
    assert panel("a", "A", Explanation("lime", 0, values.abs(), 0.0))["signed"] is True


def test_200_random_rapid_changes_end_with_the_final_parameters_shown(model, x) -> None:
    widget = FakeWidget(model, x, chunks=3, delay=0.003)
    rng = random.Random(0)
    for _ in range(200):
        widget.set_state({"n_segments": rng.randint(1, 16), "scale": rng.choice([0.5, 1.0, 2.5, 7.0])})
    final = (widget.n_segments, widget.scale)
    explanation = widget.wait(20)
    assert widget.status == "idle" and widget.error == ""
    assert (explanation.params["n_segments"], explanation.params["scale"]) == final
    expected, _, _ = fake_map(*final)
    np.testing.assert_array_equal(from_wire(widget.panels[0]["map"]), expected.numpy())
    assert widget.panels[0]["status"] == "done"
    assert len(widget.computed) < 200, "stale requests should be dropped, not all computed"
    assert widget.computed[-1]["n_segments"] == final[0]


def test_an_exception_shows_a_message_and_the_widget_keeps_working(model, x, caplog) -> None:
    widget = FakeWidget(model, x)
    good = widget.wait(10)
    widget.set_state({"mode": "fail"})
    widget.wait(10)
    assert widget.status == "error"
    assert widget.error == "ValueError: the fake method failed on purpose"
    assert widget.explanation is good  # the last good result stays
    assert any(record.exc_info for record in caplog.records if record.name == "livexai.widgets._runner")
    widget.set_state({"mode": "plain", "n_segments": 3})
    explanation = widget.wait(10)
    assert widget.status == "idle" and widget.error == ""
    assert explanation.params["n_segments"] == 3


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"n_segments": 0}, "n_segments must be between 1 and 16, got 0"),
        ({"n_segments": 99}, "n_segments must be between 1 and 16, got 99"),
        ({"n_segments": "many"}, "n_segments must be an integer"),
        ({"scale": -1.0}, "scale must be greater than 0.0"),
        ({"mode": "<script>"}, "mode must be one of 'plain', 'fail'"),
        ({"target": 7}, "target must be between 0 and 4, got 7"),
    ],
)
def test_invalid_values_from_the_front_end_are_refused_and_reverted(model, x, sent, state, message) -> None:
    widget = FakeWidget(model, x)
    widget.wait(10)
    before = {name: getattr(widget, name) for name in state}
    computed = len(widget.computed)
    sent.clear()
    widget.set_state(state)
    assert {name: getattr(widget, name) for name in state} == before
    assert message in widget.error
    assert widget.status == "error"
    (name,) = state
    reverted = updates(sent, name)
    assert reverted and reverted[-1]["data"]["state"][name] == before[name], (
        "the browser must get the kept value back"
    )
    widget.wait(10)
    assert len(widget.computed) == computed, "a refused value must not start a computation"
    widget.set_state({"n_segments": 5})  # and the next valid change recovers
    widget.wait(10)
    assert widget.status == "idle" and widget.error == ""


def test_valid_and_invalid_values_in_one_message(model, x) -> None:
    widget = FakeWidget(model, x)
    widget.wait(10)
    widget.set_state({"n_segments": 6, "scale": 0.0})
    assert widget.n_segments == 6 and widget.scale == 1.0
    assert "scale must be greater than 0.0" in widget.error
    widget.wait(10)
    assert widget.explanation.params["n_segments"] == 6


def test_invalid_values_from_python_raise(model, x) -> None:
    widget = FakeWidget(model, x)
    with pytest.raises(traitlets.TraitError, match="n_segments must be between 1 and 16"):
        widget.n_segments = 40
    with pytest.raises(traitlets.TraitError, match="target must be"):
        widget.target = -1
    widget.wait(10)


def test_controls_describe_the_parameters(model, x) -> None:
    widget = FakeWidget(model, x)
    assert [c["name"] for c in widget.controls] == ["n_segments", "scale", "mode"]
    assert widget.controls[0] == {
        "name": "n_segments",
        "kind": "int",
        "label": "superpixels",
        "min": 1,
        "max": 16,
        "step": 1,
    }
    assert widget.controls[2]["choices"] == ["plain", "fail"]
    widget.wait(10)


def test_target_changes_recompute(model, x) -> None:
    widget = FakeWidget(model, x)
    widget.wait(10)
    widget.set_state({"target": 3})
    widget.wait(10)
    assert widget.computed[-1]["target"] == 3


def test_png_fallback_and_save_png(model, x, tmp_path) -> None:
    widget = FakeWidget(model, x)
    widget.wait(10)
    data, _ = widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    import base64

    assert base64.b64decode(data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    path = widget.save_png(tmp_path / "fake.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_close_cancels_work(model, x) -> None:
    widget = FakeWidget(model, x, chunks=200, delay=0.01)
    widget.close()
    assert widget._runner.wait(widget, timeout=5)
    assert widget.explanation is None


def test_errors_at_construction_are_immediate(model) -> None:
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        FakeWidget(model, [[1.0]])
    with pytest.raises(ValueError, match="explains an image"):
        FakeWidget(model, torch.zeros(7))


# -- LayerWidget (Grad-CAM, Grad-CAM++, activations) ----------------------------------------------------------
def test_layer_widget_matches_grad_cam_called_directly(model, x) -> None:
    from livexai.cam import grad_cam
    from livexai.layers import layers
    from livexai.widgets import LayerWidget

    widget = LayerWidget(model, x)
    names = layers(model, x)
    assert (
        widget.controls[0]["choices"] == names and widget.layer == "features"
    )  # the block whose output is the deepest map
    explanation = widget.wait(10)
    direct = grad_cam(model, x, layer="features.3")
    torch.testing.assert_close(explanation.attributions, direct.attributions)
    assert explanation.method == "grad_cam" and widget.panels[0]["signed"] is False
    widget.set_state({"layer": names[0], "method": "grad_cam++", "target": 2})
    explanation = widget.wait(10)
    direct = grad_cam(model, x, layer=names[0], target=2, plus_plus=True)
    torch.testing.assert_close(explanation.attributions, direct.attributions)
    np.testing.assert_array_equal(from_wire(widget.panels[0]["map"]), direct.attributions.numpy())
    assert names[0] in widget.panels[0]["title"]


def test_layer_widget_activations_grid_and_channel_clicks(model, x) -> None:
    from livexai.layers import activations
    from livexai.widgets import LayerWidget

    widget = LayerWidget(model, x, layer="features.0", method="activations", n_channels=4)
    result = widget.wait(10)
    direct = activations(model, x, layer="features.0")
    torch.testing.assert_close(result.maps, direct.maps)
    shown = widget.panels[0]
    np.testing.assert_array_equal(from_wire(shown["channel_ids"]), direct.ranking[:4].numpy())
    np.testing.assert_array_equal(from_wire(shown["channels"]), direct.maps[direct.ranking[:4]].numpy())
    jobs, panels = widget._runner.jobs_started, widget.panels
    # A click enlarges a channel, drawn in the browser: the map is not recomputed.
    widget.set_state({"channel": int(direct.ranking[2])})
    widget.wait(10)
    assert widget.channel == int(direct.ranking[2]) and widget.panels is panels
    assert widget._runner.jobs_started == jobs + 1  # only what the channel looks for is
    assert widget.featurevis["channel"] == int(direct.ranking[2])
    widget.set_state({"layer": "features.2", "n_channels": 64})
    widget.wait(10)
    assert from_wire(widget.panels[0]["channels"]).shape == (8, 16, 16)  # all 8 channels of features.2


def test_layer_widget_refuses_unknown_layers_and_restores_the_model_mode(model, x) -> None:
    from livexai.widgets import LayerWidget

    model.train()
    try:
        widget = LayerWidget(model, x)
        widget.wait(10)
        assert widget.layer == "features"  # the deepest map (its last ReLU), not the final 2x2 pool
        widget.set_state({"layer": "features.99"})
        assert "layer must be one of" in widget.error and widget.layer == "features"
        rng = random.Random(1)
        for _ in range(200):
            widget.set_state(
                {
                    "layer": rng.choice(["features.0", "features.2"]),
                    "method": rng.choice(["grad_cam", "grad_cam++"]),
                    "target": rng.randrange(5),
                }
            )
        explanation = widget.wait(20)
        assert (explanation.params["layer"], explanation.method, explanation.target) == (
            widget.layer,
            widget.method,
            widget.target,
        )
        assert model.training and all(module.training for module in model.modules())
    finally:
        model.eval()


def test_layer_widget_needs_a_spatial_layer() -> None:
    from livexai.widgets import LayerWidget

    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(ValueError, match="no layer whose output is a map over the image"):
        LayerWidget(flat, torch.rand(3, 8, 8))


# -- LimeWidget -----------------------------------------------------------------------------------------------
def test_lime_widget_matches_lime_called_directly(model, x) -> None:
    lime_module = pytest.importorskip("livexai.lime")
    from livexai.widgets import LimeWidget

    params = {
        "n_segments": 10,
        "n_samples": 300,
        "segmentation": "grid",
        "baseline": "mean",
        "kernel_width": 0.5,
    }
    widget = LimeWidget(model, x, labels=[f"c{i}" for i in range(5)], **params)
    explanation = widget.wait(30)
    assert widget.status == "idle", widget.error
    direct = lime_module.lime(model, x, **params)
    torch.testing.assert_close(explanation.attributions, direct.attributions)
    torch.testing.assert_close(explanation.weights, direct.weights)
    assert widget.panels[0]["signed"] is True
    np.testing.assert_array_equal(from_wire(widget.panels[0]["segments"]), direct.segments.numpy())

    widget.set_state({"n_segments": 20, "target": 1})
    explanation = widget.wait(30)
    direct = lime_module.lime(model, x, **{**params, "n_segments": 20}, target=1)
    torch.testing.assert_close(explanation.attributions, direct.attributions)


def test_lime_widget_streams_partial_results(model, x) -> None:
    pytest.importorskip("livexai.lime")
    from livexai.widgets import LimeWidget

    widget = LimeWidget(model, x, n_segments=8, n_samples=2000, chunk_size=100)
    statuses: list[str] = []
    widget.observe(
        lambda change: statuses.append(change["new"][0]["status"] if change["new"] else "-"), "panels"
    )
    widget.wait(60)
    assert statuses and statuses[-1] == "done"
    assert "partial" in statuses, statuses
    assert len(statuses) < 2000 // 100 + 2


def test_lime_widget_rapid_changes_and_core_errors(model, x) -> None:
    lime_module = pytest.importorskip("livexai.lime")
    from livexai.widgets import LimeWidget

    widget = LimeWidget(model, x, n_segments=8, n_samples=100)
    rng = random.Random(2)
    for _ in range(30):
        widget.set_state({"n_segments": rng.randint(4, 30), "kernel_width": rng.choice([0.1, 0.25, 1.0])})
    explanation = widget.wait(60)
    assert widget.status == "idle", widget.error
    final = {"n_segments": widget.n_segments, "kernel_width": widget.kernel_width}
    direct = lime_module.lime(model, x, n_samples=100, **final)
    torch.testing.assert_close(explanation.attributions, direct.attributions)
    np.testing.assert_array_equal(from_wire(widget.panels[0]["map"]), direct.attributions.numpy())

    widget.set_state({"n_segments": 300})  # allowed by the slider's range, but x has only 16 x 16 pixels
    widget.wait(60)
    assert widget.status == "error" and "n_segments" in widget.error, widget.error
    assert widget.explanation is explanation
    widget.set_state({"n_segments": 9})
    explanation = widget.wait(60)
    assert widget.status == "idle" and widget.error == ""
    direct = lime_module.lime(model, x, n_samples=100, n_segments=9, kernel_width=final["kernel_width"])
    torch.testing.assert_close(explanation.attributions, direct.attributions)


# -- ShapWidget -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def background() -> torch.Tensor:
    return torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def test_shap_widget_gradient_matches_gradient_shap(model, x, background) -> None:
    from livexai._features import subsample_indices
    from livexai.gradients import gradient_shap
    from livexai.widgets import ShapWidget

    widget = ShapWidget(model, x, background=background, method="gradient", n_samples=20, background_size=4)
    explanation = widget.wait(30)
    assert widget.status == "idle", widget.error
    direct = gradient_shap(model, x, background=background[subsample_indices(6, 4, 0)], n_samples=20)
    torch.testing.assert_close(explanation.attributions, direct.attributions)
    assert [c["name"] for c in widget.controls] == ["method", "n_samples", "background_size"]
    assert widget.controls[-1]["max"] == 6 and widget.title == "GradientSHAP"
    widget.set_state({"background_size": 7})
    assert "background_size must be between 1 and 6, got 7" in widget.error
    widget.set_state({"background_size": 2, "target": 0})
    explanation = widget.wait(30)
    torch.testing.assert_close(
        explanation.attributions,
        gradient_shap(
            model, x, background=background[subsample_indices(6, 2, 0)], n_samples=20, target=0
        ).attributions,
    )


def test_shap_widget_checks_the_background(model, x) -> None:
    from livexai.widgets import ShapWidget

    with pytest.raises(ValueError, match=r"expected \(B, 3, 16, 16\)"):
        ShapWidget(model, x, background=torch.rand(2, 3, 8, 8))
    with pytest.raises(TypeError, match="background must be a tensor"):
        ShapWidget(model, x, background=[1, 2])
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        ShapWidget(model, x, background=torch.rand(2, 3, 16, 16), kernel_width=1.0)


def test_shap_widget_kernel_matches_kernel_shap_and_switches_method(model, x, background) -> None:
    shap_module = pytest.importorskip("livexai.shap")
    from livexai.widgets import ShapWidget

    widget = ShapWidget(model, x, background=background, n_segments=8, n_samples=200, background_size=3)
    explanation = widget.wait(60)
    assert widget.status == "idle", widget.error
    direct = shap_module.kernel_shap(
        model, x, background=background, n_segments=8, n_samples=200, background_size=3
    )
    torch.testing.assert_close(explanation.attributions, direct.attributions)
    assert [c["name"] for c in widget.controls] == ["method", "n_segments", "n_samples", "background_size"]
    widget.set_state({"method": "gradient"})
    widget.wait(60)
    assert widget.explanation.method == "gradient_shap" and widget.title == "GradientSHAP"
    assert "n_segments" not in [c["name"] for c in widget.controls]


# -- Explorer -------------------------------------------------------------------------------------------------
def test_explorer_compares_four_methods(model, background) -> None:
    pytest.importorskip("livexai.lime")
    pytest.importorskip("livexai.shap")
    from livexai.metrics import rank_correlation, segment_means
    from livexai.widgets import Explorer

    images = background[:3]
    widget = Explorer(model, images, labels=[f"c{i}" for i in range(5)], n_segments=8, n_samples=100)
    results = widget.wait(120)
    assert widget.status == "idle", widget.error
    assert set(results) == {"lime", "kernel_shap", "gradient_shap", "grad_cam"}
    assert [p["key"] for p in widget.panels] == ["lime", "kernel_shap", "gradient_shap", "grad_cam"]
    assert all(p["status"] == "done" and p["map"] is not None for p in widget.panels)
    matrix = from_wire(widget.correlation)
    assert matrix.shape == (4, 4) and widget.correlation["names"][0] == "LIME"
    np.testing.assert_allclose(matrix, matrix.T)
    # every map averaged over LIME's superpixels first, so per-pixel maps are compared on the same footing
    segments = results["lime"].segments
    expected = rank_correlation(
        segment_means(results["lime"].attributions, segments),
        segment_means(results["grad_cam"].attributions, segments),
    )
    assert matrix[0, 3] == pytest.approx(expected, abs=1e-6)
    assert "same superpixels" in widget.correlation["caption"]
    assert len(widget.thumbnails) == 3 and widget.thumbnails[0]["shape"] == [16, 16, 3]
    # the same superpixels for LIME and KernelSHAP
    torch.testing.assert_close(results["lime"].segments, results["kernel_shap"].segments)

    first_image = widget.image
    widget.set_state({"target": 4})
    widget.wait(120)
    assert all(result.target == 4 for result in widget.explanation.values())
    widget.set_state({"selected": 2})  # a new image: its own top class again
    results = widget.wait(120)
    assert widget.target is None and widget.image != first_image
    top = int(model(images[2:3]).argmax())
    assert all(result.target == top for result in results.values())
    widget.set_state({"selected": 3})
    assert "selected must be between 0 and 2" in widget.error
    widget.wait(120)


def test_explorer_shows_the_new_image_even_when_a_newer_request_cancels_its_first_job(
    model, background
) -> None:
    """The picture of a newly selected image is posted by the first job; a newer request may cancel that job
    before the kernel applies its update, and the next job must then post the picture again."""
    import asyncio

    from livexai.widgets import Explorer
    from livexai.widgets._runner import Runner

    runner = Runner()

    async def main() -> Explorer:
        widget = Explorer(model, background[:3], n_segments=6, n_samples=60, runner=runner)
        widget.wait(120)
        widget.selected = 1
        for _ in range(10_000):  # the loop is blocked here: the first job's update waits in the outbox
            if runner._outbox:
                break
            time.sleep(0.001)
        widget.target = 2  # a newer request cancels that job before its update is applied
        widget.wait(120)
        return widget

    widget = asyncio.run(main())
    runner.shutdown()
    expected = Explorer(model, background[1:2], n_segments=6, n_samples=60, runner=runner)
    assert widget.image == expected.image
    assert widget.predictions == expected.predictions
    assert all(result.target == 2 for result in widget.explanation.values())


def test_a_widget_whose_result_cannot_be_applied_shows_the_error(model, x) -> None:
    widget = FakeWidget(model, x)
    widget.wait(10)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the result could not be applied")

    widget._finish = refuse  # type: ignore[method-assign]
    widget.n_segments = 5
    widget.wait(10)
    assert widget.status == "error" and "could not be applied" in widget.error


def test_explorer_shows_a_failing_method_and_keeps_the_others(background) -> None:
    from livexai.widgets import Explorer

    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))  # no spatial layer: Grad-CAM cannot run
    widget = Explorer(flat, background[:2], n_segments=6, n_samples=60)
    results = widget.wait(120)
    assert "grad_cam" not in results and "gradient_shap" in results
    failed = next(p for p in widget.panels if p["key"] == "grad_cam")
    assert failed["status"] == "error" and "spatial layer" in failed["note"]
    assert widget.status == "error" and "Grad-CAM" in widget.error
    matrix = from_wire(widget.correlation)
    assert np.isnan(matrix[3]).all()


def test_explorer_background_size_is_a_slider_that_recomputes_only_kernel_shap(model, background) -> None:
    from livexai import kernel_shap, lime, segment
    from livexai.widgets import Explorer
    from livexai.widgets.explorer import DEFAULT_BACKGROUND_SIZE

    images = background[:6]
    widget = Explorer(model, images, n_segments=8, n_samples=120)
    first = dict(widget.wait(120))
    assert widget.background_size == DEFAULT_BACKGROUND_SIZE
    assert "background_size" in [c["name"] for c in widget.controls]
    assert first["kernel_shap"].params["n_background"] == DEFAULT_BACKGROUND_SIZE
    # streamed side by side, each still equals the core function on the same superpixels
    segments = segment(widget._display, 8)
    common = {"segments": segments, "n_samples": 120, "seed": 0}
    torch.testing.assert_close(first["lime"].weights, lime(model, images[0], **common).weights)
    direct = kernel_shap(
        model, images[0], background=images, background_size=DEFAULT_BACKGROUND_SIZE, **common
    )
    torch.testing.assert_close(first["kernel_shap"].weights, direct.weights)

    widget.set_state({"background_size": 7})
    assert "background_size must be between 1 and 6, got 7" in widget.error
    widget.set_state({"background_size": 2})
    results = widget.wait(120)
    assert widget.status == "idle", widget.error
    assert results["kernel_shap"].params["n_background"] == 2
    assert all(
        results[m] is first[m] for m in ("lime", "gradient_shap", "grad_cam")
    )  # reused, not recomputed
    assert [p["status"] for p in widget.panels] == ["done"] * 4

    widget.n_samples = 100  # the superpixels stay; the one-pass methods are reused
    results = widget.wait(120)
    assert results["grad_cam"] is first["grad_cam"] and results["lime"] is not first["lime"]
    torch.testing.assert_close(results["lime"].segments, first["lime"].segments)
    before = dict(results)
    widget.refresh()  # called directly (say, after the model changed): nothing is reused
    results = widget.wait(120)
    assert all(results[m] is not before[m] for m in before)
    one = Explorer(model, images[:1], n_segments=8, n_samples=60)
    assert one.background_size == 1  # the default, capped at the background's size
    one.wait(120)


def test_explorer_paints_every_panel_before_any_is_final_but_the_one_pass_ones(model, background) -> None:
    """Grad-CAM and GradientSHAP reach the widget first; LIME and KernelSHAP both show a partial picture before
    either is final (they stream side by side), even with the runner's throttle."""
    from livexai.widgets import Explorer

    widget = Explorer(model, background[:4], n_segments=8, n_samples=400, background_size=2)
    widget.wait(120)
    seen: list[dict[str, str]] = []
    widget.observe(
        lambda change: seen.append({p["key"]: p["status"] for p in change["new"]}), names=["panels"]
    )
    widget.n_segments = 10
    widget.wait(120)
    order = []
    for statuses in seen:
        order += [
            (key, status)
            for key, status in statuses.items()
            if status != "computing" and (key, status) not in order
        ]
    assert order[:2] == [("grad_cam", "done"), ("gradient_shap", "done")]
    first_final = min(order.index((key, "done")) for key in ("lime", "kernel_shap"))
    assert max(order.index((key, "partial")) for key in ("lime", "kernel_shap")) < first_final


def test_lime_widget_keeps_a_tensor_baseline_as_custom(model, x) -> None:
    lime_module = pytest.importorskip("livexai.lime")
    from livexai.widgets import LimeWidget

    baseline = torch.full_like(x, 0.25)
    widget = LimeWidget(model, x, baseline=baseline, n_segments=6, n_samples=120, seed=3)
    explanation = widget.wait(30)
    assert widget.baseline == "custom" and "custom" in widget.controls[3]["choices"]
    direct = lime_module.lime(model, x, baseline=baseline, n_segments=6, n_samples=120, seed=3)
    torch.testing.assert_close(explanation.attributions, direct.attributions)
    widget.set_state({"baseline": "zero"})
    explanation = widget.wait(30)
    direct = lime_module.lime(model, x, baseline="zero", n_segments=6, n_samples=120, seed=3)
    torch.testing.assert_close(explanation.attributions, direct.attributions)
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        LimeWidget(model, x, background_size=3)
