"""Cost of the deletion and insertion curves against the forward-only floor of the same number of images.

    python -m benchmarks.faithfulness                      # ResNet-18 at 224x224, 50 steps, blur substrate
    python -m benchmarks.faithfulness --substrate road     # the same with ROAD's imputation
    python -m benchmarks.faithfulness --quick              # smoke run: the small CNN at 64x64

One Grad-CAM map (last residual stage) is scored by ``livexai.deletion`` and ``livexai.insertion`` with
``n_steps`` steps each; the floor pushes the same number of images through the model (``n_evals`` of both
curves, f(x) included) in batches of the fastest size and layout found by a short sweep, with nothing else.
``× floor`` is the curves' time over the floor's: the goal is at most 1.2. Printed only (RESULTS.md has no
section for it yet).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from livexai import grad_cam
from livexai.metrics import deletion, insertion

from ._common import add_run_arguments, machine_lines, markdown_table, measure, start_run, synchronize
from ._models import make_case

_SWEEP = {"cpu": (8, 16, 32, 64), "cuda": (32, 64, 128, 256)}
_LAYOUTS = (torch.contiguous_format, torch.channels_last)


def best_batch(
    model: torch.nn.Module, x: torch.Tensor, device: torch.device
) -> tuple[int, torch.memory_format]:
    """The batch size and memory layout with the lowest time per image for plain forward passes."""
    per_image: dict[tuple[int, torch.memory_format], float] = {}
    with torch.inference_mode():
        for size in _SWEEP[device.type]:
            for layout in _LAYOUTS:
                batch = x.expand(size, *x.shape).contiguous(memory_format=layout)
                runs = []
                for _ in range(3):  # the first run builds kernels; the median of three is kept
                    synchronize(device)
                    began = time.perf_counter()
                    model(batch)
                    synchronize(device)
                    runs.append(time.perf_counter() - began)
                per_image[size, layout] = statistics.median(runs) / size
    return min(per_image, key=per_image.__getitem__)


def forward_floor(model: torch.nn.Module, x: torch.Tensor, n_images: int, device: torch.device) -> float:
    """Median seconds to push ``n_images`` copies of ``x`` through ``model`` in the best batches."""
    size, layout = best_batch(model, x, device)
    batch = x.expand(size, *x.shape).contiguous(memory_format=layout)
    full, rest = divmod(n_images, size)

    def run() -> None:
        with torch.inference_mode():
            for _ in range(full):
                model(batch)
            if rest:
                model(batch[:rest])

    return measure(run, device=device, min_runs=3, max_seconds=20.0).seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_arguments(parser, "the small CNN at 64x64 instead of ResNet-18 at 224x224")
    parser.add_argument("--substrate", default="blur", help="blur, zero, mean or road (default: blur)")
    parser.add_argument("--steps", type=int, default=50, help="n_steps of each curve (default: 50)")
    args = parser.parse_args(argv)
    device = start_run(args)
    case = make_case("small" if args.quick else "resnet18", device)
    explanation = grad_cam(case.model, case.x, layer=case.model.cam_layer)

    def curves() -> tuple:
        options = {"n_steps": args.steps, "substrate": args.substrate}
        return deletion(case.model, case.x, explanation, **options), insertion(
            case.model, case.x, explanation, **options
        )

    timing = measure(curves, device=device, min_runs=3, max_seconds=30.0)
    down, up = timing.result
    n_images = down.n_evals + up.n_evals
    floor = forward_floor(case.model, case.x, n_images, device)
    rows = [
        ["deletion + insertion", f"{timing.seconds:.3f} s", str(n_images), f"{timing.seconds / floor:.2f}×"],
        ["forward-only floor", f"{floor:.3f} s", str(n_images), "1.00×"],
    ]
    print(f"## Deletion and insertion curves: {case.name} at {case.size}x{case.size}, {args.device}\n")
    print("\n".join(machine_lines(device)))
    settings = f"n_steps={args.steps}; substrate={args.substrate!r}; median of {timing.runs}"
    print(f"- Grad-CAM at {explanation.params['layer']}; {settings}\n")
    print(markdown_table(["what", "time", "images", "× floor"], rows))
    print(f"\ndeletion AUC {down.auc:.4f}, insertion AUC {up.auc:.4f} (target {down.target})")


if __name__ == "__main__":
    main()
