"""Saliency, SmoothGrad, integrated gradients and GradientSHAP (livexai.gradients) against Captum and theory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import GradientShap, IntegratedGradients, NoiseTunnel, Saliency
from conftest import hook_count, randomise_batchnorm
from torch import nn

from livexai import gradients
from livexai._adapter import Cancelled, ModelAdapter
from livexai.gradients import gradient_shap, integrated_gradients, saliency


# -- models written for these tests ----------------------------------------------------------------------------
class SmallCNN(nn.Module):
    def __init__(self, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), activation(), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), activation(),
        )  # fmt: skip
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class Detaching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).detach()


class OutOfMemoryAbove(nn.Module):
    """Wraps a model and fails like a full GPU on batches larger than ``limit``."""

    def __init__(self, model: nn.Module, limit: int) -> None:
        super().__init__()
        self.model = model
        self.limit = limit
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.model(x)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


@pytest.fixture
def cnn() -> SmallCNN:
    torch.manual_seed(0)
    return randomise_batchnorm(SmallCNN(), affine=False).eval()


@pytest.fixture
def smooth_cnn() -> SmallCNN:
    torch.manual_seed(0)
    return randomise_batchnorm(SmallCNN(nn.Softplus), affine=False).eval()


@pytest.fixture
def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).eval()


@pytest.fixture
def image() -> torch.Tensor:
    return torch.randn(3, 12, 12, generator=torch.Generator().manual_seed(2))


# -- saliency and SmoothGrad ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", [0, 2])
def test_saliency_matches_captum(cnn: SmallCNN, image: torch.Tensor, target: int) -> None:
    ours = saliency(cnn, image, target=target)
    theirs = Saliency(cnn).attribute(image[None].clone().requires_grad_(), target=target, abs=True)[0]
    assert ours.method == "saliency" and ours.attributions.shape == (12, 12)
    torch.testing.assert_close(ours.params["per_channel"], theirs)
    torch.testing.assert_close(ours.attributions, theirs.amax(dim=0))  # Simonyan et al.: max over channels
    signed = saliency(cnn, image, target=target, abs=False)
    raw = Saliency(cnn).attribute(image[None].clone().requires_grad_(), target=target, abs=False)[0]
    torch.testing.assert_close(signed.attributions, raw.sum(dim=0))


def test_saliency_of_a_row_and_of_probabilities(mlp: nn.Module) -> None:
    row = torch.randn(6)
    ours = saliency(mlp, row, target=1, output="probs", abs=False)
    wrapped = nn.Sequential(mlp, nn.Softmax(dim=1))
    theirs = Saliency(wrapped).attribute(row[None].clone().requires_grad_(), target=1, abs=False)[0]
    assert ours.attributions.shape == (6,)
    torch.testing.assert_close(ours.attributions, theirs)


def test_smoothgrad_agrees_with_captum_noise_tunnel_in_distribution(
    cnn: SmallCNN, image: torch.Tensor
) -> None:
    n, noise = 200, 0.15
    ours = saliency(cnn, image, target=1, smooth_samples=n, noise=noise, seed=3)
    sigma = noise * float(image.max() - image.min())
    assert ours.method == "smoothgrad" and ours.params["sigma"] == pytest.approx(sigma)
    torch.manual_seed(0)
    tunnel = NoiseTunnel(Saliency(cnn))
    theirs = tunnel.attribute(
        image[None].clone().requires_grad_(), nt_type="smoothgrad", nt_samples=n, stdevs=sigma, target=1,
        nt_samples_batch_size=100,
    )[0]  # fmt: skip
    assert correlation(ours.params["per_channel"], theirs) > 0.95  # 0.97-0.98 over seeds
    assert correlation(ours.attributions, theirs.amax(dim=0)) > 0.95
    # Smoothing did something: the plain gradient is further away than the two estimates are from each other.
    plain = saliency(cnn, image, target=1).params["per_channel"]
    assert correlation(plain, theirs) < correlation(ours.params["per_channel"], theirs)


def test_smoothgrad_is_reproducible_and_independent_of_batch_size(cnn: SmallCNN, image: torch.Tensor) -> None:
    first = saliency(cnn, image, smooth_samples=21, seed=7)
    again = saliency(cnn, image, smooth_samples=21, seed=7, batch_size=4)
    other = saliency(cnn, image, smooth_samples=21, seed=8)
    torch.testing.assert_close(first.attributions, again.attributions)
    assert not torch.allclose(first.attributions, other.attributions)
    no_noise = saliency(cnn, image, smooth_samples=5, noise=0.0)
    torch.testing.assert_close(no_noise.attributions, saliency(cnn, image).attributions)


# -- integrated gradients ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_match_captum(cnn: SmallCNN, image: torch.Tensor, method: str) -> None:
    baseline, n = torch.full_like(image, -0.5), 24
    ours = integrated_gradients(cnn, image, baseline=baseline, target=3, n_steps=n, method=method)
    theirs, delta = IntegratedGradients(cnn).attribute(
        image[None],
        baselines=baseline[None],
        target=3,
        n_steps=n,
        method=method,
        return_convergence_delta=True,
    )
    theirs = theirs[0]
    if method == "riemann_trapezoid":
        # Captum weights its n trapezoid points (spaced 1/(n-1)) by 1/n, so its weights sum to (n-1)/n and its
        # attributions are (n-1)/n of the trapezoid rule's; ours use the rule's own weights 1/(n-1).
        theirs = theirs * n / (n - 1)
    else:
        assert ours.params["delta"] == pytest.approx(float(delta), abs=1e-4)
    assert ours.method == "integrated_gradients" and ours.attributions.shape == (12, 12)
    torch.testing.assert_close(ours.params["per_channel"], theirs, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.attributions, theirs.sum(dim=0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
@pytest.mark.parametrize("baseline", [None, 0.3, "tensor"])
def test_integrated_gradients_completeness(
    cnn: SmallCNN, image: torch.Tensor, baseline: object, method: str
) -> None:
    if baseline == "tensor":
        baseline = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    base = torch.zeros(1, 3, 12, 12) if baseline is None else baseline
    base = torch.full((1, 3, 12, 12), baseline) if isinstance(baseline, float) else base
    with torch.no_grad():
        gaps = cnn(image[None])[0] - cnn(base)[0]
        target = int(gaps.abs().argmax())  # the output that moves most: a gap well above float noise
        base_score = float(cnn(base)[0, target])
    result = integrated_gradients(cnn, image, baseline=baseline, target=target, n_steps=200, method=method)
    gap = float(gaps[target])
    assert result.base_value == pytest.approx(base_score, abs=1e-6)
    assert float(result.attributions.sum()) == pytest.approx(gap, rel=0.01)
    assert result.params["delta"] == pytest.approx(float(result.attributions.sum()) - gap, abs=1e-6)
    assert abs(result.params["delta"]) < 0.01 * abs(gap)


def test_integrated_gradients_on_a_row(mlp: nn.Module) -> None:
    row = torch.randn(6)
    result = integrated_gradients(mlp, row, target=0, n_steps=64)
    theirs = IntegratedGradients(mlp).attribute(row[None], target=0, n_steps=64)[0]
    torch.testing.assert_close(result.attributions, theirs, rtol=1e-4, atol=1e-6)
    assert abs(result.params["delta"]) < 1e-4


def test_integrated_gradients_bad_input(cnn: SmallCNN, image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"baseline has shape \(3, 5, 5\)"):
        integrated_gradients(cnn, image, baseline=torch.zeros(3, 5, 5))
    with pytest.raises(ValueError, match="method must be one of"):
        integrated_gradients(cnn, image, method="simpson")
    with pytest.raises(ValueError, match="n_steps must be at least 1"):
        integrated_gradients(cnn, image, n_steps=0)
    with pytest.raises(ValueError, match="at least 2"):
        integrated_gradients(cnn, image, n_steps=1, method="riemann_trapezoid")
    with pytest.raises(TypeError, match="baseline must be"):
        integrated_gradients(cnn, image, baseline="blur")


# -- GradientSHAP --------------------------------------------------------------------------------------------------
def test_gradient_shap_is_exact_for_a_linear_model() -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, background = torch.randn(5), torch.randn(1, 5)
    result = gradient_shap(model, x, background=background, target=2, n_samples=7)
    expected = (x - background[0]) * model.weight[2].detach()
    torch.testing.assert_close(result.attributions, expected)
    assert result.base_value == pytest.approx(float(model(background)[0, 2].detach()))
    assert abs(result.params["delta"]) < 1e-5


def test_gradient_shap_agrees_with_captum_in_distribution(smooth_cnn: SmallCNN, image: torch.Tensor) -> None:
    background = torch.randn(6, 3, 12, 12, generator=torch.Generator().manual_seed(9)) * 0.5
    n = 300
    ours = gradient_shap(smooth_cnn, image, background=background, target=1, n_samples=n, seed=1)
    torch.manual_seed(0)
    np.random.seed(0)
    theirs = GradientShap(smooth_cnn).attribute(image[None], baselines=background, target=1, n_samples=n)[0]
    assert ours.method == "gradient_shap" and ours.params["background_size"] == 6
    assert correlation(ours.params["per_channel"], theirs.detach()) > 0.99
    # Both estimate the same expectation, whose sum is f(x) - E[f(background)].
    with torch.no_grad():
        gap = float(smooth_cnn(image[None])[0, 1] - smooth_cnn(background)[:, 1].mean())
        base_value = float(smooth_cnn(background)[:, 1].mean())
    assert ours.base_value == pytest.approx(base_value, abs=1e-5)
    assert float(ours.attributions.sum()) == pytest.approx(gap, rel=0.2)  # sampling error: 4-13 % over seeds
    assert float(theirs.sum()) == pytest.approx(gap, rel=0.2)


def test_gradient_shap_noise_reproducibility_and_batching(smooth_cnn: SmallCNN, image: torch.Tensor) -> None:
    background = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(9))
    args = {"background": background, "n_samples": 19, "stdev": 0.1, "seed": 5}
    first = gradient_shap(smooth_cnn, image, **args)
    again = gradient_shap(smooth_cnn, image, **args, batch_size=3)
    torch.testing.assert_close(first.attributions, again.attributions)
    other = gradient_shap(smooth_cnn, image, **{**args, "seed": 6})
    assert not torch.allclose(first.attributions, other.attributions)
    one = gradient_shap(
        smooth_cnn, image, background=background[0], n_samples=3
    )  # a single (C, H, W) reference
    assert one.params["background_size"] == 1


def test_gradient_shap_bad_background(cnn: SmallCNN, image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"background has shape \(4, 3, 8, 8\); expected \(B, 3, 12, 12\)"):
        gradient_shap(cnn, image, background=torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match="background has shape"):
        gradient_shap(cnn, image, background=torch.zeros(0, 3, 12, 12))
    with pytest.raises(TypeError, match="background must be a tensor"):
        gradient_shap(cnn, image, background=[0.0])
    with pytest.raises(ValueError, match="stdev must be at least 0"):
        gradient_shap(cnn, image, background=torch.zeros(2, 3, 12, 12), stdev=-1.0)


# -- shared engine: memory, device hygiene, errors ----------------------------------------------------------------
def test_batch_size_halves_on_out_of_memory_and_is_remembered(cnn: SmallCNN, image: torch.Tensor) -> None:
    reference = integrated_gradients(cnn, image, n_steps=20)
    flaky = OutOfMemoryAbove(cnn, limit=5)
    result = integrated_gradients(flaky, image, n_steps=20)
    torch.testing.assert_close(result.attributions, reference.attributions, rtol=1e-5, atol=1e-6)
    gradient_sizes = [size for size in flaky.sizes if size != 1]  # size 1: f(x) and f(baseline)
    assert gradient_sizes[:3] == [20, 10, 5] and max(gradient_sizes[3:]) <= 5
    flaky.sizes.clear()
    integrated_gradients(flaky, image, n_steps=20)
    assert max(flaky.sizes) == 5  # the size that fitted is remembered for this model


def test_cancel_between_batches(cnn: SmallCNN, image: torch.Tensor) -> None:
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        integrated_gradients(cnn, image, n_steps=50, batch_size=5, check_cancel=check)
    assert len(calls) == 3


def test_model_left_bit_identical(cnn: SmallCNN, image: torch.Tensor) -> None:
    cnn.train()
    cnn.features[1].eval()
    cnn.fc.weight.requires_grad_(False)
    cnn.features[0].weight.grad = torch.ones_like(cnn.features[0].weight)
    state = {k: v.clone() for k, v in cnn.state_dict().items()}
    flags = [m.training for m in cnn.modules()]
    requires_grad = [p.requires_grad for p in cnn.parameters()]
    background = torch.randn(3, 3, 12, 12)
    saliency(cnn, image)
    saliency(cnn, image, smooth_samples=6)
    integrated_gradients(cnn, image, n_steps=8)
    gradient_shap(cnn, image, background=background, n_samples=8)
    assert [m.training for m in cnn.modules()] == flags
    assert all(
        torch.equal(v, cnn.state_dict()[k]) for k, v in state.items()
    )  # BatchNorm statistics untouched
    assert [p.requires_grad for p in cnn.parameters()] == requires_grad
    assert torch.equal(cnn.features[0].weight.grad, torch.ones_like(cnn.features[0].weight))
    assert all(p.grad is None for name, p in cnn.named_parameters() if name != "features.0.weight")
    assert hook_count(cnn) == 0


def test_input_is_not_modified_and_adapter_is_reused(cnn: SmallCNN, image: torch.Tensor) -> None:
    original = image.clone()
    adapter = ModelAdapter(cnn)
    result = integrated_gradients(adapter, image, n_steps=10)
    assert torch.equal(image, original) and not image.requires_grad
    assert result.n_evals == 1 + 10 + 1  # f(x), the path points, f(baseline)
    again = integrated_gradients(adapter, image, n_steps=10)
    assert again.n_evals == 10 + 1  # the adapter remembers f(x) for the same unmodified input
    assert adapter.n_evals == result.n_evals + again.n_evals


def test_model_without_autograd_path_is_rejected() -> None:
    with pytest.raises(ValueError, match="does not depend on its input through autograd"):
        saliency(Detaching(), torch.randn(4))


def test_target_that_ignores_the_input_gives_zeros() -> None:
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)
            self.bias = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([self.fc(x)[:, 0], self.bias.expand(x.shape[0])], dim=1)

    result = integrated_gradients(Constant(), torch.randn(3), target=1, n_steps=4)
    assert torch.equal(result.attributions, torch.zeros(3))


def test_noise_blocks_do_not_depend_on_batch_boundaries() -> None:
    like = torch.zeros(1)
    whole = gradients._normal((2, 3), 0, 20, 11, like)
    parts = torch.cat(
        [gradients._normal((2, 3), a, b, 11, like) for a, b in [(0, 3), (3, 9), (9, 17), (17, 20)]]
    )
    assert whole.shape == (20, 2, 3)
    torch.testing.assert_close(whole, parts)


def test_input_made_under_inference_mode(cnn: SmallCNN) -> None:
    with torch.inference_mode():
        x = torch.randn(3, 12, 12)
    result = saliency(cnn, x, target=0)
    expected = Saliency(cnn).attribute(x.clone()[None].requires_grad_(), target=0)[0].amax(dim=0)
    torch.testing.assert_close(result.attributions, expected)


def test_gradient_shap_remembers_the_background_mean_until_the_background_or_the_model_changes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.randn(4)
    background = torch.randn(6, 4)

    def run() -> tuple[float, int]:
        adapter = ModelAdapter(model)
        result = gradient_shap(adapter, x, background=background, n_samples=4, target=1)
        return result.base_value, adapter.n_evals

    first, evals_first = run()
    again, evals_again = run()
    assert again == first and evals_again == evals_first - 6  # the six background rows were not run again
    background[0] += 1.0  # an in-place change of the background...
    changed, evals_changed = run()
    assert evals_changed == evals_first and changed == pytest.approx(float(model(background)[:, 1].mean()))
    with torch.no_grad():
        model[2].bias += 0.5  # ...or of the model is seen
    shifted, evals_shifted = run()
    assert evals_shifted == evals_first and shifted == pytest.approx(changed + 0.5, abs=1e-5)
