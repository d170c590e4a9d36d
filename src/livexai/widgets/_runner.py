"""One background worker that computes explanations for every widget, latest request wins.

Why a runner: a trait observer runs on the kernel's thread while the front end waits for it, so it must return at
once. Observers only *submit* a job; a single daemon thread computes jobs one at a time (all widgets share the
CPU or GPU anyway, so running two at once would only slow both). A newer job for the same widget cancels the
stale one cooperatively: the job's code calls :meth:`JobContext.check_cancel` between chunks (or hands it to the
core as ``check_cancel``), which raises :class:`livexai.Cancelled`.

Results never touch traits from the worker thread when a kernel is running: ipykernel 7 sends comm messages with
the parent header of the thread's context and drops or misroutes messages from foreign threads
(ipywidgets#4001, #4020). Each update is queued and applied on the event loop that submitted the job, through
``call_soon_threadsafe`` with the submitting context (so messages carry the right parent). With no running loop
(plain Python, pytest), updates are applied directly on the worker thread. A caller blocked on the loop's own
thread in :meth:`Runner.wait` drains the queue itself, so waiting inside a notebook cell does not deadlock.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .._adapter import Cancelled

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

# Progressive results reach the browser at most this often (seconds between two updates): ~10 updates/s.
MIN_UPDATE_INTERVAL_S = 0.1
# How often :meth:`Runner.wait` on the event loop's own thread looks for updates to apply (seconds).
WAIT_POLL_S = 0.02

Work = Callable[["JobContext"], None]
OnError = Callable[[BaseException], None]


def _submitting_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop that must apply trait updates: the running one, else the kernel's, else None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    kernelbase = sys.modules.get("ipykernel.kernelbase")
    if kernelbase is not None and kernelbase.Kernel.initialized():
        io_loop = getattr(kernelbase.Kernel.instance(), "io_loop", None)
        return getattr(io_loop, "asyncio_loop", None)
    return None


@dataclass(eq=False)
class Job:
    """One request from one widget: the work to run, where to apply its results, whether it is still wanted."""

    owner: object
    work: Work
    on_error: OnError | None
    loop: asyncio.AbstractEventLoop | None
    context: contextvars.Context
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)


class JobContext:
    """What a job's code sees: cancellation checks, progress reporting and result posting."""

    def __init__(self, runner: Runner, job: Job, min_interval: float) -> None:
        self._runner = runner
        self._job = job
        self._min_interval = min_interval
        self._last_update = -float("inf")
        self._follow_ups: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._job.cancelled.is_set()

    def check_cancel(self) -> None:
        """Raise :class:`livexai.Cancelled` if a newer request (or ``close``) made this job stale."""
        if self._job.cancelled.is_set():
            raise Cancelled("a newer request replaced this computation")

    def post(self, apply: Callable[[], None]) -> None:
        """Apply ``apply()`` on the kernel's thread, unless the job is stale by then. Always delivered."""
        self._runner._dispatch(self._job, apply)

    def then(self, follow_up: Callable[[], None]) -> None:
        """Run ``follow_up()`` on the runner's thread once the job's work has returned, as part of the same job.

        For work that must not delay the result it follows (a map's faithfulness curves after the map is
        posted, the Explorer's agreement table before them): it is cancelled with the job, checked before each
        follow-up, and ``wait`` waits for it. Follow-ups run in the order they were added.
        """
        self._follow_ups.append(follow_up)

    def _run_follow_ups(self) -> None:
        while self._follow_ups:
            self.check_cancel()
            self._follow_ups.pop(0)()

    def update(self, apply: Callable[[], None]) -> bool:
        """Post a progressive update, throttled to one per ``MIN_UPDATE_INTERVAL_S``; returns whether it was sent.

        Dropped updates are not queued: the next one (or the final :meth:`post`) carries newer data anyway.
        """
        now = time.perf_counter()
        if now - self._last_update < self._min_interval:
            return False
        self._last_update = now
        self.post(apply)
        return True


