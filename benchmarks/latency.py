"""How long a widget takes to answer a parameter change: to the first partial result and to the final one.

    python -m benchmarks.latency                 # small CNN (64x64) and ResNet-18 (224x224), CPU
    python -m benchmarks.latency --quick         # smoke run: small CNN, 200 LIME samples, one repeat
    python -m benchmarks.latency --device cuda   # GPU: adds ResNet-50 (224x224); writes the GPU section

Headless: the widgets are built in plain Python (no kernel, no browser), so the time runs from setting a trait
(what a slider does) through the observer, the shared runner's worker thread and the method, to the moment the
widget's ``panels`` trait holds the first partial map and its ``status`` is back to ``"idle"``. With no event
loop running, the runner applies updates on its worker thread, so this leaves out the comm message to the
browser and the drawing (a few milliseconds for maps this size).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ._common import add_run_arguments, command_line, finish_run, machine_lines, markdown_table, start_run
from ._models import make_case

TIMEOUT_S = 300.0


@dataclass
class Change:
    """One parameter change and its measured latencies (seconds), one entry per repeat."""

    label: str
    apply: Callable[[Any], None]
    first: list[float] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    partials: list[int] = field(default_factory=list)
    n_evals: int = 0


class Recorder:
    """Watches one widget's ``panels`` and ``status`` traits and timestamps what a change brings."""

    def __init__(self, widget: Any) -> None:
        self.widget = widget
        self.started = 0.0
        self.final = 0.0
        self.first: float | None = None
        self.partials = 0
        self.failed = ""
        self.done = threading.Event()
        widget.observe(self._on_panels, names=["panels"])
        widget.observe(self._on_status, names=["status"])

    def arm(self) -> None:
        self.first, self.partials, self.failed = None, 0, ""
        self.done.clear()
        self.started = time.perf_counter()

    def _on_panels(self, change: dict[str, Any]) -> None:
        now = time.perf_counter()
        if any(entry.get("status") == "partial" for entry in change["new"]):
            self.partials += 1
        if self.first is None and change["new"]:
            self.first = now

    def _on_status(self, change: dict[str, Any]) -> None:
        if change["new"] == "idle":
            self.final = time.perf_counter()
            self.done.set()
        elif change["new"] == "error":
            self.failed = self.widget.error
            self.done.set()

    def measure(self, apply: Callable[[Any], None], settle: bool = True) -> tuple[float, float, int]:
        """Apply a change; return (seconds to the first map, seconds to the final map, partial updates seen).

        ``settle`` waits for the widget to be idle first; a drag does not (earlier steps are still running).
        """
        if settle:
            self.widget.wait(TIMEOUT_S)
        self.arm()
        apply(self.widget)
        if not self.done.wait(TIMEOUT_S):
            raise TimeoutError(f"no result within {TIMEOUT_S:.0f} s")
        if self.failed:
            raise RuntimeError(f"the widget reported an error: {self.failed}")
        first = self.first if self.first is not None else self.final
        return first - self.started, self.final - self.started, self.partials


def _drag(name: str, values: list[Any], gap_s: float = 0.05) -> Callable[[Any], None]:
    """Set ``name`` to each value in turn ``gap_s`` apart, as a dragged slider does; latency counts from the last."""

    def apply(widget: Any) -> None:
        for value in values[:-1]:
            setattr(widget, name, value)
            time.sleep(gap_s)

    def last(widget: Any) -> None:
        setattr(widget, name, values[-1])

    apply.last = last  # type: ignore[attr-defined]
    return apply


def run_changes(widget: Any, changes: list[Change], repeats: int) -> None:
    recorder = Recorder(widget)
    for _ in range(repeats):
        for change in changes:
            last = getattr(change.apply, "last", None)
            if last is not None:  # a drag: the earlier values are set before timing starts
                widget.wait(TIMEOUT_S)
                change.apply(widget)
                first, final, partials = recorder.measure(last, settle=False)
            else:
                first, final, partials = recorder.measure(change.apply)
            change.first.append(first)
            change.final.append(final)
            change.partials.append(partials)
            change.n_evals = widget.n_evals
            print(f"    {change.label}: first {first * 1000:.0f} ms, final {final * 1000:.0f} ms", flush=True)


def lime_changes(n_classes: int, target: int, short: bool = False) -> list[Change]:
    """Slider moves on a LimeWidget; ``short``: only three (for large models, where each takes tens of seconds)."""
    other = (target + 1) % n_classes
    drag = Change("drag n_segments 40…50 (5 steps, 50 ms apart)", _drag("n_segments", [42, 44, 46, 48, 50]))
    if short:
        return [
            Change("n_segments 50 → 40", lambda w: setattr(w, "n_segments", 40)),
            Change("target → another class", lambda w: setattr(w, "target", other)),
            drag,
        ]
    return [
        Change("n_segments 50 → 40", lambda w: setattr(w, "n_segments", 40)),
        Change("kernel_width 0.25 → 0.5", lambda w: setattr(w, "kernel_width", 0.5)),
        Change("target → another class", lambda w: setattr(w, "target", other)),
        Change("target back", lambda w: setattr(w, "target", target)),
        drag,
        Change("kernel_width back to 0.25", lambda w: setattr(w, "kernel_width", 0.25)),
    ]


