"""How long a widget takes to answer a parameter change: to the first partial result and to the final one.

    python -m benchmarks.latency                 # small CNN (64x64) and ResNet-18 (224x224), CPU
    python -m benchmarks.latency --quick         # smoke run: small CNN, 200 LIME samples, one repeat
    python -m benchmarks.latency --device cuda   # GPU: adds ResNet-50 (224x224); writes the GPU section
    python -m benchmarks.latency --only explorer # the Explorer alone (CPU): per panel, and its accuracy

Headless: the widgets are built in plain Python (no kernel, no browser), so the time runs from setting a trait
(what a slider does) through the observer, the shared runner's worker thread and the method, to the moment the
widget's ``panels`` trait holds the first partial map and its ``status`` is back to ``"idle"``. With no event
loop running, the runner applies updates on its worker thread, so this leaves out the comm message to the
browser and the drawing (a few milliseconds for maps this size). The Explorer is timed per panel (its first
picture and its final one) on the shapes CNN and a ResNet-18, each panel's accuracy against a 10x-budget run
on the shapes CNN, and written to its own section.
"""

from __future__ import annotations

import argparse
import os
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


# -- Explorer ---------------------------------------------------------------------------------------------------
EXPLORER_PANELS = ("grad_cam", "gradient_shap", "lime", "kernel_shap")  # in the order they are computed
EXPLORER_IMAGES = 8  # the image strip, which is also KernelSHAP's and GradientSHAP's background
EXPLORER_MODELS = {
    "small": ("shapes CNN", 64),
    "resnet18": ("ResNet-18", 224),
}  # benchmark name -> (label, size)
FLOOR_BATCH = 64  # images per forward pass when timing the forward-only floor
ACCURACY_SAMPLES = 500  # the Explorer's n_samples (LIME, KernelSHAP); the reference runs take 10x
ACCURACY_GRADIENT_SAMPLES = 50  # the Explorer's gradient_samples


@dataclass
class PanelChange:
    """One Explorer parameter change and, per panel, its latencies (seconds) to a first picture and the final one."""

    label: str
    apply: Callable[[Any], None]
    first: dict[str, list[float]] = field(default_factory=dict)
    final: dict[str, list[float]] = field(default_factory=dict)
    idle: list[float] = field(default_factory=list)
    n_evals: int = 0


class PanelRecorder(Recorder):
    """A :class:`Recorder` that also timestamps each panel's first picture (partial or done) and final one."""

    def arm(self) -> None:
        super().arm()
        self.panel_first: dict[str, float] = {}
        self.panel_final: dict[str, float] = {}

    def _on_panels(self, change: dict[str, Any]) -> None:
        super()._on_panels(change)
        now = time.perf_counter() - self.started
        for entry in change["new"]:
            if entry["status"] in ("partial", "done"):
                self.panel_first.setdefault(entry["key"], now)
            if entry["status"] == "done":
                self.panel_final.setdefault(entry["key"], now)


def explorer_changes(n_classes: int, target: int, background_size: int, short: bool) -> list[PanelChange]:
    """Slider moves on an Explorer: superpixels there and back, samples, class, background size; ``short``: three
    (ResNet-18 on a CPU, where each takes seconds)."""
    other = (target + 1) % n_classes
    resized = 2 * background_size if 2 * background_size <= EXPLORER_IMAGES else background_size // 2
    segments = [
        PanelChange("n_segments 50 → 40", lambda w: setattr(w, "n_segments", 40)),
        PanelChange("n_segments 40 → 50", lambda w: setattr(w, "n_segments", 50)),
    ]
    samples = PanelChange("n_samples 500 → 400", lambda w: setattr(w, "n_samples", 400))
    others = [
        PanelChange("target → another class", lambda w: setattr(w, "target", other)),
        PanelChange(
            f"background_size {background_size} → {resized}", lambda w: setattr(w, "background_size", resized)
        ),
    ]
    return [segments[0], *others] if short else [*segments, samples, *others]


def run_explorer_changes(widget: Any, changes: list[PanelChange], repeats: int) -> None:
    """Measure each change ``repeats`` times; between repeats the widget goes back to its first state."""
    recorder = PanelRecorder(widget)
    start = widget.parameters()
    for _ in range(repeats):
        changed = {name: value for name, value in start.items() if getattr(widget, name) != value}
        if changed:  # back to the first state (not timed)
            recorder.measure(lambda w, changed=changed: [setattr(w, k, v) for k, v in changed.items()])
        for change in changes:
            _, idle, _ = recorder.measure(change.apply)
            for key in EXPLORER_PANELS:
                change.first.setdefault(key, []).append(recorder.panel_first.get(key, float("nan")))
                change.final.setdefault(key, []).append(recorder.panel_final.get(key, float("nan")))
            change.idle.append(idle)
            change.n_evals = widget.n_evals
            times = ", ".join(
                f"{key} {recorder.panel_first.get(key, 0) * 1000:.0f}/{recorder.panel_final.get(key, 0) * 1000:.0f}"
                for key in EXPLORER_PANELS
            )
            print(f"    {change.label}: {times} ms (first/final), idle {idle * 1000:.0f} ms", flush=True)