class Runner:
    """A single worker thread, a queue of the latest pending job per widget, and an outbox of trait updates."""

    def __init__(self, min_interval: float = MIN_UPDATE_INTERVAL_S) -> None:
        self.min_interval = min_interval
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[int, Job] = {}  # owner id -> latest job not started yet (insertion order = FIFO)
        self._running: Job | None = None
        self._outbox: deque[tuple[Job, Callable[[], None]]] = deque()
        self._applying: list[Job] = []  # jobs whose update is being applied right now (outside the lock)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.jobs_started = 0
        self.jobs_cancelled = 0

    # -- requests ------------------------------------------------------------------------------------------------
    def submit(self, owner: object, work: Work, on_error: OnError | None = None) -> Job:
        """Queue ``work(context)`` for ``owner``, replacing its pending job and cancelling its running one."""
        job = Job(owner, work, on_error, loop=_submitting_loop(), context=contextvars.copy_context())
        with self._changed:
            self._cancel_locked(owner)
            self._pending[id(owner)] = job
            self._ensure_thread()
            self._changed.notify_all()
        return job

    def cancel(self, owner: object) -> None:
        """Drop ``owner``'s pending job and stop its running one (at its next cancellation check)."""
        with self._changed:
            self._cancel_locked(owner)
            self._changed.notify_all()

    def _cancel_locked(self, owner: object) -> None:
        stale = self._pending.pop(id(owner), None)
        if stale is not None:
            stale.cancelled.set()
        if (
            self._running is not None
            and self._running.owner is owner
            and not self._running.cancelled.is_set()
        ):
            self._running.cancelled.set()
            self.jobs_cancelled += 1

    def busy(self, owner: object) -> bool:
        """Whether ``owner`` has a job pending, running, or results not yet applied."""
        with self._lock:
            return (
                id(owner) in self._pending
                or (self._running is not None and self._running.owner is owner)
                or any(job.owner is owner for job, _ in self._outbox)
                or any(job.owner is owner for job in self._applying)
            )

    def wait(self, owner: object, timeout: float | None = None) -> bool:
        """Block until ``owner`` is idle (nothing pending, running or unapplied); False on timeout.

        On the thread of the loop that applies updates (a notebook cell calling ``widget.wait()``), that loop
        cannot run while we block, so the outbox is drained here instead.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        while True:
            if here is not None:
                self._drain(only_loop=here)
            with self._changed:
                if not self.busy(owner):
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(WAIT_POLL_S if remaining is None else min(WAIT_POLL_S, remaining))

    def shutdown(self, timeout: float = 2.0) -> None:
        """Cancel every job and wait (up to ``timeout`` s) for the worker to finish its batch and stop.

        Registered at interpreter exit for the shared runner: a daemon thread stopped inside a torch kernel
        aborts the process ("terminate called without an active exception") as a kernel shuts down.
        """
        with self._changed:
            self._stopping = True
            for job in self._pending.values():
                job.cancelled.set()
            self._pending.clear()
            if self._running is not None:
                self._running.cancelled.set()
            self._changed.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)

    # -- worker --------------------------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work_forever, name="livexai-runner", daemon=True)
            self._thread.start()

    def _work_forever(self) -> None:
        while True:
            with self._changed:
                while not self._pending:
                    if self._stopping:
                        return
                    self._changed.wait()
                key = next(iter(self._pending))
                job = self._pending.pop(key)
                self._running = job
                self.jobs_started += 1
            try:
                self._run(job)
            finally:
                with self._changed:
                    self._running = None
                    self._changed.notify_all()

    def _run(self, job: Job) -> None:
        context = JobContext(self, job, self.min_interval)
        try:
            job.work(context)
            context._run_follow_ups()
        except Cancelled:
            logger.debug("job for %r cancelled", job.owner)
        except Exception as error:
            logger.exception("computing an explanation failed")
            if job.on_error is not None:
                on_error = job.on_error
                self._dispatch(job, lambda failure=error: on_error(failure))

    # -- applying results ----------------------------------------------------------------------------------------
    def _dispatch(self, job: Job, apply: Callable[[], None]) -> None:
        with self._changed:
            self._outbox.append((job, apply))
        loop = job.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._drain, context=job.context)
                return
            except RuntimeError:  # the loop closed between the check and the call
                pass
        self._drain()

    def _drain(self, only_loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Apply queued updates in order; those of stale jobs are dropped. Runs on the applying thread.

        Updates run without the runner's lock held: they set traits, and trait observers (the user's too) may
        call back into the runner. An update that fails goes to the job's error handler, so the widget shows the
        error instead of "computing" forever.
        """
        while True:
            with self._changed:
                if not self._outbox:
                    return
                job, apply = self._outbox[0]
                if only_loop is not None and job.loop is not only_loop:
                    return
                self._outbox.popleft()
                self._applying.append(job)
            try:
                if not job.cancelled.is_set():
                    apply()
            except Exception as error:
                logger.exception("applying an explanation to the widget failed")
                self._report(job, error)
            finally:
                with self._changed:
                    self._applying.remove(job)
                    self._changed.notify_all()

    @staticmethod
    def _report(job: Job, error: Exception) -> None:
        """Hand a failure to the job's error handler; a failing handler is logged, never raised into the loop."""
        if job.on_error is None:
            return
        try:
            job.on_error(error)
        except Exception:
            logger.exception("reporting an error to the widget failed")


_shared: Runner | None = None
_shared_lock = threading.Lock()


def shared_runner() -> Runner:
    """The process-wide runner every widget uses (one job at a time across all widgets)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Runner()
            atexit.register(_shared.shutdown)
        return _shared


def describe_error(error: BaseException) -> str:
    """A one-line, readable message for the widget (the traceback goes to the log)."""
    message = str(error).strip() or "(no message)"
    return f"{type(error).__name__}: {message}"


__all__ = ["Job", "JobContext", "Runner", "describe_error", "shared_runner"]
