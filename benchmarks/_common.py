"""Shared plumbing for the benchmark scripts: timing, machine description, quiet peers, RESULTS.md sections."""

from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import math
import os
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

_RESULTS_HEADER = """# Benchmark results

Written by the scripts in this folder (see `README.md` there for the commands); each script replaces only its
own section. Numbers are medians of several runs after a warm-up, in one process. A section that says
"not yet measured" has not been run on such a machine: no number here is estimated.
"""

# Sections in the order they appear in RESULTS.md, with what a missing one says.
# Section name -> text until measured. "targets" is written by hand from the others and kept by every script.
SECTIONS = {
    "targets": "## Where we stand against the targets\n\nNot yet assessed.\n",
    "peers-cpu": "## Speed against the peers: CPU\n\nNot yet measured: run `python -m benchmarks.peers`.\n",
    "peers-cuda": (
        "## Speed against the peers: GPU\n\nNot yet measured: run `python -m benchmarks.peers --device cuda` "
        "on a machine with a CUDA GPU.\n"
    ),
    "accuracy": "## KernelSHAP accuracy\n\nNot yet measured: run `python -m benchmarks.accuracy`.\n",
    "importance": "## Permutation importance: CPU\n\nNot yet measured: run `python -m benchmarks.importance`.\n",
    "deep-architectures": (
        "## DeepSHAP on the architectures that break hook-based implementations\n\nNot yet measured: run "
        "`python -m benchmarks.deep_peers`.\n"
    ),
    "latency": "## Widget latency: CPU\n\nNot yet measured: run `python -m benchmarks.latency`.\n",
    "latency-explorer": (
        "## Explorer latency: CPU\n\nNot yet measured: run `python -m benchmarks.latency --only explorer`.\n"
    ),
    "latency-cuda": (
        "## Widget latency: GPU\n\nNot yet measured: run `python -m benchmarks.latency --device cuda` on a machine "
        "with a CUDA GPU.\n"
    ),
    "dataset-scaling": (
        "## Explaining a dataset: local loop and Ray\n\nNot yet measured: run `python -m benchmarks.dataset_scaling`.\n"
    ),
    "featurevis": "## Feature visualisation: CPU\n\nNot yet measured: run `python -m benchmarks.featurevis`.\n",
}


# ---------------------------------------------------------------------------------------------------------------
# Memory allocator

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_allocator = "the system default"


def steady_allocator() -> None:
    """Keep freed activation buffers in the process (glibc only), so timings do not swing by 2x.

    By default glibc serves large blocks with mmap and hands them back on free, raising that threshold only as
    larger blocks come and go; every torch CPU forward pass then pays page faults for its activations until
    the threshold has grown past them, and never once they are over 32 MB. Measured here: the same batch ran
    at 0.14 or 0.29 ms per image depending on what ran before. Fixing the thresholds at 1 GiB (what
    ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` do at start-up) removes that for every
    implementation in the process alike.
    """
    global _allocator
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    if libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30):
        _allocator = "glibc with mmap and trim thresholds fixed at 1 GiB (see README.md)"


# ---------------------------------------------------------------------------------------------------------------
# Command line shared by the timing scripts (peers.py, latency.py)


def add_run_arguments(parser: argparse.ArgumentParser, quick_help: str) -> None:
    """``--device``, ``--quick``, ``--threads``, ``--no-write`` and ``--default-malloc``."""
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc's malloc thresholds alone (see README.md)"
    )


def start_run(args: argparse.Namespace) -> torch.device:
    """Apply the shared arguments (allocator, torch threads) and return the device, which must be present."""
    if not args.default_malloc:
        steady_allocator()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA GPU here")
    return device


def finish_run(args: argparse.Namespace, text: str, section: str, seconds: float) -> None:
    """Print the markdown ``text`` and write it to ``section`` of RESULTS.md (not for quick or --no-write runs).

    The ``### `` subsections (one per model) of the section as it was are kept for models this run did not
    measure, so a run split by ``--models`` (as on a GPU machine with 10-minute calls) adds up.
    """
    print()
    print(text)
    print(f"\ntotal {seconds:.0f} s")
    if args.quick or args.no_write:
        print("(not written to RESULTS.md: quick or --no-write run)")
    else:
        earlier = _section_text(RESULTS.read_text(), section) if RESULTS.exists() else None
        write_section(section, merge_subsections(earlier, text))
        print("written to benchmarks/RESULTS.md")


def merge_subsections(earlier: str | None, text: str) -> str:
    """``text``, plus those ``### NAME ...`` subsections of ``earlier`` whose NAME ``text`` has none of."""
    head, fresh = _subsections(text)
    if earlier is None:
        return text
    _, kept = _subsections(earlier)
    names = list(kept) + [name for name in fresh if name not in kept]
    return head + "".join(fresh.get(name) or kept[name] for name in names)


def _subsections(text: str) -> tuple[str, dict[str, str]]:
    """The text before the first ``### `` heading, and each subsection by the first word of its heading."""
    head, *parts = re.split(r"(?m)^(?=### )", text.rstrip("\n") + "\n")
    return head, {part.split()[1]: part.rstrip("\n") + "\n\n" for part in parts}


# ---------------------------------------------------------------------------------------------------------------
# Timing


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work, so a wall-clock time covers the whole computation."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@dataclass
class Timing:
    """Median wall time of ``runs`` timed calls (after warm-up), and the last call's result."""

    seconds: float
    runs: int
    times: list[float]
    result: Any = None
    paired: list[float] | None = None  # the reference run timed right after each run, when asked for

    @property
    def paired_ratios(self) -> list[float]:
        """Each run's time / the paired reference run's time (empty without pairing)."""
        if not self.paired:
            return []
        return [t / p for t, p in zip(self.times, self.paired, strict=True)]

    @property
    def paired_ratio(self) -> float | None:
        """The median of :attr:`paired_ratios` (None without pairing)."""
        return statistics.median(self.paired_ratios) if self.paired else None


