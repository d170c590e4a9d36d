"""Speed of livexai's methods against lime, shap, Captum and pytorch-grad-cam on the same model, input and budget.

    python -m benchmarks.peers                       # CPU: small CNN at 64x64 and ResNet-18 at 224x224
    python -m benchmarks.peers --quick               # smoke run: small CNN, few repeats, 200 samples
    python -m benchmarks.peers --device cuda         # adds ResNet-50 at 224x224

Every implementation gets the same network (random weights: only time matters), the same input, the same target
class, the same superpixels (scikit-image SLIC, 50 segments, computed once; segmentation is timed on its own)
and the same number of model evaluations. Each time is the median of several runs after a warm-up, in one
process. ``× floor`` divides a time by the forward-only floor: ``budget`` images pushed through the model in
batches of the best size found by a sweep, with nothing else; for a sampling method it is the whole cost of
running the model, so ``× floor - 1`` is what the method itself adds.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._common import (
    Timing,
    add_run_arguments,
    command_line,
    finish_run,
    machine_lines,
    markdown_table,
    measure,
    quiet_peers,
    start_run,
    synchronize,
)
from ._models import MODEL_NAMES, Case, make_case

PEERS = ("captum", "shap", "lime", "grad-cam", "scikit-image")
N_SEGMENTS = 50
# The method groups of the table, in order; ``--groups`` runs some of them (and then writes nothing).
GROUPS = (
    "lime",
    "kernel_shap",
    "gradient_shap",
    "deep_shap",
    "integrated_gradients",
    "grad_cam",
    "segmentation",
)
FAKE_TORCHVISION = Path(__file__).resolve().parent / "fake_torchvision"


@dataclass
class Settings:
    """How hard to measure: budget (evaluations per sampling method) and the repeat policy."""

    budget: int = 1000
    grad_samples: int = 50
    backgrounds: tuple[int, ...] = (16, 64)
    min_runs: int = 1
    max_runs: int = 5
    # Rows paired with the floor (see Benchmark.sampled) repeat up to this often: the ratio of a 0.2-s small-CNN
    # run to its floor run moved by ±5 % from pair to pair on the shared 2-core VM, so five pairs left their
    # median to chance. The time cap below still stops a ResNet row after one or two runs.
    paired_max_runs: int = 15
    max_seconds: float = 10.0  # stop repeating once the runs add up to this: ResNet-18 sampling gets one run
    grad_max_seconds: float = 5.0  # gradient methods: a few seconds a call on ResNet-18, two runs are enough
    pilot: int = 100  # samples per candidate when picking Captum's perturbations_per_eval
    # Warm-up calls of the sampling methods: a peer's builds the kernels for its batch shapes; livexai's must be
    # large enough for the adapter's batch-size trials to finish (three rounds of 8..128: 744 evaluations), as
    # they do within a widget's first 1000-sample call. Trials left over would be timed as real work.
    warmup_budget: int = 100
    tuning_budget: int = 1000
    quick: bool = False


@dataclass
class Row:
    """One timed implementation."""

    group: str
    impl: str
    setting: str
    timing: Timing | None
    evals: int | None = None
    note: str = ""
    ours: bool = False


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by several peers


def _masked(x: torch.Tensor, baseline: torch.Tensor, segments: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Images ``(B, C, H, W)`` showing ``x`` on superpixels where ``z`` ``(B, K)`` is 1 and ``baseline`` elsewhere."""
    keep = z[:, segments].unsqueeze(1)  # (B, 1, H, W)
    return baseline + keep * (x - baseline)


def _candidates(device: torch.device, quick: bool) -> tuple[int, ...]:
    if device.type == "cuda":
        return (128,) if quick else (32, 128, 512)
    return (32,) if quick else (10, 32, 100)


def _ours(name: str) -> Any:
    """A livexai module, imported at call time (methods are written in parallel; a missing one is skipped)."""
    from importlib import import_module

    return import_module(f"livexai.{name}")


