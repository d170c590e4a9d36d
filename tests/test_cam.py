"""Grad-CAM / Grad-CAM++ (livexai.cam) against Captum and the published formulas; hook and model hygiene."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from conftest import Boom, SmallResNet, TinyViT, assert_unchanged, hook_count, snapshot
from torch import nn

from livexai._adapter import ModelAdapter
from livexai.cam import cam_maps, grad_cam, upsample
from livexai.layers import capture


# -- models written for these tests ----------------------------------------------------------------------------
class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class ExplodesAfterFeatures(SmallCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.features(x)
        raise Boom("mid-forward failure")


def captum_grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Captum's LayerGradCam + ReLU + bilinear upsampling to the input size, as (H, W)."""
    flags = [m.training for m in model.modules()]
    model.eval()
    try:
        low = LayerGradCam(model, layer).attribute(x[None], target=target, relu_attributions=True)
    finally:
        for module, flag in zip(model.modules(), flags, strict=True):
            module.training = flag
    return LayerAttribution.interpolate(low, tuple(x.shape[-2:]), interpolate_mode="bilinear")[0, 0].detach()


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


def grad_cam_plus_plus_reference(activation: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Grad-CAM++ weights in pytorch-grad-cam's form, written out in numpy for one image (C, h, w)."""
    g2 = grads**2
    g3 = g2 * grads
    sum_a = activation.sum(axis=(1, 2))
    alpha = g2 / (2 * g2 + sum_a[:, None, None] * g3 + 1e-7)
    alpha = np.where(grads != 0, alpha, 0)
    weights = (np.maximum(grads, 0) * alpha).sum(axis=(1, 2))
    return np.maximum((weights[:, None, None] * activation).sum(0), 0)


@pytest.fixture
def cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN()


# -- agreement with Captum -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["features.0", "features.3", "features.4", "features"])
@pytest.mark.parametrize("target", [0, 3])
def test_grad_cam_matches_captum_on_cnn(cnn: SmallCNN, image: torch.Tensor, layer: str, target: int) -> None:
    ours = grad_cam(cnn, image, layer=layer, target=target)
    theirs = captum_grad_cam(cnn, dict(cnn.named_modules())[layer], image, target)
    assert ours.method == "grad_cam" and ours.target == target
    assert ours.attributions.shape == (16, 16) and (ours.attributions >= 0).all()
    assert theirs.abs().max() > 0
    assert correlation(ours.attributions, theirs) > 0.999
    torch.testing.assert_close(ours.attributions, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layer", ["layer1", "layer1.0.bn2", "layer2.0.conv2", "layer2", "relu", "bn1"])
def test_grad_cam_matches_captum_on_resnet(resnet: SmallResNet, image: torch.Tensor, layer: str) -> None:
    # bn1 and layer1.0.bn2 are overwritten in place downstream (ReLU(inplace=True), out += shortcut): the
    # activation must be the layer's own output, not what the in-place operations left in its memory.
    ours = grad_cam(resnet, image, layer=layer)
    theirs = captum_grad_cam(resnet, dict(resnet.named_modules())[layer], image, ours.target)
    assert theirs.abs().max() > 0
    assert correlation(ours.attributions, theirs) > 0.999
    torch.testing.assert_close(ours.attributions, theirs, rtol=1e-4, atol=1e-6)


def test_grad_cam_of_probabilities_matches_captum_on_softmax(cnn: SmallCNN, image: torch.Tensor) -> None:
    ours = grad_cam(cnn, image, layer="features.3", target=2, output="probs")
    wrapped = nn.Sequential(cnn, nn.Softmax(dim=1))
    theirs = captum_grad_cam(wrapped, cnn.features[3], image, 2)
    assert ours.params["output"] == "probs"
    assert correlation(ours.attributions, theirs) > 0.999
    with torch.no_grad():
        expected = float(torch.softmax(cnn.eval()(image[None]), 1)[0, 2])
    assert ours.prediction == pytest.approx(expected, rel=1e-5)


def test_grad_cam_plus_plus_matches_the_formula(resnet: SmallResNet, image: torch.Tensor) -> None:
    resnet.eval()
    stored: list[torch.Tensor] = []
    handle = resnet.layer1.register_forward_hook(lambda m, i, o: stored.append(o) or o.clone())
    try:
        scores = resnet(image[None])
    finally:
        handle.remove()
    target = int(scores.argmax())
    (grads,) = torch.autograd.grad(scores[0, target], stored[0])
    low = grad_cam_plus_plus_reference(stored[0][0].detach().double().numpy(), grads[0].double().numpy())
    expected = F.interpolate(
        torch.tensor(low)[None, None], size=(16, 16), mode="bilinear", align_corners=False
    )
    resnet.zero_grad(set_to_none=True)

    ours = grad_cam(resnet, image, layer="layer1", plus_plus=True)
    assert ours.method == "grad_cam++"
    assert correlation(ours.attributions, expected[0, 0].float()) > 0.9999
    torch.testing.assert_close(ours.params["low_res"], torch.tensor(low).float(), rtol=1e-4, atol=1e-6)
    plain = grad_cam(resnet, image, layer="layer1")
    assert not torch.allclose(plain.attributions, ours.attributions)


def test_the_low_res_map_is_stored_and_cam_maps_gives_both_variants(
    cnn: SmallCNN, image: torch.Tensor
) -> None:
    result = grad_cam(cnn, image, layer="features.3")
    low = result.params["low_res"]
    assert low.shape == (8, 8) and result.params["layer"] == "features.3"
    assert result.params["layer_shape"] == (1, 12, 8, 8)
    torch.testing.assert_close(upsample(low, (16, 16)), result.attributions)
    plus = grad_cam(cnn, image, layer="features.3", plus_plus=True)
    with capture(cnn.features[3], for_grad=True) as outputs:
        scores = cnn(image[None].requires_grad_(True))
    (gradient,) = torch.autograd.grad(scores[0, result.target], outputs[-1])
    both = cam_maps(outputs[-1].detach(), gradient)
    torch.testing.assert_close(both["grad_cam"][0], low)
    torch.testing.assert_close(both["grad_cam++"][0], plus.params["low_res"])
    assert set(cam_maps(outputs[-1].detach(), gradient, ("grad_cam",))) == {"grad_cam"}


def test_layer_given_as_module_and_reused_module_calls(resnet: SmallResNet, image: torch.Tensor) -> None:
    by_name = grad_cam(resnet, image, layer="layer2")
    by_module = grad_cam(resnet, image, layer=resnet.layer2)
    assert torch.equal(by_name.attributions, by_module.attributions)
    first = grad_cam(resnet, image, layer="relu", call=0)  # the stem's ReLU, 16x16
    last = grad_cam(resnet, image, layer="relu")  # the last block's, 8x8, as Captum
    assert first.params["low_res"].shape == (16, 16) and last.params["low_res"].shape == (8, 8)


def test_token_layer_with_reshape_equals_the_map_it_rearranges() -> None:
    torch.manual_seed(3)
    model = TinyViT()
    x = torch.randn(3, 16, 16)
    on_tokens = grad_cam(model, x, layer="tokens", reshape=lambda t: t.transpose(1, 2).reshape(-1, 8, 4, 4))
    on_map = grad_cam(model, x, layer="patch")
    torch.testing.assert_close(on_tokens.attributions, on_map.attributions)
    assert on_map.attributions.abs().max() > 0
    automatic = grad_cam(model, x, layer="tokens")  # the 4 x 4 patch grid is found without a reshape
    torch.testing.assert_close(automatic.attributions, on_map.attributions)
    with pytest.raises(ValueError, match="expected \\(N, C, h, w\\)"):
        grad_cam(model, x, layer="tokens", reshape=lambda t: t)


# -- bad input -----------------------------------------------------------------------------------------------------
def test_bad_layers_and_inputs(resnet: SmallResNet, image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="close matches: 'layer2'"):
        grad_cam(resnet, image, layer="layr2")
    with pytest.raises(ValueError, match=r"'fc' outputs shape \(1, 5\).*not a map over the image"):
        grad_cam(resnet, image, layer="fc")
    with pytest.raises(ValueError, match=r"avgpool.*not a map over the image"):
        grad_cam(resnet, image, layer="avgpool")
    with pytest.raises(ValueError, match="explains an image"):
        grad_cam(nn.Sequential(nn.Linear(4, 2)), torch.randn(4), layer="0")
    with pytest.raises(TypeError, match="plus_plus"):
        grad_cam(resnet, image, layer="layer2", plus_plus="yes")
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(resnet, image, layer="layer2", target=9)
    assert hook_count(resnet) == 0


# -- the model is left exactly as it was -------------------------------------------------------------------------
def test_model_left_bit_identical(resnet: SmallResNet, image: torch.Tensor) -> None:
    resnet.train()
    resnet.layer2.eval()  # a partly frozen model: per-module flags must come back as they were
    resnet.conv1.weight.requires_grad_(False)
    resnet.fc.weight.grad = torch.full_like(resnet.fc.weight, 0.25)
    before = snapshot(resnet)
    grad_cam(resnet, image, layer="layer1")
    grad_cam(resnet, image, layer="bn1", plus_plus=True)
    assert_unchanged(before, snapshot(resnet))
    assert hook_count(resnet) == 0


def test_frozen_model_still_explained_and_flags_kept(cnn: SmallCNN, image: torch.Tensor) -> None:
    for parameter in cnn.parameters():
        parameter.requires_grad_(False)
    before = snapshot(cnn)
    result = grad_cam(cnn, image, layer="features.3", target=1)
    cnn.requires_grad_(True)
    expected = captum_grad_cam(cnn, cnn.features[3], image, 1)
    cnn.zero_grad(set_to_none=True)
    cnn.requires_grad_(False)
    assert_unchanged(before, snapshot(cnn))
    assert hook_count(cnn) == 0
    torch.testing.assert_close(result.attributions, expected, rtol=1e-4, atol=1e-6)


def test_model_that_raises_leaves_no_hooks(image: torch.Tensor) -> None:
    model = ExplodesAfterFeatures()
    with pytest.raises(Boom):
        grad_cam(model, image, layer="features.3")
    assert hook_count(model) == 0


def live_objects() -> tuple[int, int]:
    """(gc-tracked objects, live tensors): hooks, closures and kept activations all show up here."""
    gc.collect()
    objects = gc.get_objects()
    return len(objects), sum(issubclass(type(o), torch.Tensor) for o in objects)


@pytest.mark.usefixtures("single_thread")
def test_switching_layers_many_times_leaks_nothing(resnet: SmallResNet) -> None:
    x = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(5))
    names = ["layer1", "layer2", "bn1", "layer1.1.conv2", "relu"]

    def run(i: int) -> None:
        grad_cam(resnet, x, layer=names[i % len(names)], plus_plus=bool(i % 2))

    for i in range(100):  # warm-up: caches and allocator pools fill
        run(i)
    objects_before, tensors_before = live_objects()
    for i in range(100, 1000):
        run(i)
    objects_after, tensors_after = live_objects()
    assert hook_count(resnet) == 0
    assert tensors_after == tensors_before
    assert objects_after - objects_before < 100, "gc-tracked objects grew over 900 calls"
    # Python-level allocations over a further 200 calls (tracemalloc slows every call, so a shorter window).
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        for i in range(200):
            run(i)
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end - start < 64 * 1024, f"python memory grew by {end - start} bytes over 200 calls"
    assert hook_count(resnet) == 0
    assert all(p.grad is None for p in resnet.parameters())


def test_input_made_under_inference_mode(cnn: SmallCNN) -> None:
    with torch.inference_mode():
        x = torch.randn(3, 16, 16)
    result = grad_cam(cnn, x, layer="features.3", target=0)
    torch.testing.assert_close(result.attributions, captum_grad_cam(cnn, cnn.features[3], x.clone(), 0))


class TupleLayer(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x.mean()


class DetachesFeatures(SmallCNN):
    def __init__(self) -> None:
        super().__init__()
        self.split = TupleLayer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, _ = self.split(self.features(x))
        return self.fc(self.pool(features.detach()).flatten(1))


def test_layers_without_a_usable_gradient(image: torch.Tensor) -> None:
    model = DetachesFeatures()
    with pytest.raises(ValueError, match="returns tuple, not a tensor"):
        grad_cam(model, image, layer="split")
    with pytest.raises(ValueError, match=r"does not depend on layer 'features\.3' through autograd"):
        grad_cam(model, image, layer="features.3")
    assert hook_count(model) == 0


def test_one_forward_pass_serves_the_target_and_the_gradient(cnn: SmallCNN, image: torch.Tensor) -> None:
    calls = []
    handle = cnn.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        explanation = grad_cam(cnn, image, layer="features.3")
        assert len(calls) == 1 and explanation.n_evals == 1
        # A widget keeps one adapter with f(x) cached: switching layers then costs one pass each, not two.
        adapter = ModelAdapter(cnn)
        grad_cam(adapter, image, layer="features.3")
        grad_cam(adapter, image, layer="features.0")
        assert len(calls) == 3
    finally:
        handle.remove()


def test_the_pass_runs_in_the_layout_the_adapter_chose_and_gives_the_same_map(
    cnn: SmallCNN, image: torch.Tensor
) -> None:
    contiguous = grad_cam(cnn, image, layer="features.3", target=1)
    layouts = []
    handle = cnn.register_forward_pre_hook(
        lambda module, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    try:
        adapter = ModelAdapter(cnn)
        adapter._remember(("layout", tuple(image.shape), str(adapter.device), None), torch.channels_last)
        channels_last = grad_cam(adapter, image, layer="features.3", target=1)
    finally:
        handle.remove()
    assert layouts == [True]
    torch.testing.assert_close(channels_last.attributions, contiguous.attributions, rtol=1e-4, atol=1e-6)


def test_a_frozen_model_records_autograd_from_the_layer_on_only(
    resnet: SmallResNet, image: torch.Tensor
) -> None:
    expected = grad_cam(resnet, image, layer="layer2")
    flags = [p.requires_grad for p in resnet.parameters()]
    for parameter in resnet.parameters():
        parameter.requires_grad_(False)  # a frozen backbone: no graph unless the layer starts one
    try:
        frozen = grad_cam(resnet, image, layer="layer2")
    finally:
        for parameter, flag in zip(resnet.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)
    torch.testing.assert_close(frozen.attributions, expected.attributions)
    assert torch.is_grad_enabled()  # the grad mode the layer's hook switched on is restored


def test_each_explanation_gets_its_own_display_image(cnn: SmallCNN, image: torch.Tensor) -> None:
    first = grad_cam(cnn, image, layer="features.3")
    first.image.zero_()  # a caller drawing on one explanation's image...
    second = grad_cam(cnn, image, layer="features.3")
    assert second.image.max() > 0  # ...does not draw on the next one's (the derived image is remembered)
