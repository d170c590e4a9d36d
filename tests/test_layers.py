"""Layer discovery, activations and hook hygiene (livexai.layers)."""

from __future__ import annotations

import pytest
import torch
from conftest import Boom, SmallResNet, TinyViT, hook_count
from torch import nn

from livexai.layers import (
    Activations,
    activation_grid,
    activations,
    layer_info,
    layers,
    resolve_layer,
)


# -- models written for these tests ----------------------------------------------------------------------------
class HeadFirst(nn.Module):
    """Registers its head before its body, so registration order and forward order differ."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.unused = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.body(x)).flatten(1))


class Exploding(nn.Module):
    """Raises after its first layer ran, to check hooks are removed on errors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.conv(x)
        raise Boom("mid-forward failure")


# -- layers() and layer_info() ---------------------------------------------------------------------------------
def test_layers_without_input_are_registration_order() -> None:
    model = HeadFirst()
    assert layers(model) == [name for name, _ in model.named_modules() if name]
    assert layers(model)[:3] == ["head", "pool", "body"]


def test_layers_with_input_follow_forward_order_and_keep_spatial_outputs() -> None:
    model = HeadFirst()
    x = torch.randn(3, 8, 8)
    assert layers(model, x) == [
        "body",
        "body.0",
        "body.1",
    ]  # pool is (N, 4, 1, 1); head a vector; unused never ran
    names = [info.name for info in layer_info(model, x)]
    assert names == ["body", "body.0", "body.1", "pool", "head"]
    kinds = {info.name: info.kind for info in layer_info(model, x)}
    assert kinds == {
        "body": "spatial",
        "body.0": "spatial",
        "body.1": "spatial",
        "pool": "vector",
        "head": "vector",
    }


def test_resnet_layers_reused_relu_listed_once(resnet: SmallResNet, image: torch.Tensor) -> None:
    names = layers(resnet, image)
    assert len(names) == len(set(names))
    assert names[:4] == ["conv1", "bn1", "relu", "layer1"]
    assert (
        names.index("layer1.0.conv1")
        < names.index("layer1.0.bn2")
        < names.index("layer1.1")
        < names.index("layer2")
    )
    assert "avgpool" not in names and "fc" not in names
    info = {entry.name: entry for entry in layer_info(resnet, image)}
    assert info["relu"].calls == 1 + 2 * 3  # the stem once, twice in each of the three blocks
    assert info["layer2"].shape == (1, 16, 8, 8)
    assert info["layer1.0.shortcut"].shape == (1, 8, 16, 16)  # an empty Sequential is an identity ...
    assert info["layer1.0.shortcut"].passthrough and "layer1.0.shortcut" not in names  # ... and not offered
    assert not info["relu"].passthrough  # an in-place ReLU returns the tensor it was given, changed
    assert info["fc"].shape == (1, 5) and info["fc"].kind == "vector"