def _grad_cam_package() -> tuple[Any, Any, str]:
    """``(GradCAM, ClassifierOutputTarget, note)`` from pytorch-grad-cam, or raise ImportError.

    pytorch-grad-cam imports torchvision at module level; PyPI's torchvision does not load beside the CPU build
    of torch, so when the real one is missing the stand-in in ``benchmarks/fake_torchvision`` is put on the
    path (``GradCAM`` and ``ClassifierOutputTarget`` never call it).
    """
    note = ""
    try:
        import pytorch_grad_cam  # noqa: F401
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("torchvision"):
            raise
        sys.path.insert(0, str(FAKE_TORCHVISION))
        note = "torchvision stand-in"
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return GradCAM, ClassifierOutputTarget, note


# ---------------------------------------------------------------------------------------------------------------
# The benchmark


class Bench:
    """All measurements for one :class:`Case` on one device."""

    def __init__(self, case: Case, settings: Settings) -> None:
        self.case = case
        self.s = settings
        self.model = case.model
        self.x = case.x
        self.device = case.x.device
        with torch.inference_mode():
            self.target = int(self.model(self.x[None]).argmax())
        from skimage.segmentation import slic

        labels = slic(case.image, n_segments=N_SEGMENTS, compactness=10.0, start_label=0)
        self.segments_np = labels
        self.segments = torch.from_numpy(labels).long().to(self.device)
        self.k = int(labels.max()) + 1
        self.rows: list[Row] = []
        self.floor: Timing | None = None
        self.floor_batch = 0
        self._forward_budget: Callable[[], None] | None = None
        self.unsteady = False

    def timed(
        self,
        fn: Callable[[], Any],
        warmup: Callable[[], Any] | None = None,
        max_seconds: float | None = None,
        paired: Callable[[], Any] | None = None,
    ) -> Timing:
        return measure(
            fn,
            device=self.device,
            warmup=warmup,
            min_runs=self.s.min_runs,
            max_runs=self.s.max_runs if paired is None else self.s.paired_max_runs,
            max_seconds=self.s.max_seconds if max_seconds is None else max_seconds,
            paired=paired,
        )

    def timed_gradient(self, fn: Callable[[], Any]) -> Timing:
        return self.timed(fn, max_seconds=min(self.s.grad_max_seconds, self.s.max_seconds))

    def add(self, group: str, impl: str, setting: str, run: Callable[[], Row]) -> None:
        """Run one measurement; an implementation that is missing or fails becomes a row with a note."""
        label = f"{self.case.name}: {group} / {impl} {setting}".rstrip()
        print(f"  {label} ...", end="", flush=True)
        began = time.perf_counter()
        try:
            row = run()
        except ImportError as error:
            row = Row(group, impl, setting, None, note=f"skipped: {error}")
        except Exception as error:  # a peer that breaks should not sink the whole run
            row = Row(group, impl, setting, None, note=f"failed: {type(error).__name__}: {error}")
        row.group, row.impl, row.setting = group, impl, row.setting or setting
        self.rows.append(row)
        shown = f"{row.timing.seconds:.3f} s (x{row.timing.runs})" if row.timing else row.note
        print(f" {shown}  [{time.perf_counter() - began:.0f} s]", flush=True)

    # -- forward-only floor --------------------------------------------------------------------------------------
    def measure_floor(self) -> None:
        """Pick the fastest batch size and memory format for plain forward passes, then time ``budget`` images.

        Both layouts are tried because on a CPU a channels-last batch can run the same convolutions about twice
        as fast as a contiguous one, and peers differ in which one they happen to build (lime's HWC arrays,
        permuted, are channels-last): the floor is the best the model itself can do.
        """
        sizes = (32, 64, 128, 256, 512) if self.device.type == "cuda" else (8, 16, 32, 64)
        formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
        if self.s.quick:
            sizes = sizes[1:3]
        per_image = {}
        with torch.inference_mode():
            for size in sizes:
                for name, memory_format in formats.items():
                    batch = self.x.expand(size, *self.x.shape).contiguous(memory_format=memory_format)
                    self.model(batch)
                    times = []
                    for _ in range(max(2, 32 // size)):
                        synchronize(self.device)
                        began = time.perf_counter()
                        self.model(batch)
                        synchronize(self.device)
                        times.append(time.perf_counter() - began)
                    per_image[size, name] = statistics.median(times) / size
        self.floor_batch, layout = min(per_image, key=per_image.__getitem__)
        batch = self.x.expand(self.floor_batch, *self.x.shape).contiguous(memory_format=formats[layout])
        full, rest = divmod(self.s.budget, self.floor_batch)

        def forward_budget() -> None:
            with torch.inference_mode():
                for _ in range(full):
                    self.model(batch)
                if rest:
                    self.model(batch[:rest])

        def one_batch() -> None:
            with torch.inference_mode():
                self.model(batch)

        self._forward_budget = forward_budget

        def run() -> Row:
            self.floor = self.timed(forward_budget, warmup=one_batch)
            best_other = min(value for (_, name), value in per_image.items() if name != layout)
            gain = best_other / per_image[self.floor_batch, layout]
            note = f"{gain:.1f}x faster than the best {'channels_last' if layout == 'contiguous' else 'contiguous'}"
            return Row("floor", "", "", self.floor, evals=self.s.budget, note=f"sweep: {note}")

        self.add(
            "forward-only floor", "torch", f"{self.s.budget} images, batch {self.floor_batch}, {layout}", run
        )

    # -- sampling methods ----------------------------------------------------------------------------------------
    def sampled(
        self, make: Callable[[int], Callable[[], Any]], ours: bool = False, paired: bool = False
    ) -> Timing:
        """Time ``make(budget)()``, warmed up by a smaller call ``make(warm-up budget)()``; with ``paired``, each
        run is followed by a run of the forward-only floor (see :func:`measure`).

        The warm-up only has to build the convolution kernels for each batch shape and, for livexai, let the
        adapter finish its batch-size trials (as a widget's first 1000-sample call does); for a peer, repeating
        a 15-second ResNet call for it would add minutes.
        """
        warm = min(self.s.budget, self.s.tuning_budget if ours else self.s.warmup_budget)
        floor = self._forward_budget if paired else None
        return self.timed(make(self.s.budget), warmup=make(warm), paired=floor)

    def our_superpixel_row(self, method: Callable[..., Any], autocast: torch.dtype | None = None) -> Row:
        """livexai's ``lime`` or ``kernel_shap`` on the shared superpixels, timed as :meth:`sampled` does;
        with ``autocast``, its forward passes run in that reduced precision."""
        from livexai import ModelAdapter

        model = self.model if autocast is None else ModelAdapter(self.model, autocast=autocast)

        def make(samples: int) -> Callable[[], Any]:
            return lambda: method(
                model, self.x, target=self.target, segments=self.segments, n_samples=samples, seed=0
            )

        timing = self.sampled(make, ours=True, paired=autocast is None)
        row = Row("", "", "", timing, evals=timing.result.n_evals, ours=autocast is None)
        row.note = self._tuned_plan(model if isinstance(model, ModelAdapter) else ModelAdapter(self.model))
        return row

    def _tuned_plan(self, adapter: Any) -> str:
        """The batch size and memory layout the adapter's CPU trials chose for this model (say why a row is slow)."""
        key = ("forward", tuple(self.x.shape), str(self.device), adapter.autocast)
        plan = adapter._known(key)  # private: a diagnostic only
        if plan is None:
            return ""
        size, layout = plan
        return f"tuned batches of {size}, {str(layout).removeprefix('torch.')}"

    def reduced_precision_row(self, group: str, method: Callable[..., Any]) -> Row:
        """livexai in bfloat16 autocast, with the error it introduces: its weights against the float32 run of the
        same seed, set beside the sampling noise (the float32 weights of another seed)."""
        from livexai.metrics import rank_correlation

        full = next(row for row in reversed(self.rows) if row.group == group and row.ours and row.timing)
        reference = full.timing.result.weights
        row = self.our_superpixel_row(method, torch.bfloat16)
        other_seed = method(
            self.model, self.x, target=self.target, segments=self.segments, n_samples=self.s.budget, seed=1
        ).weights
        scale = float(reference.abs().max())

        def gap(weights: torch.Tensor) -> str:
            return f"{float((weights - reference).abs().max()) / scale:.1%}"

        row.note = (
            f"weights vs the float32 run of the same seed: max gap {gap(row.timing.result.weights)} of the largest "
            f"weight, Spearman {rank_correlation(row.timing.result.weights, reference):.3f}; another seed in "
            f"float32: {gap(other_seed)}, Spearman {rank_correlation(other_seed, reference):.3f}"
        )
        return row

    def lime_rows(self) -> None:
        n = self.s.budget

        def ours() -> Row:
            return self.our_superpixel_row(_ours("lime").lime)

        self.add("LIME", "livexai", f"{n} samples, {self.k} superpixels, blur baseline", ours)
        self.add(
            "LIME",
            "livexai, bf16 autocast",
            "as above, ModelAdapter(model, autocast=torch.bfloat16)",
            lambda: self.reduced_precision_row("LIME", _ours("lime").lime),
        )

        image = self.x.permute(1, 2, 0).cpu().numpy().astype(np.float64)

        def classifier(images: np.ndarray) -> np.ndarray:
            """What lime users write: HWC numpy batch -> torch (channels-last in memory) -> probabilities."""
            batch = torch.from_numpy(images).permute(0, 3, 1, 2).to(self.device, torch.float32)
            with torch.inference_mode():
                return torch.softmax(self.model(batch), dim=1).cpu().numpy()

        for batch_size in (10, 100):

            def peer(batch_size: int = batch_size) -> Row:
                from lime.lime_image import LimeImageExplainer

                def make(samples: int) -> Callable[[], Any]:
                    def fn() -> Any:
                        explainer = LimeImageExplainer(random_state=0)
                        with quiet_peers():
                            return explainer.explain_instance(
                                image,
                                classifier,
                                labels=(self.target,),
                                top_labels=None,
                                num_samples=samples,
                                batch_size=batch_size,
                                segmentation_fn=lambda _: self.segments_np,
                            )

                    return fn

                return Row("", "", "", self.sampled(make), evals=n)

            self.add("LIME", "lime LimeImageExplainer", f"batch_size={batch_size}, mean-colour hide", peer)

        self.add("LIME", "Captum Lime", "", lambda: self._captum_sampler("Lime"))

    def _captum_sampler(self, name: str) -> Row:
        """Captum ``Lime`` or ``KernelShap`` on the shared superpixels, at its fastest perturbations_per_eval."""
        import captum.attr

        explainer = getattr(captum.attr, name)(self.model)
        mask = self.segments[None, None]

        def run(ppe: int, samples: int) -> Callable[[], Any]:
            def fn() -> Any:
                with quiet_peers():
                    return explainer.attribute(
                        self.x[None],
                        baselines=0.0,
                        target=self.target,
                        feature_mask=mask,
                        n_samples=samples,
                        perturbations_per_eval=ppe,
                    )

            return fn

        ppe = self._best_ppe(run)
        timed = self.timed(run(ppe, self.s.budget), warmup=run(ppe, min(self.s.pilot, self.s.budget)))
        row = Row("", "", "", timed, evals=self.s.budget)
        row.setting = f"perturbations_per_eval={ppe}" + self._ppe_note()
        return row

    def _best_ppe(self, run: Callable[[int, int], Callable[[], Any]]) -> int:
        """The fastest ``perturbations_per_eval`` of a few, from one short pilot run each (after a warm-up).

        The pilots double as the warm-up of the timed runs (every batch shape has been through the model).
        """
        candidates = _candidates(self.device, self.s.quick)
        pilot = min(self.s.budget, max(self.s.pilot, max(candidates)))  # at least one full batch of each
        run(candidates[0], pilot)()  # warm-up
        if len(candidates) == 1:
            return candidates[0]
        times = {}
        for ppe in candidates:
            fn = run(ppe, pilot)
            began = time.perf_counter()
            fn()
            synchronize(self.device)
            times[ppe] = time.perf_counter() - began
        return min(times, key=times.__getitem__)

    def _ppe_note(self) -> str:
        candidates = _candidates(self.device, self.s.quick)
        if len(candidates) == 1:
            return ""
        return f" (fastest of {'/'.join(map(str, candidates))})"

    def kernel_shap_rows(self) -> None:
        n = self.s.budget

        def ours() -> Row:
            return self.our_superpixel_row(_ours("shap").kernel_shap)

        self.add("KernelSHAP", "livexai", f"{n} samples, {self.k} superpixels, blur baseline", ours)
        self.add(
            "KernelSHAP",
            "livexai, bf16 autocast",
            "as above, ModelAdapter(model, autocast=torch.bfloat16)",
            lambda: self.reduced_precision_row("KernelSHAP", _ours("shap").kernel_shap),
        )

        def shap_peer() -> Row:
            import shap

            baseline = torch.zeros_like(self.x)
            chunk = max(self.floor_batch, 1)

            def game(z: np.ndarray) -> np.ndarray:
                masks = torch.from_numpy(z).to(self.device, torch.float32)
                with torch.inference_mode():
                    out = [
                        self.model(_masked(self.x, baseline, self.segments, part))[:, self.target]
                        for part in masks.split(chunk)
                    ]
                return torch.cat(out).cpu().numpy()

            def make(samples: int) -> Callable[[], Any]:
                def fn() -> Any:
                    explainer = shap.KernelExplainer(game, np.zeros((1, self.k)))
                    with quiet_peers():
                        return explainer.shap_values(
                            np.ones((1, self.k)), nsamples=samples, l1_reg=False, silent=True
                        )

                return fn

            return Row("", "", "", self.sampled(make), evals=n)

        self.add(
            "KernelSHAP",
            "shap KernelExplainer",
            f"on superpixel masks, l1_reg=False, model in batches of {max(self.floor_batch, 1)}",
            shap_peer,
        )
        self.add("KernelSHAP", "Captum KernelShap", "", lambda: self._captum_sampler("KernelShap"))

    # -- gradient methods ----------------------------------------------------------------------------------------
    def _background(self, size: int) -> torch.Tensor:
        """``size`` reference images seeded by the size: GradientSHAP and DeepSHAP rows share them."""
        generator = torch.Generator().manual_seed(size)
        return (torch.randn(size, *self.x.shape, generator=generator) * 0.5).to(self.device)

    def gradient_shap_rows(self) -> None:
        m = self.s.grad_samples
        for size in self.s.backgrounds:
            background = self._background(size)
            setting = f"background {size}, {m} samples"

            def ours(background: torch.Tensor = background) -> Row:
                gradient_shap = _ours("gradients").gradient_shap
                timing = self.timed_gradient(
                    lambda: gradient_shap(
                        self.model, self.x, background=background, target=self.target, n_samples=m, seed=0
                    )
                )
                return Row("", "", "", timing, evals=timing.result.n_evals, ours=True)

            def captum(background: torch.Tensor = background) -> Row:
                from captum.attr import GradientShap

                explainer = GradientShap(self.model)
                return Row(
                    "",
                    "",
                    "",
                    self.timed_gradient(
                        lambda: explainer.attribute(
                            self.x[None], baselines=background, n_samples=m, stdevs=0.0, target=self.target
                        )
                    ),
                    evals=m,
                )

            def shap_peer(background: torch.Tensor = background) -> Row:
                import shap

                def fn() -> Any:
                    with quiet_peers():
                        explainer = shap.GradientExplainer(self.model, background, batch_size=m)
                        return explainer.shap_values(self.x[None], nsamples=m, ranked_outputs=1, rseed=0)

                return Row("", "", "", self.timed_gradient(fn), evals=m)

            self.add("GradientSHAP", "livexai", setting, ours)
            self.add("GradientSHAP", "Captum GradientShap", setting + ", stdevs=0", captum)
            self.add(
                "GradientSHAP",
                "shap GradientExplainer",
                setting + ", ranked_outputs=1, incl. constructor",
                shap_peer,
            )

    def deep_shap_rows(self) -> None:
        for size in self.s.backgrounds:
            background = self._background(size)
            setting = f"background {size}"

            def ours(background: torch.Tensor = background) -> Row:
                deep_shap = _ours("deep").deep_shap
                timing = self.timed_gradient(
                    lambda: deep_shap(self.model, self.x, background=background, target=self.target)
                )
                gap = abs(timing.result.params["delta"])
                return Row("", "", "", timing, evals=timing.result.n_evals, ours=True, note=f"gap {gap:.1e}")

            def captum(background: torch.Tensor = background) -> Row:
                from captum.attr import DeepLiftShap

                def fn() -> Any:
                    with quiet_peers():
                        return DeepLiftShap(self.model).attribute(
                            self.x[None],
                            baselines=background,
                            target=self.target,
                            return_convergence_delta=True,
                        )

                timing = self.timed_gradient(fn)
                return Row(
                    "",
                    "",
                    "",
                    timing,
                    evals=2 * len(background),
                    note=f"gap {float(timing.result[1].abs().max()):.1e}",
                )

            def shap_peer(background: torch.Tensor = background) -> Row:
                import shap

                def fn() -> Any:
                    with quiet_peers():
                        explainer = shap.DeepExplainer(self.model, background)
                        return explainer.shap_values(self.x[None], ranked_outputs=1, check_additivity=False)

                return Row("", "", "", self.timed_gradient(fn), evals=2 * len(background))

            self.add("DeepSHAP", "livexai", setting, ours)
            self.add("DeepSHAP", "Captum DeepLiftShap", setting, captum)
            self.add(
                "DeepSHAP", "shap DeepExplainer", setting + ", ranked_outputs=1, incl. constructor", shap_peer
            )

    def integrated_gradients_rows(self) -> None:
        steps = self.s.grad_samples

        def ours() -> Row:
            integrated_gradients = _ours("gradients").integrated_gradients
            timing = self.timed_gradient(
                lambda: integrated_gradients(self.model, self.x, target=self.target, n_steps=steps)
            )
            return Row("", "", "", timing, evals=timing.result.n_evals, ours=True)

        def captum() -> Row:
            from captum.attr import IntegratedGradients

            explainer = IntegratedGradients(self.model)
            return Row(
                "",
                "",
                "",
                self.timed_gradient(
                    lambda: explainer.attribute(
                        self.x[None], baselines=0.0, target=self.target, n_steps=steps
                    )
                ),
                evals=steps,
            )

        self.add("Integrated gradients", "livexai", f"{steps} steps, zero baseline", ours)
        self.add(
            "Integrated gradients", "Captum IntegratedGradients", f"{steps} steps, zero baseline", captum
        )

    def grad_cam_rows(self) -> None:
        layer = self.model.cam_layer
        size = tuple(self.x.shape[-2:])

        def ours() -> Row:
            grad_cam = _ours("cam").grad_cam
            timing = self.timed(lambda: grad_cam(self.model, self.x, layer=layer, target=self.target))
            return Row("", "", "", timing, evals=timing.result.n_evals, ours=True)

        def captum() -> Row:
            from captum.attr import LayerAttribution, LayerGradCam

            explainer = LayerGradCam(self.model, layer)

            def fn() -> torch.Tensor:
                low = explainer.attribute(self.x[None], target=self.target, relu_attributions=True)
                return LayerAttribution.interpolate(low, size, "bilinear")

            return Row("", "", "", self.timed(fn), evals=1)

        def pytorch_grad_cam() -> Row:
            grad_cam_class, output_target, note = _grad_cam_package()

            def fn() -> np.ndarray:
                with grad_cam_class(model=self.model, target_layers=[layer]) as cam:
                    return cam(input_tensor=self.x[None], targets=[output_target(self.target)])

            return Row("", "", "", self.timed(fn), evals=1, note=note)

        self.add("Grad-CAM", "livexai", "upsampled to the input", ours)
        self.add("Grad-CAM", "Captum LayerGradCam", "+ LayerAttribution.interpolate", captum)
        self.add("Grad-CAM", "pytorch-grad-cam GradCAM", "incl. hook set-up and release", pytorch_grad_cam)

    # -- segmentation --------------------------------------------------------------------------------------------
    def segmentation_rows(self) -> None:
        image = self.case.image

        def ours() -> Row:
            segment = _ours("segmentation").segment
            timing = self.timed(lambda: segment(self.x, N_SEGMENTS, method="slic", compactness=10.0))
            count = int(torch.unique(timing.result).numel())
            return Row("", "", "", timing, note=f"{count} segments", ours=True)

        def skimage_slic() -> Row:
            from skimage.segmentation import slic

            timing = self.timed(lambda: slic(image, n_segments=N_SEGMENTS, compactness=10.0, start_label=0))
            return Row("", "", "", timing, note=f"{len(np.unique(timing.result))} segments")

        def skimage_quickshift() -> Row:
            from skimage.segmentation import quickshift

            timing = self.timed(lambda: quickshift(image, kernel_size=4, max_dist=200, ratio=0.2))
            return Row("", "", "", timing, note=f"{len(np.unique(timing.result))} segments")

        self.add("Segmentation", "livexai segment", f"slic, n_segments={N_SEGMENTS}, on x's device", ours)
        self.add(
            "Segmentation", "scikit-image slic", f"n_segments={N_SEGMENTS}, compactness=10", skimage_slic
        )
        self.add("Segmentation", "scikit-image quickshift", "lime's defaults", skimage_quickshift)

    def run_all(self, groups: Sequence[str] = GROUPS) -> list[Row]:
        """The forward floor, then each of ``groups`` (names from :data:`GROUPS`), then the floor again."""
        self.measure_floor()
        for group in groups:
            getattr(self, f"{group}_rows")()
        self.recheck_floor()
        return self.rows

    def recheck_floor(self) -> None:
        """Time the floor again at the end: a big change means the machine was busy and the ratios are unsure.

        The lower of the two is kept as the floor (the best the model did); the floor row says both.
        """
        first = self.floor
        if first is None or self._forward_budget is None:
            return
        second = self.timed(self._forward_budget)
        change = second.seconds / first.seconds - 1
        row = next(row for row in self.rows if row.group == "forward-only floor")
        row.note += f"; again at the end: {_format_seconds(second.seconds)} ({change:+.0%})"
        if abs(change) > 0.2:
            row.note += " — the machine was busy: treat these numbers as rough"
            self.unsteady = True
        if second.seconds < first.seconds:
            self.floor = row.timing = second


# ---------------------------------------------------------------------------------------------------------------
# Report


def _quartiles(timing: Timing) -> str:
    """``", middle half a–b"`` of the paired ratios, with enough pairs to say it."""
    ratios = timing.paired_ratios
    if len(ratios) < 4:
        return ""
    low, _, high = statistics.quantiles(ratios, n=4)
    return f", middle half {_ratio(low)}–{_ratio(high)}"


def _ratio(value: float) -> str:
    return f"{value:.2f}" if value >= 0.01 else f"{value:.4f}"


def _format_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _comparable(row: Row) -> tuple[str, str]:
    """Rows compared with each other: one group, and for the background methods one background size."""
    by_background = row.group in ("GradientSHAP", "DeepSHAP")
    return row.group, row.setting.split(",")[0] if by_background else ""


def table(rows: list[Row], floor: Timing | None) -> str:
    """Markdown: one line per implementation; ``vs livexai`` is the peer's time over ours (> 1: we are faster)."""
    ours_by_group: dict[tuple[str, str], float] = {}
    for row in rows:
        if row.ours and row.timing is not None:
            ours_by_group[_comparable(row)] = row.timing.seconds
    lines = []
    for row in rows:
        timing = row.timing
        ours = ours_by_group.get(_comparable(row))
        if timing is None:
            ratio, times = "–", "–"
        else:
            ratio = "1.00" if row.ours else (_ratio(timing.seconds / ours) if ours else "–")
            times = f"{timing.runs}"
        x_floor = "–"
        if timing is not None and timing.paired_ratio is not None:
            x_floor = f"{_ratio(timing.paired_ratio)} (paired{_quartiles(timing)})"
        elif timing is not None and floor is not None and row.group != "Segmentation":
            x_floor = _ratio(timing.seconds / floor.seconds)
        lines.append(
            [
                row.group,
                f"**{row.impl}**" if row.ours else row.impl,
                row.setting,
                _format_seconds(timing.seconds) if timing else "–",
                times,
                str(row.evals) if row.evals is not None else "–",
                ratio,
                x_floor,
                row.note,
            ]
        )
    header = [
        "method",
        "implementation",
        "setting",
        "median",
        "runs",
        "evals",
        "vs livexai",
        "× floor",
        "note",
    ]
    return markdown_table(header, lines)


def report(
    results: dict[str, tuple[Case, Bench]],
    settings: Settings,
    device: torch.device,
    command: str,
    seconds: float,
) -> str:
    parts = [
        f"## Speed against the peers: {'GPU' if device.type == 'cuda' else 'CPU'}",
        "",
        *machine_lines(device, PEERS),
        f"- Budget: {settings.budget} evaluations per sampling method, {settings.grad_samples} samples/steps per "
        f"gradient method. Each time: median of {settings.min_runs} to {settings.max_runs} runs after one "
        f"warm-up call, repeating until the runs add up to {settings.max_seconds:g} s "
        f"({settings.grad_max_seconds:g} s for gradient methods): a 1000-sample ResNet run, itself the sum of "
        "~100 batches, is timed once; a call under 50 ms (Grad-CAM) is repeated within each run until the run "
        "lasts about 50 ms, and the time per call is reported.",
        "- `vs livexai` = peer's time / livexai's time (above 1: livexai is faster). `× floor` = time / the "
        "forward-only floor of the same model. `(paired)`: livexai's float32 sampling rows time a floor run right "
        "after each of their runs and give the median of the ratios, so a drift of the machine's speed during the "
        "benchmark (the floor moved by up to 7 % between its start and end) does not enter them; up to "
        f"{settings.paired_max_runs} pairs, and the middle half of their ratios (the quartiles) says how much they "
        "moved.",
        "",
    ]
    measured = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    for name, (case, bench) in results.items():
        shape = "x".join(map(str, case.x.shape))
        parts += [
            f"### {name} ({shape}), target class {bench.target}, {bench.k} superpixels",
            "",
            f"Measured {measured} by `{command}` ({seconds / 60:.1f} min for all its models).",
            "",
            table(bench.rows, bench.floor),
            "",
        ]
        if bench.unsteady:
            parts += [
                "> The forward-only floor moved by more than 20 % between the start and the end of this model's "
                "run: something else was using the CPU. Rerun on a quiet machine before trusting these ratios.",
                "",
            ]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.splitlines()[0])
    add_run_arguments(parser, "smoke run: fewer samples and repeats")
    parser.add_argument("--models", default=None, help=f"comma-separated, from {','.join(MODEL_NAMES)}")
    parser.add_argument(
        "--groups",
        default=None,
        help=f"comma-separated, from {','.join(GROUPS)}; prints only (a partial table)",
    )
    parser.add_argument("--budget", type=int, default=None, help="evaluations per sampling method (1000)")
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="stop repeating once runs add up to this (10)"
    )
    parser.add_argument(
        "--min-runs", type=int, default=None, help="timed runs at least, whatever they cost (1)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = start_run(args)
    if args.models:
        names = [name.strip() for name in args.models.split(",") if name.strip()]
    elif args.quick:
        names = ["small"]
    else:
        names = ["small", "resnet18"] + (["resnet50"] if device.type == "cuda" else [])
    unknown = sorted(set(names) - set(MODEL_NAMES))
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; expected some of {MODEL_NAMES}")
    settings = (
        Settings(
            budget=200,
            grad_samples=20,
            min_runs=1,
            max_runs=2,
            paired_max_runs=2,
            max_seconds=1.0,
            quick=True,
        )
        if args.quick
        else Settings()
    )
    if args.budget is not None:
        settings.budget = args.budget
    if args.max_seconds is not None:
        settings.max_seconds = args.max_seconds
    if args.min_runs is not None:
        settings.min_runs = args.min_runs
        settings.max_runs = max(settings.max_runs, args.min_runs)
        settings.paired_max_runs = max(settings.paired_max_runs, args.min_runs)
    groups = GROUPS
    if args.groups:
        groups = tuple(name.strip() for name in args.groups.split(",") if name.strip())
        if set(groups) - set(GROUPS):
            raise SystemExit(
                f"unknown group(s) {sorted(set(groups) - set(GROUPS))}; expected some of {GROUPS}"
            )
        args.no_write = True
    torch.manual_seed(0)
    began = time.perf_counter()
    results: dict[str, tuple[Case, Bench]] = {}
    for name in names:
        print(f"{name} on {device} (budget {settings.budget})", flush=True)
        case = make_case(name, device)
        bench = Bench(case, settings)
        bench.run_all(groups)
        results[name] = (case, bench)
    command = command_line("peers", argv)
    seconds = time.perf_counter() - began
    text = report(results, settings, device, command, seconds)
    finish_run(args, text, "peers-cuda" if device.type == "cuda" else "peers-cpu", seconds)


if __name__ == "__main__":
    main()
