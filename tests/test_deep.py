"""DeepLIFT and DeepSHAP: exact summation on the architectures hook-based implementations break on, agreement
with Captum where Captum is right, closed forms, and clear failures."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import livexai
from livexai._deep_rules import TapeMismatch

captum_attr = pytest.importorskip("captum.attr")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the architectures of the issue trackers ---------------------------------------------------------------------
class FunctionalNet(nn.Module):
    """shap#3938's MNIST model: functional relu and max pooling, softmax head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 10, 5), nn.Conv2d(10, 20, 5)
        self.fc1, self.fc2 = nn.Linear(320, 50), nn.Linear(50, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(x.view(-1, 320)))
        return F.softmax(self.fc2(x), dim=1)


class ReusedReLUNet(nn.Module):
    """One in-place ReLU module used three times (torchvision's ResNets reuse ``self.relu``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        return self.fc(self.relu(x.mean(dim=(2, 3)) - 0.1))


class ResidualNet(nn.Module):
    """A residual block with batch norm (eval) and ``out += identity`` before a shared ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, 3)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-0.2, 0.2, generator=seeded(5))
            bn.running_var.uniform_(0.5, 1.5, generator=seeded(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.relu(self.stem(x))
        out = self.relu(self.bn1(self.conv1(identity)))
        out = self.bn2(self.conv2(out))
        out += identity
        out = self.relu(out)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class FreshModulesNet(nn.Module):
    """Builds its activation modules inside ``forward`` (captum#1082)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 6, 3), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.ReLU()(self.conv(x))
        x = nn.MaxPool2d(2)(x)
        return self.fc(nn.Tanh()(x.amax(dim=(2, 3))))


class HeadNet(nn.Module):
    """A small MLP ending in one of several non-linear heads."""

    def __init__(self, head: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(6, 16), nn.Linear(16, 4)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.l2(torch.sigmoid(self.l1(x))))


class GatedNet(nn.Module):
    """A squeeze-and-excitation gate (a product of two input-dependent tensors), GELU, SiLU, group norm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.squeeze, self.excite = nn.Linear(8, 4), nn.Linear(4, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm(self.conv(x)))
        gate = torch.sigmoid(self.excite(F.silu(self.squeeze(x.mean(dim=(2, 3))))))
        x = x * gate[:, :, None, None]
        return self.fc(x.amax(dim=(2, 3)) / (1 + x.std(dim=(2, 3))))


class AttentionNet(nn.Module):
    """Token layout: layer norm, scaled-dot-product attention, a softmax-weighted pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.qkv = nn.Linear(8, 24)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, 1, T, 8): one "channel" of T tokens
        q, k, v = self.qkv(self.norm(x[:, 0])).chunk(3, dim=-1)
        attended = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        eager = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1) @ v
        return self.fc((attended + eager).mean(dim=1))


def image_model(model: nn.Module, channels: int = 3) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    size = 28 if channels == 1 else 12
    x = torch.randn(channels, size, size, generator=seeded(1))
    background = torch.randn(5, channels, size, size, generator=seeded(2))
    return model, x, background


def cases() -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    row = torch.randn(6, generator=seeded(3))
    rows = torch.randn(7, 6, generator=seeded(4))
    tokens = torch.randn(1, 5, 8, generator=seeded(7))
    return {
        "functional relu + max_pool2d (shap#3938)": image_model(FunctionalNet(), channels=1),
        "reused in-place ReLU module": image_model(ReusedReLUNet()),
        "residual block, out += identity": image_model(ResidualNet()),
        "modules created in forward": image_model(FreshModulesNet()),
        "gate, GELU, SiLU, group norm, std": image_model(GatedNet()),
        "resnet18-shaped": image_model(livexai.models.resnet18_like(num_classes=4)),
        "sigmoid head": (HeadNet(torch.sigmoid), row, rows),
        "tanh head": (HeadNet(torch.tanh), row, rows),
        "gelu head": (HeadNet(F.gelu), row, rows),
        "silu head": (HeadNet(nn.SiLU()), row, rows),
        "softmax head": (HeadNet(nn.Softmax(dim=1)), row, rows),
        "log_softmax head": (HeadNet(lambda t: F.log_softmax(t, dim=-1)), row, rows),
        "layer norm + attention (tokens)": (
            AttentionNet(),
            tokens,
            torch.randn(4, 1, 5, 8, generator=seeded(8)),
        ),
    }


CASES = cases()


def gap_allowed(explanation: livexai.Explanation) -> float:
    return 1e-4 * (1 + abs(explanation.prediction))


@pytest.mark.parametrize("name", list(CASES))
def test_deep_shap_sums_to_the_output_difference(name: str) -> None:
    model, x, background = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no operation may go without a rule
        explanation = livexai.deep_shap(model.eval(), x, background=background)
    total = float(explanation.params["per_channel"].sum())
    reference_mean = float(model(background).detach()[:, explanation.target].mean())
    assert explanation.base_value == pytest.approx(reference_mean, abs=1e-5)
    assert abs(total - (explanation.prediction - reference_mean)) <= gap_allowed(explanation)
    assert abs(explanation.params["delta"]) <= gap_allowed(explanation)
    assert explanation.params["unsupported"] == []
    assert bool(torch.isfinite(explanation.attributions).all())
    # not trivially true: the output difference is well above the gap allowed, so the attributions carry it
    assert abs(explanation.prediction - reference_mean) > 5 * gap_allowed(explanation)


@pytest.mark.parametrize(
    "name", ["reused in-place ReLU module", "residual block, out += identity", "softmax head"]
)
def test_deeplift_sums_to_the_difference_from_its_baseline(name: str) -> None:
    model, x, _ = CASES[name]
    explanation = livexai.deeplift(model.eval(), x, baseline=0.1)
    reference_score = float(model(torch.full_like(x, 0.1)[None]).detach()[0, explanation.target])
    assert explanation.base_value == pytest.approx(reference_score, abs=1e-5)
    assert abs(explanation.params["delta"]) <= gap_allowed(explanation)


# -- agreement with Captum where Captum is right ------------------------------------------------------------------
class CaptumFriendlyNet(nn.Module):
    """Every non-linearity a module used once, none adjacent to another (Captum's hooks give stale gradients for
    adjacent ones, captum#1104), non-overlapping max pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()
        self.conv2, self.pool = nn.Conv2d(6, 6, 3, padding=1), nn.MaxPool2d(2)
        self.conv3, self.tanh = nn.Conv2d(6, 6, 1), nn.Tanh()
        self.fc1, self.sigmoid, self.fc2 = nn.Linear(6 * 6 * 6, 10), nn.Sigmoid(), nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv2(self.relu(self.conv1(x))))
        x = self.tanh(self.conv3(x))
        return self.fc2(self.sigmoid(self.fc1(x.flatten(1))))


def test_deeplift_equals_captum_on_a_model_captum_handles() -> None:
    torch.manual_seed(0)
    model = CaptumFriendlyNet().eval()
    x = torch.randn(3, 12, 12, generator=seeded(1))
    baseline = torch.randn(3, 12, 12, generator=seeded(2)) * 0.3
    ours = livexai.deeplift(model, x, baseline=baseline, target=1)
    theirs, their_delta = captum_attr.DeepLift(model).attribute(
        x[None], baselines=baseline[None], target=1, return_convergence_delta=True
    )
    assert abs(float(their_delta)) < 1e-5  # Captum is right on this model
    torch.testing.assert_close(ours.params["per_channel"], theirs[0].detach(), atol=1e-5, rtol=1e-4)


def test_deep_shap_equals_captum_deep_lift_shap() -> None:
    torch.manual_seed(0)
    model = CaptumFriendlyNet().eval()
    x = torch.randn(3, 12, 12, generator=seeded(1))
    background = torch.randn(6, 3, 12, 12, generator=seeded(2))
    ours = livexai.deep_shap(model, x, background=background, target=2)
    theirs = captum_attr.DeepLiftShap(model).attribute(x[None], baselines=background, target=2)[0]
    torch.testing.assert_close(ours.params["per_channel"], theirs.detach(), atol=1e-5, rtol=1e-4)


# -- closed forms -----------------------------------------------------------------------------------------------
def test_deep_shap_of_a_linear_model_is_its_exact_shapley_values() -> None:
    linear = nn.Linear(5, 2)
    x = torch.randn(5, generator=seeded(1))
    background = torch.randn(9, 5, generator=seeded(2))
    explanation = livexai.deep_shap(linear, x, background=background, target=1)
    # Shapley values of a linear model against a background: w_i (x_i - E[b_i]).
    exact = linear.weight[1].detach() * (x - background.mean(dim=0))
    torch.testing.assert_close(explanation.attributions, exact, atol=1e-6, rtol=1e-5)


def test_deeplift_of_one_relu_is_the_rescale_rule_in_closed_form() -> None:
    weights, bias = torch.tensor([[1.5, -2.0, 0.5]]), torch.tensor([0.2])
    model = nn.Sequential(nn.Linear(3, 1), nn.ReLU())
    with torch.no_grad():
        model[0].weight.copy_(weights)
        model[0].bias.copy_(bias)
    x, r = torch.tensor([1.0, 0.3, 0.4]), torch.tensor([-0.5, 0.2, 1.0])
    z, z_ref = float(weights[0] @ x + bias), float(weights[0] @ r + bias)
    expected = weights[0] * (x - r) * (max(z, 0) - max(z_ref, 0)) / (z - z_ref)
    explanation = livexai.deeplift(model, x, baseline=r, target=0)
    torch.testing.assert_close(explanation.attributions, expected, atol=1e-6, rtol=1e-5)
    assert explanation.base_value == pytest.approx(max(z_ref, 0), abs=1e-6)


def test_two_features_of_one_relu_match_their_shapley_values_when_both_cross_zero_together() -> None:
    # f(x) = relu(x1 + x2) from (-1, -1) to (1, 1): symmetric, so Shapley gives each 1; so does DeepLIFT.
    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    explanation = livexai.deeplift(model, torch.ones(2), baseline=-1.0, target=0)
    torch.testing.assert_close(explanation.attributions, torch.ones(2))


# -- what hook-based implementations get wrong, and failures that must be clear -------------------------------------
def test_overlapping_max_pooling_still_sums_exactly() -> None:
    # Captum's unpooling overwrites overlapping windows; the max rule here accumulates them.
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(3, stride=2), nn.Flatten(), nn.LazyLinear(2)
    )
    x = torch.randn(3, 13, 13, generator=seeded(1))
    model(x[None])
    explanation = livexai.deeplift(model.eval(), x, baseline="blur")
    assert abs(explanation.params["delta"]) <= gap_allowed(explanation)


def test_an_operation_without_a_rule_is_named_in_a_warning_and_in_delta() -> None:
    class CumulativeProduct(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumprod(torch.sigmoid(x), dim=1)[:, -2:]

    x = torch.randn(6, generator=seeded(1))
    with pytest.warns(UserWarning, match=r"no DeepLIFT rule for cumprod.*params\['delta'\]"):
        explanation = livexai.deeplift(CumulativeProduct(), x, baseline=0.5)
    assert explanation.params["unsupported"] == ["cumprod"]


def test_input_dependent_control_flow_is_refused_clearly() -> None:
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if float(x.sum()) > 0:
                return torch.relu(x)[:, :2]
            return torch.sigmoid(torch.tanh(x))[:, :2]

    with pytest.raises(TapeMismatch, match="control flow depends on its input"):
        livexai.deeplift(Branchy(), torch.ones(4), baseline=-1.0)


def test_torchscript_is_refused_with_the_reason() -> None:
    scripted = torch.jit.script(nn.Sequential(nn.Linear(3, 2), nn.ReLU()))
    with pytest.raises(TypeError, match="TorchScript"):
        livexai.deeplift(scripted, torch.ones(3))


def test_background_size_draws_a_seeded_subset() -> None:
    model, x, background = CASES["reused in-place ReLU module"]
    first = livexai.deep_shap(model, x, background=background, background_size=2, seed=3)
    again = livexai.deep_shap(model, x, background=background, background_size=2, seed=3)
    other = livexai.deep_shap(model, x, background=background, background_size=2, seed=4)
    assert first.params["background_size"] == 2
    torch.testing.assert_close(first.attributions, again.attributions)
    assert not torch.allclose(first.attributions, other.attributions)


def test_channels_last_model_and_probabilities_still_sum() -> None:
    model, x, background = CASES["residual block, out += identity"]
    model = model.to(memory_format=torch.channels_last)
    explanation = livexai.deep_shap(model, x, background=background, output="probs")
    assert abs(explanation.params["delta"]) <= gap_allowed(explanation)
    assert 0 <= explanation.prediction <= 1


# -- in the widget -----------------------------------------------------------------------------------------------
def test_shap_widget_deep_matches_deep_shap_on_the_rows_the_slider_keeps() -> None:
    from livexai._features import subsample_indices
    from livexai.widgets import ShapWidget

    model, x, background = CASES["reused in-place ReLU module"]
    widget = ShapWidget(model, x, background=background, method="deep", background_size=3)
    try:
        explanation = widget.wait(30)
        assert widget.status == "idle", widget.error
        assert widget.title == "DeepSHAP"
        assert [c["name"] for c in widget.controls] == ["method", "background_size"]  # nothing to sample
        kept = background[subsample_indices(5, 3, 0)]
        torch.testing.assert_close(
            explanation.attributions, livexai.deep_shap(model, x, background=kept).attributions
        )
        assert "gap" in widget.panels[0]["note"]
        widget.set_state({"background_size": 5})
        widened = widget.wait(30)
        torch.testing.assert_close(
            widened.attributions, livexai.deep_shap(model, x, background=background).attributions
        )
    finally:
        widget.close()


def test_a_tensor_changed_in_place_after_it_was_recorded_is_still_paired_right() -> None:
    class Overwrites(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden = self.linear(x)
            gate = torch.sigmoid(hidden)  # records `hidden` by reference ...
            hidden.mul_(2.0)  # ... which the model then overwrites
            return hidden * gate

    model = Overwrites()
    x = torch.randn(4, generator=seeded(1))
    explanation = livexai.deeplift(model, x, baseline=-0.5)
    assert abs(explanation.params["delta"]) <= gap_allowed(explanation)


def test_shap_widget_sanity_check_randomises_a_copy_and_deep_shap_degrades() -> None:
    from livexai.sanity import sanity_check
    from livexai.widgets import ShapWidget

    model = livexai.models.shapes_cnn()
    images = livexai.datasets.shapes(6, seed=1).images
    widget = ShapWidget(model, images[0], background=images[1:], method="deep", background_size=3)
    try:
        widget.wait(60)
        assert widget.panels[0]["sanity"] is True
        widget.sanity_check()
        widget.wait(60)
        report = widget.sanity_report
        kept = widget._kept_background(3)
        expected = sanity_check(model, images[0], "deep_shap", background=kept, output="logits")
        assert report is not None and report.layers == expected.layers
        torch.testing.assert_close(torch.tensor(report.similarity), torch.tensor(expected.similarity))
        assert report.similarity[-1] < report.similarity[0]  # the map changes as the model is randomised
    finally:
        widget.close()
