"""Throughput of ``explain_dataset``: the local loop against Ray with 1 and 2 workers, LIME on the shapes CNN.

    python -m benchmarks.dataset_scaling              # 1000 images, LIME with 200 samples; ~5 min on 2 cores
    python -m benchmarks.dataset_scaling --quick      # 64 images; writes nothing

A Ray worker is an actor with one CPU, where torch runs one thread (Ray sets ``OMP_NUM_THREADS``), so the Ray
path's per-input overhead is measured against the local loop with one torch thread too: ``(Ray 1 worker -
local 1 thread) / local 1 thread`` over the same inputs (goal: at most 10 % at 1000 inputs). Starting the local
Ray is timed apart: a cluster is started once, not per call. The Ray workers get the same glibc malloc
thresholds as this process (``steady_allocator``, see README.md here). Every run uses
``ModelAdapter(batch_size=64)``, so all of them compute bit-identical maps, which the script checks. Results go
to the "dataset-scaling" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import livexai
from livexai import datasets, models

from ._common import command_line, machine_lines, markdown_table, steady_allocator, version, write_section

SECTION = "dataset-scaling"
# The actors get the allocator settings that steady_allocator() gives this process (glibc reads these at start):
# with glibc's defaults a Ray worker ran LIME 25 % slower than this process did, for that reason alone.
_STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def run(
    engine: str, images: torch.Tensor, args: argparse.Namespace, **options: object
) -> tuple[float, torch.Tensor]:
    """Wall time of one ``explain_dataset`` call and its stacked maps."""
    model = livexai.ModelAdapter(models.shapes_cnn(), batch_size=64)
    started = time.perf_counter()
    result = livexai.explain_dataset(
        model,
        images,
        "lime",
        engine=engine,
        batch_size=args.batch_size,
        progress=False,
        n_samples=args.n_samples,
        n_segments=50,
        seed=0,
        **options,
    )
    return time.perf_counter() - started, result.attributions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="images explained per run")
    parser.add_argument("--n-samples", type=int, default=200, help="LIME samples per image")
    parser.add_argument("--batch-size", type=int, default=64, help="inputs per Ray batch and shard")
    parser.add_argument("--quick", action="store_true", help="64 images; print only")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = 64
    import ray

    steady_allocator()
    load_before = os.getloadavg()[0]
    images = datasets.shapes(args.n, seed=1).images
    threads = torch.get_num_threads()
    times: dict[str, float] = {}
    maps: dict[str, torch.Tensor] = {}

    torch.set_num_threads(1)
    times["local, 1 torch thread"], maps["local1"] = run("local", images, args)
    torch.set_num_threads(threads)
    times[f"local, {threads} torch threads"], maps["local"] = run("local", images, args)

    started = time.perf_counter()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        runtime_env={"env_vars": _STEADY_MALLOC},
    )
    ray_start = time.perf_counter() - started
    for workers in (1, 2):
        name = f"Ray, {workers} worker{'s' * (workers > 1)}"
        times[name], maps[name] = run("ray", images, args, num_workers=workers)
    fixed, _ = run("ray", images[: args.batch_size], args, num_workers=1)
    ray.shutdown()

    identical = all(torch.equal(maps["local1"], other) for other in maps.values())
    baseline = times["local, 1 torch thread"]
    overhead = times["Ray, 1 worker"] / baseline - 1
    rows = [
        [
            name,
            f"{seconds:.1f} s",
            f"{seconds / args.n * 1000:.1f} ms",
            f"{args.n / seconds:.1f}",
            f"{baseline / seconds:.2f}",
        ]
        for name, seconds in times.items()
    ]
    text = "\n".join(
        [
            "## Explaining a dataset: local loop and Ray",
            "",
            *machine_lines(peers=("ray",)),
            f"- Measured by `{command_line('dataset_scaling', argv)}`: LIME ({args.n_samples} samples, 50 "
            f"superpixels, seeded) on the shapes CNN, {args.n} images of 64², `ModelAdapter(batch_size=64)`, "
            f"{args.batch_size} images per Ray batch; one run each.",
            "",
            markdown_table(
                ["engine", "wall time", "per image", "images/s", "speed-up vs local 1 thread"], rows
            ),
            "",
            f"- Ray path's overhead per image, 1 worker against the local loop with 1 torch thread: "
            f"**{overhead * 100:+.1f} %** (goal ≤ 10 %). It includes starting the actor and building its model "
            f"once per call: a {args.batch_size}-image call on 1 worker took {fixed:.1f} s.",
            f"- Starting the local Ray (2 CPUs) took {ray_start:.1f} s, once per session, not counted above.",
            f"- Maps bit-identical across all runs: {'yes' if identical else '**no**'}.",
            f"- Load average (1 min) {load_before:.1f} before and {os.getloadavg()[0]:.1f} after: above 0 means other "
            "processes shared the 2 cores, which slows the 2-thread and 2-worker runs most.",
            f"- ray {version('ray')}; GPU throughput not yet measured.",
        ]
    )
    print(text)
    if not (args.quick or args.no_write):
        write_section(SECTION, text)
        print("written to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