def forward_ms(model: Any, x: torch.Tensor, autocast: bool) -> float:
    """Milliseconds per image of the forward pass alone: best of contiguous and channels-last batches."""
    from ._common import measure

    batch = x[None].expand(FLOOR_BATCH, *x.shape).contiguous()
    best = float("inf")
    for layout in (torch.contiguous_format, torch.channels_last):
        inputs = batch.to(memory_format=layout)
        with torch.inference_mode(), torch.autocast(x.device.type, torch.bfloat16, enabled=autocast):
            timing = measure(
                lambda inputs=inputs: model(inputs), device=x.device, min_runs=2, max_runs=3, max_seconds=2.0
            )
        best = min(best, timing.seconds)
    return best * 1000.0 / FLOOR_BATCH


def explorer_benchmark(name: str, repeats: int, device: torch.device) -> list[list[str]]:
    """The Explorer at its defaults on ``name`` (fp32 and bf16 autocast; small: also the old background 8)."""
    import livexai
    from livexai import ModelAdapter
    from livexai.widgets import Explorer

    label, size = EXPLORER_MODELS[name]
    model = livexai.models.shapes_cnn() if name == "small" else make_case(name, "cpu").model
    model = model.to(device).eval()
    images = livexai.datasets.shapes(EXPLORER_IMAGES, size=size).images.to(device)
    settings = [("fp32", False, None), ("bf16", True, None)]
    if name == "small":
        settings.append(
            (f"fp32, background_size {EXPLORER_IMAGES} (the old default size)", False, EXPLORER_IMAGES)
        )
    rows = []
    for precision, autocast, background_size in settings:
        adapter = ModelAdapter(model, autocast=torch.bfloat16) if autocast else ModelAdapter(model)
        options = {} if background_size is None else {"background_size": background_size}
        print(f"  {name}: Explorer, {precision}", flush=True)
        began = time.perf_counter()
        widget = Explorer(adapter, images, **options)
        widget.wait(TIMEOUT_S)
        created = time.perf_counter() - began
        target = int(widget.explanation["grad_cam"].target)
        changes = explorer_changes(widget._n_outputs, target, widget.background_size, short=name != "small")
        run_explorer_changes(widget, changes, repeats)
        per_image = forward_ms(model, images[0], autocast)
        rows += _panel_rows(f"{label} ({size}²)", precision, created, per_image, changes)
        widget.close()
    return rows


def _panel_rows(
    model: str, precision: str, created: float, per_image_ms: float, changes: list[PanelChange]
) -> list[list[str]]:
    """One table row per change: each panel's first/final time (medians), all idle, and × the forward floor."""

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f}"

    rows = [
        [model, precision, "widget created", *["–"] * len(EXPLORER_PANELS), f"{created * 1000:.0f}", "–", "–"]
    ]
    for change in changes:
        floor_ms = change.n_evals * per_image_ms
        panels = [f"{ms(change.first[key])} / {ms(change.final[key])}" for key in EXPLORER_PANELS]
        idle_ms = statistics.median(change.idle) * 1000
        rows.append(
            [
                model,
                precision,
                change.label,
                *panels,
                f"{idle_ms:.0f}",
                str(change.n_evals),
                f"{idle_ms / floor_ms:.1f}",
            ]
        )
    return rows


def explorer_accuracy(device: torch.device) -> list[list[str]]:
    """Each Explorer panel's weights against a 10x-budget reference run (another seed), at the old defaults and
    the new: Spearman rank correlation per image of the strip, median and minimum over the images."""
    import livexai

    model = livexai.ModelAdapter(livexai.models.shapes_cnn().to(device).eval())
    images = livexai.datasets.shapes(EXPLORER_IMAGES).images.to(device)
    scores: dict[str, list[float]] = {}
    for x in images:
        for name, value in _image_accuracy(model, x, images).items():
            scores.setdefault(name, []).append(value)
    return [
        [name, f"{statistics.median(values):.3f}", f"{min(values):.3f}"] for name, values in scores.items()
    ]


