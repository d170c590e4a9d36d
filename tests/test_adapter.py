"""The model adapter: batching, output spaces, caching, and the user's model left exactly as it was."""

from __future__ import annotations

import pytest
import torch
from conftest import CountingModel, assert_unchanged, snapshot
from torch import nn

from livexai._adapter import Cancelled, ModelAdapter, check_finite, model_lock
from livexai._call import prepare


def small_cnn(n_classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, n_classes),
    )


def test_evaluate_matches_plain_forward_and_restores_mixed_training_flags() -> None:
    model = small_cnn()
    model.train()
    model[1].eval()  # frozen batch norm inside a training model: must come back exactly like this
    before = snapshot(model)
    inputs = torch.rand(300, 3, 16, 16)
    adapter = ModelAdapter(model)
    scores = adapter.evaluate(300, lambda a, b: inputs[a:b], input_shape=(3, 16, 16))
    with model_lock(model).hold(model), torch.no_grad():
        expected = model(inputs)
    assert torch.allclose(scores, expected, atol=1e-5)
    assert adapter.n_evals == 300
    assert_unchanged(before, snapshot(model))


def test_one_training_module_deep_inside_an_eval_model_is_switched_and_restored() -> None:
    model = small_cnn().eval()
    model = nn.Sequential(nn.Sequential(model)).eval()
    model[0][0][3].train()  # a dropout left in training mode two levels down: its samples would be random
    before = snapshot(model)
    with model_lock(model).hold(model):
        assert not any(module.training for module in model.modules())
    assert_unchanged(before, snapshot(model))
    assert model[0][0][3].training and not model.training


class Timed(nn.Module):
    """A model whose time is set by the test: a cost per call, per input, and a factor for channels-last input."""

    def __init__(self, per_call: float, per_input: float, channels_last_factor: float = 1.0) -> None:
        super().__init__()
        self.per_call, self.per_input, self.factor = per_call, per_input, channels_last_factor
        self.sizes: list[int] = []
        self.channels_last: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time as clock

        flagged = not x.is_contiguous()
        self.sizes.append(x.shape[0])
        self.channels_last.append(flagged)
        clock.sleep((self.per_call + self.per_input * x.shape[0]) * (self.factor if flagged else 1.0))
        return x.reshape(x.shape[0], -1)[:, :3]


def test_cpu_batch_size_is_tuned_once_then_remembered() -> None:
    model = Timed(per_call=0.003, per_input=0.0001)  # bigger batches are always cheaper per input here
    inputs = torch.rand(1000, 3, 4, 4)
    scores = ModelAdapter(model).evaluate(1000, lambda a, b: inputs[a:b], input_shape=(3, 4, 4))
    torch.testing.assert_close(scores, inputs.reshape(1000, -1)[:, :3], rtol=0, atol=0)
    # layout probe (2 x 2 batches of 8, discarded); an untimed round of sizes, two timed rounds; the best size
    assert model.sizes[:4] == [8, 8, 8, 8] and model.channels_last[:4] == [False, True, False, True]
    assert model.sizes[4:19] == [8, 16, 32, 64, 128] * 3
    assert set(model.sizes[19:-1]) == {128}
    assert not any(model.channels_last[4:])  # no gain from channels-last: every real batch stays contiguous
    model.sizes.clear()
    ModelAdapter(model).evaluate(300, lambda a, b: inputs[a:b], input_shape=(3, 4, 4))
    assert model.sizes == [128, 128, 44]  # remembered for the model: no probe, no trials


@pytest.mark.parametrize("purpose", ["gradient", "deeplift"])
def test_passes_with_gradients_try_no_batch_above_32(purpose: str) -> None:
    """Their activations are kept for the backward pass: a trial batch of 128 would be real work run slowly."""
    model = Timed(per_call=0.003, per_input=0.0001)  # bigger batches would be cheaper per input here
    inputs = torch.rand(600, 3, 4, 4)

    def step(start: int, stop: int, layout: torch.memory_format) -> None:
        model(inputs[start:stop].contiguous(memory_format=layout))

    ModelAdapter(model).run_batched(600, step, input_shape=(3, 4, 4), purpose=purpose)
    assert model.sizes[:9] == [8, 16, 32] * 3 and set(model.sizes[9:-1]) == {32}


