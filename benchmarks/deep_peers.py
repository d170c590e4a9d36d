"""DeepSHAP against Captum's DeepLiftShap and shap's DeepExplainer on the architectures their issue trackers report.

    python -m benchmarks.deep_peers            # writes the "deep-architectures" section of RESULTS.md
    python -m benchmarks.deep_peers --no-write

For each model of ``tests/test_deep.py`` (functional ``F.relu``/``F.max_pool2d``, a reused in-place ReLU, a
residual ``out += identity``, modules built in ``forward``, gates and norms, a ResNet-18-shaped net, several
non-linear heads, attention) each implementation explains the same input against the same background. The table
gives the summation gap ``|Σ attributions − (f(x) − E[f(background)])|`` relative to ``1 + |f(x)|``, or the error
raised. A correct DeepSHAP has a gap at float rounding (~1e-7).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import livexai

from ._common import add_run_arguments, command_line, finish_run, machine_lines, markdown_table, start_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_deep import CASES  # the test suite's architectures: one definition for both

Explain = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor]


def _ours(model: nn.Module, x: torch.Tensor, background: torch.Tensor, target: int) -> torch.Tensor:
    return livexai.deep_shap(model, x, background=background, target=target).params["per_channel"]


def _captum(model: nn.Module, x: torch.Tensor, background: torch.Tensor, target: int) -> torch.Tensor:
    from captum.attr import DeepLiftShap

    return DeepLiftShap(model).attribute(x[None], baselines=background, target=target)[0].detach()


def _shap(model: nn.Module, x: torch.Tensor, background: torch.Tensor, target: int) -> torch.Tensor:
    import shap

    values = shap.DeepExplainer(model, background).shap_values(x[None], check_additivity=False)
    array = torch.as_tensor(values[target] if isinstance(values, list) else values[..., target])
    return array.reshape(x.shape).float()


IMPLEMENTATIONS: dict[str, Explain] = {
    "livexai deep_shap": _ours,
    "Captum DeepLiftShap": _captum,
    "shap DeepExplainer": _shap,
}


def gap(model: nn.Module, x: torch.Tensor, background: torch.Tensor, explain: Explain) -> str:
    """The relative summation gap of one implementation on one model, or the error it raised."""
    with torch.no_grad():
        output = float(model(x[None])[0].max())
        target = int(model(x[None])[0].argmax())
        expected = float(model(x[None])[0, target] - model(background)[:, target].mean())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attributions = explain(model, x.clone(), background.clone(), target)
    except Exception as error:  # what a peer does on this model is the result
        message = str(error).splitlines()[0] if str(error) else ""
        return f"error: {type(error).__name__}: {message[:70]}"
    relative = abs(float(attributions.sum()) - expected) / (1 + abs(output))
    return f"{relative:.1e}"


def run() -> str:
    began = time.perf_counter()
    lines = []
    for name, (model, x, background) in CASES.items():
        model.eval()
        lines.append([name, *(gap(model, x, background, explain) for explain in IMPLEMENTATIONS.values())])
        print(" | ".join(lines[-1]), flush=True)
    header = ["model", *IMPLEMENTATIONS]
    return "\n".join(
        [
            "## DeepSHAP on the architectures that break hook-based implementations",
            "",
            *machine_lines("cpu", ("captum", "shap")),
            f"- Measured by `{command_line('deep_peers', None)}` in {time.perf_counter() - began:.0f} s.",
            "- Each cell: |Σ attributions − (f(x) − E[f(background)])| / (1 + |f(x)|) for the top class, or the "
            "error raised. Float rounding is ~1e-7; anything above ~1e-4 means the attributions do not add up.",
            "",
            markdown_table(header, lines),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.deep_peers", description=__doc__.splitlines()[0]
    )
    add_run_arguments(parser, "same as a full run (it is quick)")
    args = parser.parse_args(argv)
    start_run(args)
    began = time.perf_counter()
    text = run()
    finish_run(args, text, "deep-architectures", time.perf_counter() - began)


if __name__ == "__main__":
    main()