def _image_accuracy(model: Any, x: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
    """Rank correlations with the 10x reference for one image: LIME, KernelSHAP at the old and the new background
    size (and the new one against the old one's reference: a smaller background answers a nearby question), and
    GradientSHAP per pixel."""
    from livexai import gradient_shap, kernel_shap, lime, segment
    from livexai.metrics import rank_correlation
    from livexai.widgets.explorer import DEFAULT_BACKGROUND_SIZE

    segments = segment(x, 50)

    def weights(method: Callable[..., Any], scale: int, **options: Any) -> torch.Tensor:
        seed = 0 if scale == 1 else 1  # the reference is another seed as well as a bigger budget
        n = ACCURACY_SAMPLES * scale
        return method(model, x, segments=segments, n_samples=n, seed=seed, **options).weights

    result = {"LIME": rank_correlation(weights(lime, 1), weights(lime, 10))}
    wide = {"background": images, "background_size": EXPLORER_IMAGES}
    wide_reference = weights(kernel_shap, 10, **wide)
    for size in (EXPLORER_IMAGES, DEFAULT_BACKGROUND_SIZE):
        options = {"background": images, "background_size": size}
        estimate = weights(kernel_shap, 1, **options)
        reference = wide_reference if size == EXPLORER_IMAGES else weights(kernel_shap, 10, **options)
        result[f"KernelSHAP, background_size {size}"] = rank_correlation(estimate, reference)
        if size != EXPLORER_IMAGES:
            name = (
                f"KernelSHAP, background_size {size}, against the background_size {EXPLORER_IMAGES} reference"
            )
            result[name] = rank_correlation(estimate, wide_reference)
    ours, reference = (
        gradient_shap(model, x, background=images, n_samples=ACCURACY_GRADIENT_SAMPLES * scale, seed=seed)
        for scale, seed in ((1, 0), (10, 1))
    )
    result["GradientSHAP (per pixel)"] = rank_correlation(ours.attributions, reference.attributions)
    return result


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
    parser.add_argument(
        "--only", choices=("widgets", "explorer"), default=None, help="single widgets or the Explorer (both)"
    )
    args = parser.parse_args(argv)
    device = start_run(args)
    on_gpu = device.type == "cuda"
    default_models = "small" if args.quick else ("small,resnet18,resnet50" if on_gpu else "small,resnet18")
    names = [name.strip() for name in (args.models or default_models).split(",")]
    repeats = args.repeats or (1 if args.quick else 3)
    try:
        import livexai.widgets  # noqa: F401
        from livexai.widgets import Explorer, LayerWidget, LimeWidget  # noqa: F401
    except ImportError as error:
        print(f"skipped: the widgets are not importable yet ({error})")
        return
    if args.only in (None, "widgets"):
        single_widgets(args, argv, device, names, repeats)
    if args.only in (None, "explorer") and not on_gpu:
        explorer(args, argv, device, [name for name in names if name in EXPLORER_MODELS], repeats)


def single_widgets(
    args: argparse.Namespace, argv: list[str] | None, device: torch.device, names: list[str], repeats: int
) -> None:
    """LimeWidget and LayerWidget on each model; writes the "latency" (or "latency-cuda") section."""
    on_gpu = device.type == "cuda"
    n_samples = args.samples or (200 if args.quick else 1000)
    began = time.perf_counter()
    rows = []
    for name in names:
        # One repeat on the large models on a CPU: a 1000-sample LIME on ResNet-18 takes tens of seconds there.
        times = repeats if name == "small" or on_gpu else min(repeats, 1)
        rows += benchmark(name, n_samples, times, device)
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


def explorer(
    args: argparse.Namespace, argv: list[str] | None, device: torch.device, names: list[str], repeats: int
) -> None:
    """The Explorer at its defaults on each model, and (not --quick) its panels' accuracy; writes the
    "latency-explorer" section."""
    from livexai.widgets.explorer import TITLES

    began = time.perf_counter()
    rows = []
    for name in names:
        rows += explorer_benchmark(name, repeats if name == "small" else 1, device)
    header = [
        "model",
        "precision",
        "change",
        *[f"{TITLES[key]} first / final (ms)" for key in EXPLORER_PANELS],
    ]
    header += ["all idle (ms)", "evals", "× forward floor"]
    lines = [
        "## Explorer latency: CPU",
        "",
        *machine_lines(device),
        f"- Command: `{command_line('latency', argv)}` ({(time.perf_counter() - began) / 60:.1f} min in all)",
        f"- Load: `uptime` load average {_load()} at the end of the run (2 cores; other processes ran too).",
        f"- `Explorer(model, {EXPLORER_IMAGES} images)` at its defaults (50 superpixels, 500 samples), headless: from "
        f"setting the trait to each panel's first picture (partial or final) and its final one, and to the widget "
        f"idle (correlations shown); median of {repeats} repeat(s) on the shapes CNN, 1 on ResNet-18. "
        "A panel whose parameters did not change keeps its result (first = final = the time its panel is sent). "
        "`× forward floor`: all idle / (evals × the model's forward time per image in batches of 64).",
        "",
        markdown_table(header, rows),
    ]
    if not args.quick:
        lines += [
            "",
            f"Accuracy at the defaults: Spearman rank correlation of each panel's weights with a run of 10× the "
            f"budget and another seed, over the {EXPLORER_IMAGES} images of `datasets.shapes` (shapes CNN, 50 "
            "superpixels), median and worst image. Grad-CAM is exact (1.000).",
            "",
            markdown_table(["estimate", "median", "min"], explorer_accuracy(device)),
        ]
    finish_run(args, "\n".join(lines), "latency-explorer", time.perf_counter() - began)


def _load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