def test_tuning_trials_carry_over_to_the_next_call_on_the_same_model() -> None:
    model = Timed(per_call=0.003, per_input=0.0001)  # best at 128
    inputs = torch.rand(300, 3, 4, 4)
    for _ in range(4):  # each call is shorter than the 15 trial batches (744 inputs)
        ModelAdapter(model).evaluate(300, lambda a, b: inputs[a:b], input_shape=(3, 4, 4))
    after_probe = model.sizes[4:]
    # one untimed and two timed batches of 8 in all: no call started the trials over
    assert after_probe.count(8) == 3
    assert after_probe[-3:] == [128, 128, 44]


def test_channels_last_is_chosen_when_faster_and_used_for_every_real_batch() -> None:
    model = Timed(per_call=0.002, per_input=0.0001, channels_last_factor=0.5)
    inputs = torch.rand(400, 3, 4, 4)
    scores = ModelAdapter(model).evaluate(400, lambda a, b: inputs[a:b], input_shape=(3, 4, 4))
    torch.testing.assert_close(scores, inputs.reshape(400, -1)[:, :3], rtol=0, atol=0)
    assert all(model.channels_last[4:])


@pytest.mark.parametrize("error", [RuntimeError, ValueError])
def test_a_model_that_rejects_channels_last_keeps_contiguous_batches(error: type) -> None:
    linear = nn.Linear(48, 2)

    def model(batch: torch.Tensor) -> torch.Tensor:
        if not batch.is_contiguous():
            raise error("this model only takes contiguous input")  # as .view() does, or a custom check
        return linear(batch.view(batch.shape[0], -1))

    inputs = torch.rand(200, 3, 4, 4)
    scores = ModelAdapter(model).evaluate(200, lambda a, b: inputs[a:b], input_shape=(3, 4, 4))
    with torch.no_grad():
        torch.testing.assert_close(scores, linear(inputs.view(200, -1)))


def test_small_calls_skip_the_batch_size_trials_and_the_smallest_the_layout_probe_too() -> None:
    model = CountingModel(small_cnn())
    inputs = torch.rand(50, 3, 8, 8)
    adapter = ModelAdapter(model)
    adapter.evaluate(20, lambda a, b: inputs[a:b], input_shape=(3, 8, 8))
    assert model.sizes == [20]  # no probe below 32 images
    adapter.evaluate(50, lambda a, b: inputs[a:b], input_shape=(3, 8, 8))
    assert model.sizes == [
        20,
        8,
        8,
        8,
        8,
        32,
        18,
    ]  # the layout probe once (4 x 8 images), then default batches
    adapter.evaluate(50, lambda a, b: inputs[a:b], input_shape=(3, 8, 8))
    assert model.sizes[7:] == [32, 18]  # the layout is remembered


def test_probs_output_is_softmax_of_logits() -> None:
    model = small_cnn()
    x = torch.rand(1, 3, 8, 8)
    logits = ModelAdapter(model).scores(x)
    probs = ModelAdapter(model, output="probs").scores(x)
    assert torch.allclose(probs, torch.softmax(logits, 1))
    assert torch.allclose(probs.sum(), torch.tensor(1.0))


def test_scores_are_cached_for_the_same_input_and_recomputed_after_in_place_change() -> None:
    model = CountingModel(small_cnn())
    adapter = ModelAdapter(model)
    x = torch.rand(1, 3, 8, 8)
    first = adapter.scores(adapter.prepare(x))
    adapter.scores(adapter.prepare(x))
    assert model.calls == 1
    x.mul_(0.5)
    second = adapter.scores(adapter.prepare(x))
    assert model.calls == 2
    assert not torch.equal(first, second)


def test_cancel_check_stops_between_batches() -> None:
    model = CountingModel(small_cnn())
    inputs = torch.rand(100, 3, 8, 8)
    seen = []

    def check() -> None:
        seen.append(1)
        if len(seen) > 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        ModelAdapter(model).evaluate(100, lambda a, b: inputs[a:b], input_shape=(3, 8, 8), check_cancel=check)
    assert (
        model.calls == 4 + 2
    )  # the layout probe's four small passes, then two batches before the third check


def test_plain_callable_is_accepted() -> None:
    weights = torch.randn(5, 3)
    adapter = ModelAdapter(lambda batch: batch @ weights)
    assert adapter.device == torch.device("cpu")
    rows = torch.randn(10, 5)
    assert torch.allclose(adapter.evaluate(10, lambda a, b: rows[a:b], input_shape=(5,)), rows @ weights)