def cam_changes(layers: tuple[str, ...], n_classes: int, target: int) -> list[Change]:
    other = (target + 1) % n_classes
    changes = [
        Change("target → another class", lambda w: setattr(w, "target", other)),
        Change("target back", lambda w: setattr(w, "target", target)),
        Change("method grad_cam → grad_cam++", lambda w: setattr(w, "method", "grad_cam++")),
        Change("method back to grad_cam", lambda w: setattr(w, "method", "grad_cam")),
    ]
    if len(layers) > 1:
        # A layer about halfway down the list: a different resolution, as a user exploring layers would pick.
        deepest, previous = layers[-1], layers[len(layers) // 2]
        changes += [
            Change(f"layer → {previous}", lambda w: setattr(w, "layer", previous)),
            Change(f"layer back to {deepest}", lambda w: setattr(w, "layer", deepest)),
        ]
    return changes


def benchmark(name: str, n_samples: int, repeats: int, device: torch.device) -> list[list[str]]:
    from livexai.widgets import LayerWidget, LimeWidget

    case = make_case(name, device)
    with torch.inference_mode():
        scores = case.model(case.x[None])
    target, n_classes = int(scores.argmax()), int(scores.shape[1])
    rows = []

    from livexai import ModelAdapter

    for precision, model in (
        ("", case.model),
        (", bf16 autocast", ModelAdapter(case.model, autocast=torch.bfloat16)),
    ):
        print(f"  {name}: LimeWidget, {n_samples} samples{precision}", flush=True)
        began = time.perf_counter()
        widget = LimeWidget(model, case.x, n_samples=n_samples, n_segments=50, target=target)
        widget.wait(TIMEOUT_S)
        created = time.perf_counter() - began
        changes = lime_changes(n_classes, target, short=name != "small" and device.type == "cpu")
        run_changes(widget, changes, repeats)
        rows += _rows(name, f"LIME, {n_samples} samples{precision}", created, changes)
        widget.close()

    print(f"  {name}: LayerWidget (Grad-CAM)", flush=True)
    began = time.perf_counter()
    widget = LayerWidget(case.model, case.x, target=target)
    widget.wait(TIMEOUT_S)
    created = time.perf_counter() - began
    layer_choices = tuple(next(c["choices"] for c in widget.controls if c["name"] == "layer"))
    changes = cam_changes(layer_choices, n_classes, target)
    run_changes(widget, changes, repeats)
    rows += _rows(name, "Grad-CAM", created, changes)
    widget.close()
    return rows


def _rows(model: str, what: str, created: float, changes: list[Change]) -> list[list[str]]:
    rows = [[model, what, "widget created → first result shown", "–", f"{created * 1000:.0f}", "–", "–"]]
    for change in changes:
        rows.append(
            [
                model,
                what,
                change.label,
                f"{statistics.median(change.first) * 1000:.0f}",
                f"{statistics.median(change.final) * 1000:.0f}",
                f"{statistics.median(change.partials):.0f}",
                str(change.n_evals),
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.splitlines()[0])
    add_run_arguments(parser, "smoke run: small CNN, 200 samples, one repeat")
    parser.add_argument("--models", default=None, help="comma-separated, from small,resnet18,resnet50")
    parser.add_argument("--samples", type=int, default=None, help="LIME samples (1000)")
    parser.add_argument("--repeats", type=int, default=None, help="times each change is measured (3)")
    args = parser.parse_args(argv)
    device = start_run(args)
    on_gpu = device.type == "cuda"
    default_models = "small" if args.quick else ("small,resnet18,resnet50" if on_gpu else "small,resnet18")
    names = (args.models or default_models).split(",")
    n_samples = args.samples or (200 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    try:
        import livexai.widgets  # noqa: F401
        from livexai.widgets import LayerWidget, LimeWidget  # noqa: F401
    except ImportError as error:
        print(f"skipped: the widgets are not importable yet ({error})")
        return
    began = time.perf_counter()
    rows = []
    for name in names:
        # One repeat on the large models on a CPU: a 1000-sample LIME on ResNet-18 takes tens of seconds there.
        times = repeats if name.strip() == "small" or on_gpu else min(repeats, 1)
        rows += benchmark(name.strip(), n_samples, times, device)
    header = ["model", "widget", "change", "first map (ms)", "final map (ms)", "partial updates", "evals"]
    text = "\n".join(
        [
            f"## Widget latency: {'GPU' if on_gpu else 'CPU'}",
            "",
            *machine_lines(device),
            f"- Command: `{command_line('latency', argv)}` ({(time.perf_counter() - began) / 60:.1f} min in all)",
            f"- Headless (no kernel, no browser): from setting the trait to the widget's `panels` holding the first "
            f"map and its `status` back to idle; median of {repeats} repeat(s)"
            + ("" if on_gpu else " on the small CNN, 1 on larger models")
            + ". Partial maps are throttled to 10 per second. Grad-CAM does not stream: first = final.",
            "",
            markdown_table(header, rows),
        ]
    )
    finish_run(args, text, "latency-cuda" if on_gpu else "latency", time.perf_counter() - began)


if __name__ == "__main__":
    main()
