"""KernelSHAP accuracy against exact Shapley values, and what progressive early stopping saves.

    python -m benchmarks.accuracy            # full: budgets 64..4096, 4 inputs x 4 seeds (a few minutes)
    python -m benchmarks.accuracy --quick    # smoke run: 3 budgets, 2 inputs x 2 seeds

The game: a random 14-feature ReLU MLP (``_models.TabularMLP``), output 1, explained against a background of 5
rows, with the interventional value of a coalition ``v(S) = mean_b f(x_S, b_rest)`` that
``shap.KernelExplainer`` uses. Exact Shapley values come from enumerating all ``2^14`` coalitions. Each
estimator gets the same budget of coalitions (each coalition costs one model row per background row):

- livexai ``kernel_shap(model, x, background=bg, n_samples=budget)``;
- ``shap.KernelExplainer(f, bg).shap_values(x, nsamples=budget, l1_reg=False)`` (its default l1_reg keeps only
  10 features when there are more);
- Captum ``KernelShap`` on the same game: Captum takes one baseline row, so its forward function receives the
  coalition indicators and returns ``v(S)``.

Error: mean absolute error over the 14 features against the exact values, averaged over inputs and seeds.
The section also compares the estimators from the literature at equal budget (:mod:`benchmarks.kernel_estimators`).
"""

from __future__ import annotations

import argparse
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._common import HERE, command_line, machine_lines, markdown_table, quiet_peers, write_section
from ._models import TabularMLP

N_FEATURES = 14
N_BACKGROUND = 5
TARGET = 1
PLOT = HERE / "kernel_shap_accuracy.png"
PEERS = ("captum", "shap", "lime", "matplotlib")


@dataclass
class Problem:
    """A model, a background ``(B, F)``, inputs ``(N, F)`` and their exact Shapley values ``(N, F)`` float64."""

    model: TabularMLP
    background: torch.Tensor
    inputs: torch.Tensor
    exact: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.exact = torch.stack([exact_shapley(self.game(x)) for x in self.inputs])

    def game(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v(z)``: coalitions ``z`` ``(N, F)`` (1 = take the feature from ``x``) -> values ``(N,)`` float64."""
        background = self.background

        def value(z: torch.Tensor) -> torch.Tensor:
            z = z.to(background.dtype)[:, None, :]  # (N, 1, F)
            rows = background[None] * (1 - z) + x[None, None] * z  # (N, B, F)
            with torch.inference_mode():
                out = self.model(rows.reshape(-1, x.shape[0]))[:, TARGET]
            return out.reshape(z.shape[0], -1).double().mean(1)

        return value


def make_problem(n_inputs: int, seed: int = 0) -> Problem:
    generator = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn(n_inputs, N_FEATURES, generator=generator)
    background = torch.randn(N_BACKGROUND, N_FEATURES, generator=generator)
    return Problem(TabularMLP(N_FEATURES, seed=seed), background, inputs)


def exact_shapley(value: Callable[[torch.Tensor], torch.Tensor], n: int = N_FEATURES) -> torch.Tensor:
    """Exact Shapley values ``(n,)`` by enumerating all ``2^n`` coalitions (bit ``i`` of the code = feature i)."""
    codes = torch.arange(2**n)
    members = (codes[:, None] >> torch.arange(n)) & 1  # (2^n, n)
    v = torch.cat([value(chunk) for chunk in members.split(4096)])
    size = members.sum(1)
    weight = torch.tensor(
        [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)],
        dtype=torch.float64,
    )
    phi = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        without = codes[members[:, i] == 0]
        phi[i] = (weight[size[without]] * (v[without | (1 << i)] - v[without])).sum()
    return phi


# ---------------------------------------------------------------------------------------------------------------
# The estimators: (problem, row index, budget, seed) -> (estimate (F,) float64, coalitions evaluated)


Estimate = tuple[
    np.ndarray, int, "np.ndarray | None"
]  # values (F,), coalitions evaluated, stderr (F,) or None


def ours(problem: Problem, i: int, budget: int, seed: int, **extra: object) -> Estimate:
    from livexai.shap import kernel_shap

    explanation = kernel_shap(
        problem.model,
        problem.inputs[i],
        background=problem.background,
        target=TARGET,
        n_samples=budget,
        seed=seed,
        **extra,
    )
    stderr = None if explanation.stderr is None else explanation.stderr.double().numpy()
    return explanation.attributions.double().numpy(), explanation.n_evals // N_BACKGROUND, stderr


def ours_regression(problem: Problem, i: int, budget: int, seed: int) -> Estimate:
    """livexai's stratified design and Shapley-kernel regression with third-order terms (the default until the
    Gaussian-process estimator)."""
    return ours(problem, i, budget, seed, estimator="regression")


def ours_additive(problem: Problem, i: int, budget: int, seed: int) -> Estimate:
    """livexai's regression without its third-order interaction terms: the plain constrained regression."""
    return ours(problem, i, budget, seed, interactions=False)