def test_model_in_float64_gets_float64_inputs() -> None:
    model = nn.Linear(4, 2).double()
    call = prepare(model, torch.rand(4), target=None)
    assert call.x.dtype == torch.float64


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (lambda b: b.sum(1), r"returned shape \(1,\).*expected \(N, n_outputs\)"),
        (lambda b: (b, b), r"returned tuple.*expected a tensor"),
        (lambda b: b[:1].repeat(2, 1), r"returned shape \(2, 4\) for a batch of 1"),
    ],
)
def test_bad_model_outputs_are_explained(model, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        prepare(model, torch.rand(4), target=None)


def test_not_a_model() -> None:
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module or a callable"):
        ModelAdapter("resnet")  # type: ignore[arg-type]


class _LayoutClock:
    """A stand-in for the adapter's clock: each forward pass advances it by a fixed time per layout."""

    def __init__(self, channels_last_share: float) -> None:
        self.now = 0.0
        self.share = channels_last_share

    def perf_counter(self) -> float:
        return self.now

    def model(self) -> nn.Module:
        clock = self

        class Clocked(nn.Module):
            def forward(self, batch: torch.Tensor) -> torch.Tensor:
                channels_last = not batch.is_contiguous()
                clock.now += 0.01 * (clock.share if channels_last else 1.0)
                return batch.mean(dim=(2, 3))

        return Clocked()


@pytest.mark.parametrize(
    ("share", "expected"), [(0.92, torch.channels_last), (0.97, torch.contiguous_format)]
)
def test_layout_probe_keeps_channels_last_from_a_5_percent_gain(monkeypatch, share, expected) -> None:
    """ResNet-18's probe measured channels-last at 0.88 of the contiguous time: a 10 % bar put it on either
    side from run to run (and a contiguous run took 1.2 times the floor); a gain within 5 % stays contiguous."""
    import livexai._adapter as adapter_module

    clock = _LayoutClock(share)
    monkeypatch.setattr(adapter_module, "time", clock)
    adapter = ModelAdapter(clock.model())
    inputs = torch.rand(64, 3, 8, 8)
    adapter.evaluate(64, lambda a, b: inputs[a:b], input_shape=(3, 8, 8))
    assert adapter.layout((3, 8, 8)) == expected


def test_unknown_output_space() -> None:
    with pytest.raises(ValueError, match="output must be one of"):
        ModelAdapter(small_cnn(), output="softmax")  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_runs_on_cuda() -> None:
    model = small_cnn().cuda()
    inputs = torch.rand(600, 3, 16, 16, device="cuda")
    adapter = ModelAdapter(model)
    scores = adapter.evaluate(600, lambda a, b: inputs[a:b], input_shape=(3, 16, 16))
    assert scores.device.type == "cuda"
    assert adapter._known(("layout", (3, 16, 16), str(adapter.device), None)) is not None  # the probe ran
    with model_lock(model).hold(model), torch.no_grad():
        assert torch.allclose(scores, model(inputs), atol=1e-4)


def test_tuning_stops_trying_larger_sizes_once_they_get_slower() -> None:
    import time as clock

    class SlowerInBigBatches(nn.Module):
        """A fixed cost per call, and a per-input cost that jumps beyond 16 inputs (as for a big model on a CPU)."""

        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.sizes.append(x.shape[0])
            clock.sleep(0.004 + x.shape[0] * (0.0005 if x.shape[0] <= 16 else 0.003))
            return x.flatten(1)[:, :3]

    model = SlowerInBigBatches()
    inputs = torch.rand(600, 3, 4, 4)
    ModelAdapter(model).evaluate(600, lambda a, b: inputs[a:b], input_shape=(3, 4, 4))
    # layout probe, an untimed round, then 8, 16, 32 timed: 32 is much slower per input, so the second timed
    # round skips it and the larger sizes; then 16 for the rest
    assert model.sizes[:14] == [8] * 4 + [8, 16, 32, 64, 128] + [8, 16, 32] + [8, 16]
    assert set(model.sizes[14:-1]) == {16}


def test_finite_scores_pass_even_when_their_sum_overflows() -> None:
    """The usual case is one sum; a sum that overflows (huge but finite scores) falls back to the exact check."""
    check_finite(torch.tensor([[3e38, 3e38], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="NaN or infinite scores for 1 of 2 inputs"):
        check_finite(torch.tensor([[3e38, 3e38], [float("nan"), 2.0]]))
    with pytest.raises(ValueError, match="for 1 of 1 inputs"):
        check_finite(torch.tensor([[float("inf"), -float("inf")]]))
