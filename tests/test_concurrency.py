"""The user's model stays untouched when widgets, cells and threads use it at the same time.

Every entry point takes the model's lock (``ModelLock``) around eval mode, computation and restore; without it one
thread restored training mode while another still computed, and batch norm updated its running statistics.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from conftest import assert_unchanged, snapshot
from test_model_untouched import BACKGROUND, X, awkward_model
from torch import nn

import livexai
from livexai._adapter import ModelAdapter, ModelLock, model_lock
from livexai.widgets._runner import Runner

CALLS: dict[str, Callable[[nn.Module], object]] = {
    "lime": lambda m: livexai.lime(m, X, n_segments=6, n_samples=200, chunk_size=16),
    "kernel_shap": lambda m: livexai.kernel_shap(m, X, background=BACKGROUND, n_segments=6, n_samples=60),
    "grad_cam": lambda m: livexai.grad_cam(m, X, layer="4"),
    "integrated_gradients": lambda m: livexai.integrated_gradients(m, X, n_steps=16),
    "deep_shap": lambda m: livexai.deep_shap(m, X, background=BACKGROUND, batch_size=2),
}


def run_together(
    model: nn.Module, rounds: int = 4, calls: dict[str, Callable[[nn.Module], object]] = CALLS
) -> list[BaseException]:
    """Each of ``calls`` on its own thread, all started at once, ``rounds`` times over."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(calls))

    def worker(call: Callable[[nn.Module], object]) -> None:
        try:
            start.wait()
            for _ in range(rounds):
                call(model)
        except BaseException as error:  # collected, so the test reports it
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(call,)) for call in calls.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_threads_calling_methods_at_once_leave_a_training_model_unchanged() -> None:
    model = awkward_model()
    before = snapshot(model)
    assert run_together(model) == []
    assert_unchanged(before, snapshot(model))


def test_deep_shap_sees_only_its_own_threads_operations() -> None:
    # DeepLIFT's operation mode is per thread: operations other threads run between its batches never enter
    # its tape (they would misalign the reference and input passes).
    model = awkward_model()
    alone = livexai.deep_shap(model, X, background=BACKGROUND, batch_size=2)
    results: list[livexai.Explanation] = []
    calls = dict(CALLS, deep_shap=lambda m: results.append(CALLS["deep_shap"](m)))
    assert run_together(model, rounds=1, calls=calls) == []
    torch.testing.assert_close(results[0].attributions, alone.attributions)


def test_a_cell_call_while_a_widget_computes_leaves_the_model_unchanged() -> None:
    model = awkward_model()
    before = snapshot(model)
    widget = livexai.LimeWidget(model, X, n_segments=6, n_samples=2000, runner=Runner())
    for _ in range(3):  # cells calling methods while the widget's job runs
        livexai.grad_cam(model, X, layer="4")
        livexai.lime(model, X, n_segments=6, n_samples=64)
    widget.wait()
    widget.close()
    assert_unchanged(before, snapshot(model))


class Recorder(nn.Module):
    """Notes which thread ran each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.log: list[str] = []
        self.widget_started = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = threading.current_thread().name
        self.log.append(name)
        if name == "livexai-runner":
            self.widget_started.set()
        return self.linear(x)


def test_a_cell_waits_for_one_batch_of_a_widget_job_not_for_the_whole_job() -> None:
    model = Recorder()
    adapter = ModelAdapter(model, batch_size=8)
    runner = Runner()
    gate = threading.Event()

    def widget_job(context: object) -> None:
        def make_batch(start: int, stop: int) -> torch.Tensor:
            if start == 8:  # the second batch waits until the cell is queued for the lock (or has run)
                gate.wait(5)
            return torch.zeros(stop - start, 4)

        adapter.evaluate(64, make_batch, input_shape=(4,))

    runner.submit(object(), widget_job)
    assert model.widget_started.wait(5)
    cell_adapter = ModelAdapter(model)
    cell = threading.Thread(
        target=lambda: cell_adapter.evaluate(1, lambda start, stop: torch.ones(1, 4), input_shape=(4,))
    )
    cell.start()
    while cell.is_alive() and not model_lock(model)._queue:  # until the cell waits for the lock (or got it)
        threading.Event().wait(0.001)
    gate.set()
    cell.join(5)
    runner.shutdown()
    widget_batches = [i for i, name in enumerate(model.log) if name == "livexai-runner"]
    cell_batch = next(i for i, name in enumerate(model.log) if name != "livexai-runner")
    assert widget_batches[0] < cell_batch < widget_batches[-1]  # in between the widget's batches


def test_the_lock_is_reentrant_restores_flags_once_and_is_shared_per_model() -> None:
    model = awkward_model()
    before = snapshot(model)
    lock = model_lock(model)
    assert (
        isinstance(lock, ModelLock) and model_lock(model) is lock and model_lock(nn.Linear(1, 1)) is not lock
    )
    assert model_lock(model.forward) is lock  # a bound method locks the module it belongs to
    with lock.hold(model):
        assert not model.training
        with lock.hold(model):
            assert not any(module.training for module in model.modules())
        assert not model.training  # the inner exit does not restore
    assert_unchanged(before, snapshot(model))
