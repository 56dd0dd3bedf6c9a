"""Group commit: notifies stored by several request threads at once share one statement and one commit.

Each notify is answered only after its inbox row is committed; committing them one by one made
the ingress spend its time on round trips and commits (the profile: most of a request thread's
busy time waited for PostgreSQL). Here a request thread that finds fewer than `max_flushing`
batches on their way to PostgreSQL takes every body waiting (up to `max_batch`), its own
included, and writes them with one call of `write`; the others wait for that batch's outcome.
Under light load a batch is one body, so the answer waits no longer than before; under load the
bodies that arrive while the database is busy go together.

Every waiter gets its own outcome (a Stored or the exception `write` gave for its body), so one
bad body never sinks the others (`write` isolates it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

# bodies in one statement: far more than a web process's threads ever hold
MAX_BATCH = 64
# batches on their way to PostgreSQL at once, per web process
MAX_FLUSHING = 1

T = TypeVar("T")
R = TypeVar("R")


class _Waiter(Generic[T, R]):
    __slots__ = ("item", "outcome", "done")

    def __init__(self, item: T) -> None:
        self.item = item
        self.outcome: R | BaseException | None = None
        self.done = False


class GroupCommit(Generic[T, R]):
    """Calls `write(items) -> outcomes` (one outcome, a result or an exception, per item, in
    order) for the items of whichever threads are waiting. Thread-safe."""

    def __init__(self, write: Callable[[Sequence[T]], Sequence[R | BaseException]], *,
                 max_batch: int = MAX_BATCH, max_flushing: int = MAX_FLUSHING) -> None:
        self.write = write
        self.max_batch = max_batch
        self.max_flushing = max_flushing
        self._waiting: list[_Waiter[T, R]] = []
        self._flushing = 0
        self._cond = threading.Condition()

    def submit(self, item: T) -> R:
        """The outcome of writing item, once its batch was written. Raises what `write` gave for it."""
        me: _Waiter[T, R] = _Waiter(item)
        with self._cond:
            self._waiting.append(me)
        while True:
            with self._cond:
                # me is either waiting (then this thread may take it) or in a batch on its way
                while not me.done and (self._flushing >= self.max_flushing or not self._waiting):
                    self._cond.wait()
                if me.done:
                    break
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                self._flushing += 1
            try:
                outcomes: Sequence[R | BaseException] = self.write([w.item for w in batch])
                if len(outcomes) != len(batch):
                    raise AssertionError(f"write gave {len(outcomes)} outcomes for {len(batch)} items")
            except BaseException as exc:  # a bug in write: every waiter of the batch sees it
                outcomes = [exc] * len(batch)
            with self._cond:
                for waiter, outcome in zip(batch, outcomes):
                    waiter.outcome, waiter.done = outcome, True
                self._flushing -= 1
                self._cond.notify_all()
        if isinstance(me.outcome, BaseException):
            raise me.outcome
        return me.outcome  # type: ignore[return-value]
