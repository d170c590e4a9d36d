"""Feature visualisation's time per step against one forward and backward pass of the model up to the layer.

    python -m benchmarks.featurevis           # ResNet-18 (random weights) up to layer3, 8 channels, 128², 256 steps
    python -m benchmarks.featurevis --quick   # 32 steps; writes nothing

Each step of ``livexai.feature_visualization`` renders the images from their parameters, transforms them (robust
recipe), runs the model up to the layer and takes the gradient back to the parameters. The floor is what no
implementation can skip: the model truncated at the layer (an ``nn.Sequential`` of its modules up to it, so no
hook either), one forward and one backward pass to the input on the same batch, in the faster of the two memory
layouts. ``× floor`` is feature visualisation's time per step (its whole call, set-up and final images included,
divided by the steps) over the floor's; the goal is at most 1.3.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import livexai
from livexai import models

from ._common import add_run_arguments, command_line, finish_run, machine_lines, markdown_table, start_run

LAYER = "layer3"
CHANNELS = list(range(8))
SIZE = 128
_LAYOUTS = {"contiguous": torch.contiguous_format, "channels-last": torch.channels_last}


def truncated(model: nn.Module, layer: str) -> nn.Sequential:
    """The model's top-level modules up to and including ``layer``, in order (a ResNet's forward is this chain)."""
    children = []
    for name, child in model.named_children():
        children.append(child)
        if name == layer:
            return nn.Sequential(*children)
    raise ValueError(f"{layer!r} is not a top-level module")


def floor_step(net: nn.Sequential, layout: torch.memory_format, repeats: int) -> float:
    """Median seconds of one forward pass of ``net`` and one backward pass to its input, for the same objective
    (each image's own channel mean)."""
    x = torch.rand(len(CHANNELS), 3, SIZE, SIZE).contiguous(memory_format=layout).requires_grad_()
    rows = torch.arange(len(CHANNELS))

    def step() -> None:
        out = net(x)
        torch.autograd.grad(out.mean(dim=(2, 3))[rows, torch.tensor(CHANNELS)].sum(), [x])

    step()  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def floor(net: nn.Sequential, repeats: int) -> tuple[float, dict[str, float]]:
    """The faster layout's time per step, and each layout's."""
    each = {name: floor_step(net, layout, repeats) for name, layout in _LAYOUTS.items()}
    return min(each.values()), each


def run(steps: int) -> str:
    model = models.resnet18_like()
    net = truncated(model, LAYER)
    repeats = 5 if steps < 256 else 10
    before, layouts = floor(net, repeats)
    print(
        f"floor: {before * 1000:.1f} ms per step ({', '.join(f'{k} {v * 1000:.1f} ms' for k, v in layouts.items())})"
    )
    variants = {
        "robust": {},
        "naive": {"transforms": None, "parameterization": "pixel"},
    }
    rows = []
    for name, options in variants.items():
        call = dict(objective="channel", size=SIZE, **options)
        livexai.feature_visualization(model, LAYER, CHANNELS, steps=4, **call)  # warm-up
        vis = livexai.feature_visualization(model, LAYER, CHANNELS, steps=steps, **call)
        per_step = vis.elapsed_s / steps
        gain = float((vis.activation / vis.random_activation.clamp_min(1e-6)).median())
        print(
            f"{name}: {vis.elapsed_s:.1f} s, {per_step * 1000:.1f} ms per step, {per_step / before:.2f}x floor"
        )
        rows.append([name, f"{vis.elapsed_s:.1f} s", f"{per_step * 1000:.1f} ms", f"{gain:.0f}x", per_step])
    after, _ = floor(net, repeats)
    drift = after / before - 1
    print(f"floor again: {after * 1000:.1f} ms ({drift:+.0%})")
    contiguous = layouts["contiguous"]
    table = [
        [
            "forward + backward floor",
            "–",
            f"{before * 1000:.1f} ms",
            "–",
            "1.00",
            f"{before / contiguous:.2f}",
        ]
    ]
    table += [[*row[:4], f"{row[4] / before:.2f}", f"{row[4] / contiguous:.2f}"] for row in rows]
    note = " **The floor moved by more than 20 %: the machine was busy; rerun.**" if abs(drift) > 0.2 else ""
    header = [
        "implementation",
        f"{steps} steps",
        "per step",
        "activation / random image's",
        "× floor",
        "× contiguous",
    ]
    return "\n".join(
        [
            "## Feature visualisation: CPU",
            "",
            *machine_lines("cpu"),
            f"- Measured by `{command_line('featurevis', None)}`: `resnet18_like()` (random weights), layer "
            f"`{LAYER}`, {len(CHANNELS)} channels at once (one image each), {SIZE}×{SIZE}, `objective='channel'`. "
            "Robust: Fourier parameterisation, decorrelated colour, random shift/scale/rotation each step; naive: "
            "`transforms=None, parameterization='pixel'`.",
            "- Floor: the model truncated after the layer (`nn.Sequential` of its modules), one forward and one "
            f"backward pass to the input on the same {len(CHANNELS)} images, median of {repeats} "
            f"({', '.join(f'{k} {v * 1000:.1f} ms' for k, v in layouts.items())}; the faster is the floor); "
            f"again at the end: {after * 1000:.1f} ms ({drift:+.0%}).{note}",
            "- Per step: the whole call (set-up, the random image's activation, the final images) over the steps; "
            "goal ≤ 1.3× the floor. `× contiguous`: against the floor in the contiguous layout, the one "
            "`feature_visualization` runs in.",
            "",
            markdown_table(header, table),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.featurevis", description=__doc__.splitlines()[0]
    )
    add_run_arguments(parser, "32 steps instead of 256; writes nothing")
    args = parser.parse_args(argv)
    if args.device != "cpu":
        raise SystemExit("--device cuda: this benchmark has a CPU section only so far")
    start_run(args)
    began = time.perf_counter()
    text = run(32 if args.quick else 256)
    finish_run(args, text, "featurevis", time.perf_counter() - began)


if __name__ == "__main__":
    main()
