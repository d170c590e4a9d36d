"""The background runner: one job at a time, latest request wins, results applied on the submitting loop."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time

import pytest

from livexai import Cancelled
from livexai.widgets._runner import JobContext, Runner, describe_error


class Owner:
    """Stands in for a widget: records what was applied to it, and on which thread."""

    def __init__(self) -> None:
        self.applied: list[object] = []
        self.threads: list[int] = []
        self.errors: list[str] = []

    def record(self, value: object) -> None:
        self.applied.append(value)
        self.threads.append(threading.get_ident())

    def fail(self, error: BaseException) -> None:
        self.errors.append(describe_error(error))


def post_value(
    owner: Owner, value: object, *, steps: int = 3, delay: float = 0.01, started: list | None = None
):
    def work(context: JobContext) -> None:
        if started is not None:
            started.append(value)
        for _ in range(steps):
            context.check_cancel()
            time.sleep(delay)
        context.post(lambda: owner.record(value))

    return work


def test_a_newer_request_cancels_the_running_one_and_only_the_latest_is_applied() -> None:
    runner = Runner()
    owner = Owner()
    started: list[object] = []
    runner.submit(owner, post_value(owner, "old", steps=50, delay=0.01, started=started))
    deadline = time.monotonic() + 5
    while not started and time.monotonic() < deadline:
        time.sleep(0.005)
    assert started == ["old"]
    runner.submit(owner, post_value(owner, "new", started=started))
    assert runner.wait(owner, timeout=10)
    assert owner.applied == ["new"]
    assert runner.jobs_cancelled == 1
    assert not runner.busy(owner)


def test_pending_requests_are_replaced_not_queued() -> None:
    runner = Runner()
    blocker, owner = Owner(), Owner()
    started: list[object] = []
    runner.submit(blocker, post_value(blocker, "blocker", steps=10, delay=0.01, started=started))
    for value in range(20):  # all arrive while the other owner's job runs
        runner.submit(owner, post_value(owner, value, started=started))
    assert runner.wait(owner, timeout=10) and runner.wait(blocker, timeout=10)
    assert owner.applied == [19]
    assert started == ["blocker", 19]  # the 19 stale requests never started
    assert blocker.applied == ["blocker"]


def test_one_job_at_a_time_across_owners() -> None:
    runner = Runner()
    owners = [Owner() for _ in range(4)]
    active, peak = [0], [0]
    lock = threading.Lock()

    def work_for(owner: Owner):
        def work(context: JobContext) -> None:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.02)
            with lock:
                active[0] -= 1
            context.post(lambda: owner.record("done"))

        return work

    for owner in owners:
        runner.submit(owner, work_for(owner))
    for owner in owners:
        assert runner.wait(owner, timeout=10)
    assert peak[0] == 1
    assert [owner.applied for owner in owners] == [["done"]] * 4


def test_an_exception_is_reported_logged_and_the_next_job_works(caplog: pytest.LogCaptureFixture) -> None:
    runner = Runner()
    owner = Owner()

    def broken(context: JobContext) -> None:
        raise ValueError("n_segments must be at least 2, got 1")

    with caplog.at_level(logging.ERROR, logger="livexai.widgets._runner"):
        runner.submit(owner, broken, on_error=owner.fail)
        assert runner.wait(owner, timeout=10)
    assert owner.errors == ["ValueError: n_segments must be at least 2, got 1"]
    assert any("Traceback" in (record.exc_text or "") or record.exc_info for record in caplog.records)
    runner.submit(owner, post_value(owner, "recovered"), on_error=owner.fail)
    assert runner.wait(owner, timeout=10)
    assert owner.applied == ["recovered"]


def test_cancelled_raised_inside_a_job_is_silent() -> None:
    runner = Runner()
    owner = Owner()

    def gives_up(context: JobContext) -> None:
        raise Cancelled("stale")

    runner.submit(owner, gives_up, on_error=owner.fail)
    assert runner.wait(owner, timeout=10)
    assert owner.errors == [] and owner.applied == []


def test_progressive_updates_are_throttled_but_the_final_post_always_arrives() -> None:
    runner = Runner(min_interval=0.1)
    owner = Owner()
    sent: list[bool] = []

    def streaming(context: JobContext) -> None:
        for step in range(60):  # 60 partial results over ~0.3 s
            sent.append(context.update(lambda step=step: owner.record(step)))
            time.sleep(0.005)
        context.post(lambda: owner.record("final"))

    runner.submit(owner, streaming)
    assert runner.wait(owner, timeout=10)
    assert sent[0] is True
    assert 2 <= sum(sent) <= 6, f"{sum(sent)} updates in ~0.3 s; expected about 10 per second"
    assert owner.applied[-1] == "final" and len(owner.applied) == sum(sent) + 1


def test_without_an_event_loop_updates_are_applied_on_the_worker_thread() -> None:
    runner = Runner()
    owner = Owner()
    runner.submit(owner, post_value(owner, 1))
    assert runner.wait(owner, timeout=10)
    assert owner.threads and owner.threads[0] != threading.get_ident()


def test_with_a_running_loop_updates_are_applied_on_the_loop_thread_in_the_submitting_context() -> None:
    runner = Runner()
    owner = Owner()
    request = contextvars.ContextVar("request", default="none")
    seen: list[str] = []

    async def main() -> None:
        request.set("cell 7")  # ipykernel keeps the parent message header in a ContextVar like this one

        def work(context: JobContext) -> None:
            context.post(lambda: (owner.record("result"), seen.append(request.get())))

        runner.submit(owner, work)
        for _ in range(500):
            if not runner.busy(owner):
                return
            await asyncio.sleep(0.01)

    thread = threading.get_ident()
    asyncio.run(main())
    assert owner.applied == ["result"]
    assert owner.threads == [thread]
    assert seen == ["cell 7"]


def test_waiting_on_the_loop_thread_drains_updates_instead_of_deadlocking() -> None:
    runner = Runner()
    owner = Owner()
    finished: list[bool] = []

    async def main() -> None:
        runner.submit(owner, post_value(owner, "done", steps=5))
        # A notebook cell calling widget.wait() blocks the kernel's loop: the runner must apply updates itself.
        finished.append(runner.wait(owner, timeout=10))

    asyncio.run(main())
    assert finished == [True]
    assert owner.applied == ["done"]
    assert owner.threads == [threading.get_ident()]


def test_cancel_drops_pending_and_running_work() -> None:
    runner = Runner()
    owner = Owner()
    started: list[object] = []
    runner.submit(owner, post_value(owner, "slow", steps=100, delay=0.01, started=started))
    while not started:
        time.sleep(0.005)
    runner.cancel(owner)
    assert runner.wait(owner, timeout=5)
    assert owner.applied == []


def test_an_update_that_fails_to_apply_reaches_the_error_handler_and_the_owner_goes_idle() -> None:
    runner = Runner()
    owner = Owner()

    def broken_apply() -> None:
        raise ValueError("the panel could not be drawn")

    runner.submit(owner, lambda context: context.post(broken_apply), on_error=owner.fail)
    assert runner.wait(owner, timeout=10)
    assert owner.errors == ["ValueError: the panel could not be drawn"]


def test_updates_are_applied_without_holding_the_runners_lock() -> None:
    runner = Runner()
    owner = Owner()
    answered: list[bool] = []

    def apply() -> None:  # a trait observer that asks the runner something from another thread
        asker = threading.Thread(target=lambda: answered.append(runner.busy(owner)))
        asker.start()
        asker.join(5)
        owner.record("applied")

    runner.submit(owner, lambda context: context.post(apply))
    assert runner.wait(owner, timeout=10)
    assert owner.applied == ["applied"]
    assert answered == [True]  # the other thread got an answer while the update was being applied


def test_describe_error_is_one_readable_line() -> None:
    assert describe_error(ValueError("bad value")) == "ValueError: bad value"
    assert describe_error(RuntimeError()) == "RuntimeError: (no message)"


def test_shutdown_cancels_the_running_job_and_stops_the_worker() -> None:
    runner = Runner()
    started, stopped = threading.Event(), threading.Event()

    def work(context: JobContext) -> None:
        started.set()
        try:
            while True:  # a long computation that checks for cancellation between batches
                context.check_cancel()
                time.sleep(0.01)
        except Cancelled:
            stopped.set()
            raise

    runner.submit(object(), work)
    runner.submit(object(), work)  # still pending at shutdown: dropped
    assert started.wait(5)
    runner.shutdown(timeout=5)
    assert stopped.is_set()
    assert runner._thread is not None and not runner._thread.is_alive()
    assert runner.jobs_started == 1