# A timed run of a fast call repeats it until the run lasts about this long (see measure).
_RUN_TARGET_S = 0.05


def measure(
    fn: Callable[[], Any],
    *,
    device: torch.device | str = "cpu",
    warmup: Callable[[], Any] | None = None,
    min_runs: int = 2,
    max_runs: int = 5,
    max_seconds: float = 10.0,
    paired: Callable[[], Any] | None = None,
) -> Timing:
    """Time ``fn()``: one warm-up call (``warmup`` if given, else ``fn``), then between ``min_runs`` and
    ``max_runs`` timed runs, stopping early once they add up to ``max_seconds``; times are per call.

    With ``paired``, each run is followed by a timed run of ``paired()`` (a reference such as the forward-only
    floor), so :attr:`Timing.paired_ratio` compares the two under the same machine state: on the shared 2-core
    VM the floor alone moved by up to 7 % within a run, more than the gaps being measured.

    The stopping rule keeps a ResNet-sized run of a 1000-sample method to two repeats while cheap methods get
    five, so a full run fits in minutes on two cores. A call shorter than :data:`_RUN_TARGET_S` (a Grad-CAM on a
    small CNN takes a millisecond) is repeated within each run until the run lasts about that long, so one
    garbage collection or timer tick does not decide its median (timeit's approach).
    """
    began = time.perf_counter()
    (warmup or fn)()
    synchronize(device)
    warm = time.perf_counter() - began
    number = 1 if warmup is not None or warm >= _RUN_TARGET_S else math.ceil(_RUN_TARGET_S / max(warm, 1e-6))
    times: list[float] = []
    references: list[float] = []
    result = None
    while len(times) < max_runs:
        began = time.perf_counter()
        for _ in range(number):
            result = fn()
        synchronize(device)
        times.append((time.perf_counter() - began) / number)
        if paired is not None:
            began = time.perf_counter()
            paired()
            synchronize(device)
            references.append(time.perf_counter() - began)
        if len(times) >= min_runs and sum(times) * number >= max_seconds:
            break
    return Timing(
        seconds=statistics.median(times),
        runs=len(times),
        times=times,
        result=result,
        paired=references if paired is not None else None,
    )


# ---------------------------------------------------------------------------------------------------------------
# Quiet peers


@contextmanager
def quiet_peers() -> Iterator[None]:
    """Silence the peers' progress bars and warnings while they are timed.

    lime 0.2.0.1's ``explain_instance`` always wraps its sampling loop in ``tqdm`` (no ``progress_bar``
    argument), which prints to stderr; its module-level name is swapped for a pass-through.
    """
    patched = []
    try:
        import lime.lime_image as lime_image

        patched.append((lime_image, "tqdm", lime_image.tqdm))
        lime_image.tqdm = lambda iterable, *args, **kwargs: iterable
    except ImportError:
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for module, name, value in patched:
            setattr(module, name, value)


# ---------------------------------------------------------------------------------------------------------------
# The machine


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` says."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(package: str) -> str:
    """``package``'s installed version; for livexai run from a source tree (the GPU kit), its ``__version__``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        if package == "livexai":
            import livexai

            return f"{livexai.__version__} (source tree)"
        return "not installed"


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that produced a result, as typed: ``python -m benchmarks.X`` plus its arguments."""
    return " ".join([f"python -m benchmarks.{module}", *(sys.argv[1:] if argv is None else argv)])


def machine_lines(device: torch.device | str = "cpu", peers: tuple[str, ...] = ()) -> list[str]:
    """Markdown bullet lines describing where and with what the numbers were measured."""
    lines = [
        f"- Date: {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores, torch threads: {torch.get_num_threads()}; "
        f"memory allocator: {_allocator}",
    ]
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        lines.append(f"- GPU: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})")
    packages = ("livexai", "torch", *peers)
    lines.append(
        f"- Python {platform.python_version()}; " + ", ".join(f"{name} {version(name)}" for name in packages)
    )
    return lines


# ---------------------------------------------------------------------------------------------------------------
# RESULTS.md


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"


def _section_text(text: str, name: str) -> str | None:
    begin, end = _markers(name)
    match = re.search(re.escape(begin) + r"\n(.*?)" + re.escape(end), text, re.DOTALL)
    return match.group(1) if match else None


def write_section(name: str | None, body: str = "", path: Path = RESULTS) -> None:
    """Replace section ``name`` of RESULTS.md with ``body`` (markdown), keeping every other section as it is.

    ``name=None`` only (re)writes the file's frame: sections not there yet say "not yet measured".
    """
    if name is not None and name not in SECTIONS:
        raise ValueError(f"unknown section {name!r}; expected one of {sorted(SECTIONS)}")
    old = path.read_text() if path.exists() else ""
    bodies = {key: _section_text(old, key) or default for key, default in SECTIONS.items()}
    if name is not None:
        bodies[name] = body.rstrip("\n") + "\n"
    parts = [_RESULTS_HEADER]
    for key, text in bodies.items():
        begin, end = _markers(key)
        parts.append(f"{begin}\n{text}{end}\n")
    path.write_text("\n".join(parts))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table; numeric-looking columns are right-aligned."""

    def numeric(column: int) -> bool:
        cells = [row[column] for row in rows if row[column] not in ("", "–")]
        return bool(cells) and all(re.fullmatch(r"[-+×x±\d.,%ms ]+", cell) for cell in cells)

    align = ["---:" if numeric(i) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