class WithIdentityShortcut(nn.Module):
    """A residual block whose shortcut is an ``nn.Identity``, as in torchvision's ResNets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.shortcut = nn.Identity()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x) + self.shortcut(x)))


def test_identity_shortcuts_are_reported_but_not_offered() -> None:
    model = WithIdentityShortcut()
    x = torch.rand(3, 8, 8)
    info = {entry.name: entry for entry in layer_info(model, x)}
    assert info["shortcut"].passthrough and info["shortcut"].kind == "spatial"
    assert not info["conv"].passthrough
    assert layers(model, x) == ["conv"]  # the shortcut's maps would repeat the input


def test_token_outputs_are_reported_as_tokens() -> None:
    model = TinyViT()
    x = torch.randn(3, 16, 16)
    info = {entry.name: entry for entry in layer_info(model, x)}
    assert info["patch"].kind == "spatial" and info["patch"].shape == (1, 8, 4, 4)
    assert info["tokens"].kind == "tokens" and info["tokens"].shape == (1, 16, 8)
    assert info["mixer.1"].kind == "tokens"
    assert info["tokens"].layout is not None and info["tokens"].layout.grid == (4, 4)  # a 4 x 4 patch grid
    assert layers(model, x) == ["patch", "tokens", "mixer", "mixer.0", "mixer.1"]
    assert layers(model, x, kinds=("spatial",)) == ["patch"]


def test_layers_on_tabular_model_has_no_spatial_layers() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert layers(model, torch.randn(4)) == []
    assert [e.kind for e in layer_info(model, torch.randn(4))] == ["vector"] * 3


def test_model_that_raises_leaves_no_hooks() -> None:
    model = Exploding()
    with pytest.raises(Boom):
        layer_info(model, torch.randn(3, 8, 8))
    with pytest.raises(Boom):
        activations(model, torch.randn(3, 8, 8), layer="conv")
    assert hook_count(model) == 0


def test_discovery_leaves_model_untouched(resnet: SmallResNet, image: torch.Tensor) -> None:
    resnet.train()
    resnet.layer1[0].eval()
    flags = [m.training for m in resnet.modules()]
    state = {k: v.clone() for k, v in resnet.state_dict().items()}
    layers(resnet, image)
    layer_info(resnet, image)
    activations(resnet, image, layer="layer1")
    assert [m.training for m in resnet.modules()] == flags
    assert all(torch.equal(state[k], v) for k, v in resnet.state_dict().items())  # BN stats not updated
    assert all(p.grad is None for p in resnet.parameters())
    assert hook_count(resnet) == 0


# -- resolving a layer -------------------------------------------------------------------------------------------
def test_unknown_layer_lists_close_matches(resnet: SmallResNet) -> None:
    with pytest.raises(ValueError, match=r"unknown layer 'layer1\.0\.conv'.*'layer1\.0\.conv1'"):
        resolve_layer(resnet, "layer1.0.conv")
    with pytest.raises(ValueError, match=r"unknown layer 'zzz'.*some names"):
        resolve_layer(resnet, "zzz")


def test_layer_given_as_module(resnet: SmallResNet) -> None:
    assert resolve_layer(resnet, resnet.layer2) == ("layer2", resnet.layer2)
    assert resolve_layer(resnet, resnet.layer1[0].relu) == ("relu", resnet.relu)
    with pytest.raises(ValueError, match="not a submodule"):
        resolve_layer(resnet, nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match="layer must be"):
        resolve_layer(resnet, 3)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        layers(lambda x: x)


def test_layer_given_as_module_follows_a_rebuilt_model() -> None:
    """The name found for a module is remembered, but checked again: moved elsewhere, it is found under its new
    name; taken out, it is refused."""
    block = nn.Conv2d(3, 4, 3)
    model = nn.Sequential(nn.Identity(), block)
    assert resolve_layer(model, block) == ("1", block)
    model = nn.Sequential(nn.Sequential(block), nn.ReLU())
    assert resolve_layer(model, block) == ("0.0", block)
    model[0] = nn.Identity()
    with pytest.raises(ValueError, match="not a submodule"):
        resolve_layer(model, block)


# -- activations -------------------------------------------------------------------------------------------------
def test_activations_match_a_direct_forward(resnet: SmallResNet, image: torch.Tensor) -> None:
    result = activations(resnet, image, layer="layer1", top_k=4)
    resnet.eval()
    with torch.no_grad():
        stem = resnet.relu(resnet.bn1(resnet.conv1(image[None])))
        expected = resnet.layer1(stem)[0]
    assert isinstance(result, Activations)
    assert result.layer == "layer1" and result.top_k == 4
    assert result.maps.dtype == torch.float32 and result.maps.shape == (8, 16, 16)
    torch.testing.assert_close(result.maps, expected)
    means = expected.mean(dim=(1, 2))
    assert torch.equal(result.ranking, torch.argsort(means, descending=True))
    assert means[result.ranking].diff().le(0).all()


def test_activations_of_vector_and_token_layers() -> None:
    model = TinyViT()
    x = torch.randn(3, 16, 16)
    assert activations(model, x, layer="head").maps.shape == (5, 1, 1)
    grid = activations(model, x, layer="tokens", reshape=lambda t: t.transpose(1, 2).reshape(-1, 8, 4, 4))
    torch.testing.assert_close(grid.maps, activations(model, x, layer="patch").maps)
    torch.testing.assert_close(activations(model, x, layer="tokens").maps, grid.maps)  # read by its layout


def test_activations_of_reused_module_pick_a_call(resnet: SmallResNet, image: torch.Tensor) -> None:
    first = activations(resnet, image, layer="relu", call=0)
    last = activations(resnet, image, layer="relu")
    assert first.maps.shape == (8, 16, 16) and last.maps.shape == (16, 8, 8)
    with pytest.raises(ValueError, match="out of range"):
        activations(resnet, image, layer="relu", call=7)


def test_activation_grid_layout() -> None:
    maps = torch.stack([torch.full((3, 2), float(c)) for c in range(5)])  # constant channels, means 0..4
    maps[:, 0, 0] = -1.0  # one dark pixel per channel
    grid = activation_grid(maps, top_k=5, ncols=2, pad=1, pad_value=0.5)
    assert grid.shape == (3 * 3 + 2, 2 * 2 + 1)
    # Channel 4 (largest mean) comes first, min-max scaled: 0 at the dark pixel, 1 elsewhere.
    expected = torch.ones(3, 2)
    expected[0, 0] = 0.0
    torch.testing.assert_close(grid[:3, :2], expected)
    assert (grid[3, :] == 0.5).all() and (grid[:, 2] == 0.5).all()
    assert (grid[8:, 3:] == 0.5).all()  # the sixth tile of the 3x2 grid is empty
    assert grid.min() >= 0 and grid.max() <= 1


def test_activation_grid_from_activations_uses_its_ranking(resnet: SmallResNet, image: torch.Tensor) -> None:
    result = activations(resnet, image, layer="layer2")
    grid = result.grid(top_k=4, pad=0)
    assert grid.shape == (16, 16)
    top = result.maps[result.ranking[0]]
    torch.testing.assert_close(grid[:8, :8], (top - top.min()) / (top.max() - top.min()))
    assert activation_grid(torch.zeros(2, 4, 4), top_k=2).eq(0).all()  # constant channels: no NaN
    with pytest.raises(TypeError, match="Activations or a tensor"):
        activation_grid(torch.zeros(4, 4))


def test_capture_ignores_forward_passes_from_other_threads() -> None:
    import threading

    from livexai.layers import capture

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with capture(model[0]) as outputs:
        other = threading.Thread(target=lambda: model(torch.ones(5, 3)))
        other.start()
        other.join()
        assert outputs == []  # a background widget must not see the kernel's forward passes, or vice versa
        model(torch.ones(2, 3))
    assert len(outputs) == 1 and outputs[0].shape == (2, 4)
