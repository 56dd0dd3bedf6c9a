"""Load shedding on the event loop (worker/pipeline/admission.py) alone: slots handed out first come,
first served; a notify that would wait, or did wait, longer than max_wait is refused; a late
event loop sheds too; a cancelled notify never keeps a slot."""

from __future__ import annotations

import asyncio
import time

import pytest

from worker.pipeline.admission import Admission, Overloaded


async def notify(admission: Admission, service_s: float, worked: list[int], n: int) -> tuple[str, float]:
    """What the endpoint does: shed at once, or hold a slot for the INSERT (service_s)."""
    arrived = time.monotonic()
    if admission.would_wait_too_long():
        return "shed", time.monotonic() - arrived
    try:
        async with admission.slot(arrived):
            await asyncio.sleep(service_s)
            worked.append(n)
    except Overloaded:
        return "shed after waiting", time.monotonic() - arrived
    return "answered", time.monotonic() - arrived


def test_past_capacity_notifies_are_shed_and_those_answered_waited_at_most_max_wait():
    admission = Admission(slots=2, max_wait=0.3)
    worked: list[int] = []

    async def burst() -> list[tuple[str, float]]:
        return await asyncio.gather(*(notify(admission, 0.1, worked, n) for n in range(40)))

    results = asyncio.run(burst())
    answered = [t for outcome, t in results if outcome == "answered"]
    shed = [t for outcome, t in results if outcome != "answered"]
    assert shed and answered
    assert len(worked) == len(answered) < 40  # a shed notify never did its work
    assert worked == sorted(worked)  # first come, first served
    assert max(answered) < 0.3 + 0.1 + 0.2  # its wait, its own service time, and some slack
    assert admission.busy == 0


def test_a_late_event_loop_sheds_even_with_free_slots():
    admission = Admission(slots=4, max_wait=0.3)

    async def late() -> tuple[bool, bool]:
        watcher = asyncio.get_running_loop().create_task(admission.watch_loop())
        await asyncio.sleep(0.15)
        before = admission.would_wait_too_long()
        time.sleep(0.6)  # a CPU-bound stretch: the loop runs 0.6 s late
        await asyncio.sleep(0.01)  # the probe due during the stretch has run
        after = admission.would_wait_too_long()
        watcher.cancel()
        return before, after

    before, after = asyncio.run(late())
    assert (before, after) == (False, True)
    assert admission.busy == 0


def test_a_notify_that_waited_too_long_for_its_slot_is_refused_when_it_gets_it():
    admission = Admission(slots=1, max_wait=0.2)

    async def run() -> list[str]:
        async def holder() -> str:
            async with admission.slot(time.monotonic()):
                await asyncio.sleep(0.4)
            return "answered"

        async def waiter() -> str:
            try:
                async with admission.slot(time.monotonic()):
                    return "answered"
            except Overloaded:
                return "shed"

        first = asyncio.ensure_future(holder())
        await asyncio.sleep(0.01)  # the second arrives while the slot is held, when the queue is still short
        return list(await asyncio.gather(first, waiter()))

    assert asyncio.run(run()) == ["answered", "shed"]
    assert admission.busy == 0


@pytest.mark.parametrize("handed_over_first", [False, True])
def test_a_cancelled_notify_never_keeps_a_slot(handed_over_first):
    admission = Admission(slots=1, max_wait=5.0)

    async def run() -> int:
        release = asyncio.Event()

        async def holder() -> None:
            async with admission.slot(time.monotonic()):
                await release.wait()

        async def waiter() -> None:
            async with admission.slot(time.monotonic()):
                await asyncio.sleep(10)

        held = asyncio.ensure_future(holder())
        await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(waiter())
        await asyncio.sleep(0.01)
        if handed_over_first:  # the slot is handed to the waiter, which is cancelled before it runs
            release.set()
            await asyncio.sleep(0)
            waiting.cancel()
        else:  # cancelled while still waiting
            waiting.cancel()
            release.set()
        await held
        with pytest.raises(asyncio.CancelledError):
            await waiting
        async with admission.slot(time.monotonic()):  # free at once
            return admission.busy

    assert asyncio.run(run()) == 1
    assert admission.busy == 0