def shap_kernel(problem: Problem, i: int, budget: int, seed: int) -> Estimate:
    import shap

    def f(rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return problem.model(torch.from_numpy(rows).float())[:, TARGET].double().numpy()

    np.random.seed(seed)  # KernelExplainer samples with numpy's global generator
    explainer = shap.KernelExplainer(f, problem.background.numpy())
    with quiet_peers():
        values = explainer.shap_values(
            problem.inputs[i].numpy()[None], nsamples=budget, l1_reg=False, silent=True
        )
    return np.ravel(values).astype(np.float64), budget, None


def captum_kernel(problem: Problem, i: int, budget: int, seed: int) -> Estimate:
    from captum.attr import KernelShap

    value = problem.game(problem.inputs[i])
    torch.manual_seed(seed)  # Captum samples with torch's global generator
    explainer = KernelShap(lambda z: value(z).float())
    with quiet_peers():
        values = explainer.attribute(
            torch.ones(1, N_FEATURES),
            baselines=torch.zeros(1, N_FEATURES),
            n_samples=budget,
            perturbations_per_eval=budget,
        )
    return values[0].double().numpy(), budget, None


ESTIMATORS: dict[str, Callable[..., Estimate]] = {
    "livexai kernel_shap (default: estimator='gp')": ours,
    "livexai, estimator='regression'": ours_regression,
    "livexai, regression, interactions=False": ours_additive,
    "shap KernelExplainer (l1_reg=False)": shap_kernel,
    "Captum KernelShap": captum_kernel,
}


# ---------------------------------------------------------------------------------------------------------------
# Error against budget


@dataclass
class Curve:
    """Errors of one estimator: ``errors[budget]`` is a list over (input, seed)."""

    name: str
    errors: dict[int, list[float]] = field(default_factory=dict)
    coverage: dict[int, list[float]] = field(
        default_factory=dict
    )  # share of features with |error| <= 2 stderr
    seconds: float = 0.0
    calls: int = 0
    note: str = ""


def error_curves(problem: Problem, budgets: list[int], seeds: int) -> list[Curve]:
    curves = []
    for name, estimator in ESTIMATORS.items():
        curve = Curve(name)
        began = time.perf_counter()
        print(f"  {name} ...", end="", flush=True)
        try:
            for budget in budgets:
                errors, coverage = [], []
                for i in range(len(problem.inputs)):
                    for seed in range(seeds):
                        estimate, _, stderr = estimator(problem, i, budget, seed)
                        gap = np.abs(estimate - problem.exact[i].numpy())
                        errors.append(float(gap.mean()))
                        if stderr is not None:
                            coverage.append(float((gap <= 2 * stderr + 1e-12).mean()))
                        curve.calls += 1
                curve.errors[budget] = errors
                if coverage:
                    curve.coverage[budget] = coverage
        except ImportError as error:
            curve.note = f"skipped: {error}"
        curve.seconds = time.perf_counter() - began
        print(f" {curve.note or f'{curve.seconds:.1f} s'}", flush=True)
        curves.append(curve)
    return curves


def error_table(curves: list[Curve], budgets: list[int], scale: float) -> str:
    shown = [curve for curve in curves if curve.errors]
    header = ["coalitions", *[f"{curve.name}" for curve in shown]]
    rows = []
    for budget in budgets:
        cells = [str(budget)]
        for curve in shown:
            errors = curve.errors.get(budget)
            cells.append(f"{np.mean(errors):.4f} ± {np.std(errors):.4f}" if errors else "–")
        rows.append(cells)
    table = markdown_table(header, rows)
    relative = [
        f"{curve.name}: {np.mean(curve.errors[budgets[-1]]) / scale:.1%}"
        for curve in shown
        if budgets[-1] in curve.errors
    ]
    notes = [f"- {curve.name}: {curve.note}" for curve in curves if curve.note]
    speed = "; ".join(f"{curve.name} {curve.seconds / curve.calls:.3f} s" for curve in shown if curve.calls)
    calibrated = [curve for curve in shown if curve.coverage]
    if calibrated:
        header = ["coalitions", *[f"{curve.name}: within ±2 stderr" for curve in calibrated]]
        rows = [
            [str(budget), *[f"{np.mean(curve.coverage[budget]):.0%}" for curve in calibrated]]
            for budget in budgets
            if all(budget in curve.coverage for curve in calibrated)
        ]
        notes += [
            "",
            "Are livexai's standard errors honest? Share of features whose true error is within ±2 reported "
            "standard errors (about 95% if they are; exact results report 0 and count as within):",
            "",
            markdown_table(header, rows),
        ]
    notes += ["", f"Mean time per call (this machine, all budgets): {speed}."]
    return "\n".join(
        [
            table,
            "",
            f"Mean |φ| is {scale:.4f}; error at {budgets[-1]} relative to it: " + "; ".join(relative),
            *notes,
        ]
    )


def plot(curves: list[Curve], budgets: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, ax = plt.subplots(figsize=(6, 4))
    for curve in curves:
        if not curve.errors:
            continue
        xs = [b for b in budgets if b in curve.errors]
        means = np.array([np.mean(curve.errors[b]) for b in xs])
        spread = np.array([np.std(curve.errors[b]) for b in xs])
        ax.plot(xs, means, marker="o", label=curve.name)
        ax.fill_between(xs, np.maximum(means - spread, 1e-9), means + spread, alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(budget) for budget in budgets])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_yscale("log")
    ax.set_xlabel("coalitions evaluated (budget)")
    ax.set_ylabel("mean |error| vs exact Shapley values")
    ax.set_title(f"KernelSHAP on a {N_FEATURES}-feature MLP, {N_BACKGROUND} background rows", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------------------------
# Early stopping


def early_stopping(problem: Problem, budget: int, tols: list[float], seeds: int) -> str:
    """KernelSHAP with ``tol``: coalitions used and error, against a fixed budget of the same size."""
    try:
        from livexai.shap import kernel_shap
    except ImportError as error:
        return f"Skipped: {error}."
    if "tol" not in inspect.signature(kernel_shap).parameters:
        return "Skipped: `livexai.shap.kernel_shap` has no `tol` argument."
    exact = problem.exact.numpy()
    rows = []
    full_used = None
    for tol in [None, *tols]:
        used, errors, fixed_errors = [], [], []
        for i in range(len(problem.inputs)):
            for seed in range(seeds):
                estimate, coalitions, _ = ours(problem, i, budget, seed, tol=tol)
                used.append(coalitions)
                errors.append(float(np.abs(estimate - exact[i]).mean()))
                if (
                    tol is not None
                ):  # the same number of coalitions, without stopping: what tol's choice costs
                    fixed, _, _ = ours(problem, i, max(coalitions, N_FEATURES), seed)
                    fixed_errors.append(float(np.abs(fixed - exact[i]).mean()))
        full_used = full_used or float(np.mean(used))
        rows.append(
            [
                "none" if tol is None else f"{tol:g}",
                f"{np.mean(used):.0f}",
                f"{1 - np.mean(used) / full_used:.0%}",
                f"{np.mean(errors):.4f}",
                f"{np.mean(fixed_errors):.4f}" if fixed_errors else "–",
            ]
        )
    header = ["tol", "coalitions used (mean)", "saved", "mean abs. error", "fixed budget of that size"]
    return "\n".join(
        [
            f"KernelSHAP (the tabular game above, budget {budget} coalitions, stopping once "
            "max stderr / (max φ − min φ) < tol):",
            "",
            markdown_table(header, rows),
        ]
    )


def _lime_case() -> tuple[torch.nn.Module, torch.Tensor, str]:
    """The trained demo CNN on a synthetic shape when its weights are installed, else the random small CNN."""
    try:
        from livexai import datasets, models

        images, _, _ = datasets.shapes(1)
        return (
            models.shapes_cnn(),
            images[0],
            "the shipped demo CNN (`models.shapes_cnn`) on `datasets.shapes`",
        )
    except Exception:  # weights not built: a random network still shows how many evaluations tol saves
        from ._models import make_case

        case = make_case("small")
        return case.model, case.x, "the random small CNN (demo weights not found)"


def lime_early_stopping(tols: list[float], budget: int = 1000, seeds: int = 3) -> str:
    """LIME with ``tol``: evaluations used, and how far its weights are from the same seed's full run."""
    try:
        from livexai.lime import lime
    except ImportError as error:
        return f"LIME: skipped: {error}."
    if "tol" not in inspect.signature(lime).parameters:
        return "LIME: skipped: `livexai.lime.lime` has no `tol` argument."
    model, x, described = _lime_case()
    runs = {seed: lime(model, x, n_samples=budget, seed=seed) for seed in range(seeds)}
    rows = [["none", f"{np.mean([r.n_evals for r in runs.values()]):.0f}", "0%", "0", "5.0/5"]]
    for tol in tols:
        evals, gaps, shared = [], [], []
        for seed, full in runs.items():
            exp = lime(model, x, n_samples=budget, seed=seed, tol=tol)
            spread = float(full.weights.max() - full.weights.min()) or 1.0
            evals.append(exp.n_evals / full.n_evals)
            gaps.append(float((exp.weights - full.weights).abs().max()) / spread)
            top = set(full.top_features(5).tolist())
            shared.append(len(top & set(exp.top_features(5).tolist())))
        rows.append(
            [
                f"{tol:g}",
                f"{np.mean(evals) * budget:.0f}",
                f"{1 - np.mean(evals):.0%}",
                f"{np.mean(gaps):.3f}",
                f"{np.mean(shared):.1f}/5",
            ]
        )
    header = [
        "tol",
        "evaluations (mean)",
        "saved",
        "max abs. Δweight / weight range",
        "top-5 superpixels shared",
    ]
    return "\n".join(
        [
            f"LIME ({described}, 50 superpixels, budget {budget}, {seeds} seeds; each compared with the same "
            "seed's run without tol):",
            "",
            markdown_table(header, rows),
        ]
    )


# ---------------------------------------------------------------------------------------------------------------
# Command line


ESTIMATOR_NOTES = """\
Error of each estimator divided by shap.KernelExplainer's on the same inputs and seeds (lower is better), from
`python -m benchmarks.kernel_estimators` (its docstring describes each estimator; all read the same tabulated
coalition values, so only the choice of coalitions and the fit differ).

The library's default up to 16 features is now the Gaussian-process estimator (`estimator="gp"`, last column): the
only one to reach issue 20's targets (≤ 0.5× from 128 coalitions, ≤ 0.4× from 1024). Its gain comes from which
coalitions it evaluates: the same fit on the stratified random design is no better than the regression. Its
prior's order variances were set by looking at this MLP family's spectrum and checked on another seed's model,
not tuned on these errors; the second table checks it on three games it was not set on. Stratified SVARM, which
averages `v` with no regression, is 4–5× worse than shap on this mostly additive game. Among the rest the fit
hardly matters below 512 coalitions (the best of 40 GP priors in hindsight was 3–7 % better than leave-one-out's
choice); the allocations (shap's, Leverage SHAP's, PySHAP*'s draws) differ by less than their spread over seeds,
and RAMC's split leaves each half too few pairs."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accuracy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 budgets, 2 inputs x 2 seeds")
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave RESULTS.md and the plot alone"
    )
    args = parser.parse_args(argv)
    from .kernel_estimators import comparison, generalisation, image_games  # they import this module's game

    budgets = [64, 256, 1024] if args.quick else [64, 128, 256, 512, 1024, 2048, 4096]
    n_inputs, seeds = (2, 2) if args.quick else (4, 4)
    torch.manual_seed(0)
    began = time.perf_counter()
    problem = make_problem(n_inputs)
    scale = float(problem.exact.abs().mean())
    print(f"exact Shapley values for {n_inputs} inputs: {time.perf_counter() - began:.1f} s")
    curves = error_curves(problem, budgets, seeds)
    print("estimators from the literature (benchmarks.kernel_estimators) ...")
    literature = comparison(
        problem, [64, 256, 1024] if args.quick else [64, 128, 256, 512, 1024, 2048], seeds * 4
    )
    print("the library's estimators on other games ...")
    others = generalisation([64, 128, 256, 512, 1024], 2 if args.quick else 3, 2 if args.quick else 4)
    print("the library's estimators on image games ...")
    images = image_games([64, 128, 256, 512], 2 if args.quick else 4, 2 if args.quick else 4)
    stopping = early_stopping(
        problem, 1024 if args.quick else 2048, [0.05, 0.02, 0.01], 1 if args.quick else 2
    )
    text = "\n".join(
        [
            "## KernelSHAP accuracy",
            "",
            *machine_lines("cpu", PEERS),
            f"- Command: `{command_line('accuracy', argv)}` ({(time.perf_counter() - began) / 60:.1f} min in all)",
            f"- A random {N_FEATURES}-feature ReLU MLP (output {TARGET}), {N_BACKGROUND} background rows, "
            f"{n_inputs} inputs × {seeds} seeds; each coalition costs {N_BACKGROUND} model rows. Exact values by "
            f"enumerating all 2^{N_FEATURES} coalitions. Cell: mean ± std over inputs and seeds of the mean "
            "absolute error over features.",
            "",
            error_table(curves, budgets, scale),
            "",
            "![KernelSHAP error against budget](kernel_shap_accuracy.png)",
            "",
            "### Estimators from the literature at equal budget",
            "",
            ESTIMATOR_NOTES,
            "",
            literature,
            "",
            "The library's two estimators on games the Gaussian-process prior was not set on "
            "(`python -m benchmarks.kernel_estimators --other-games`):",
            "",
            others,
            "",
            "And on image games, where an explanation's features are superpixels: the shipped shapes CNN, 14–16 SLIC "
            "superpixels removed by blurring or by the mean colour, exact values by evaluating all coalitions "
            "(`python -m benchmarks.kernel_estimators --images`):",
            "",
            images,
            "",
            "### Progressive early stopping",
            "",
            stopping,
            "",
            lime_early_stopping([0.05, 0.02, 0.01], seeds=2 if args.quick else 3),
        ]
    )
    print()
    print(text)
    print(f"\ntotal {time.perf_counter() - began:.0f} s")
    if args.quick or args.no_write:
        print("(not written: quick or --no-write run)")
        return
    plot(curves, budgets, PLOT)
    write_section("accuracy", text)
    print(f"written to benchmarks/RESULTS.md and {PLOT.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
