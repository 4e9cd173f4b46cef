"""Journal mode's write-home in a thread: the kernel's ``writer_wq`` (``integrity_writer``).

A write-home is flush-bound: the journal flush before the blocks go home and the flush
after them take most of its time, and both release the GIL.  In a thread they overlap
with the next requests filling the free part of the journal.  The target plans each
write-home (:meth:`.jwriter.JournalWriter.plan_home`, under the request path), this
module runs its I/O (:meth:`HomeWriter.start`), and the target finishes it
(:meth:`.jwriter.JournalWriter.finish_home`, which frees the sections) when it takes the
result (:meth:`HomeWriter.take`).

Up to ``depth`` write-homes are queued; the thread runs them one after the other, in the
order they were started, so that it goes on to the next one without waiting for the
request path to notice that one ended.  Once one fails, those queued after it do not
run (each raises :class:`SkippedJob`): their blocks must not go home after a failed
flush.

The thread only writes; every decision and every change of the journal's state stays in
the request path.  Its I/O must be safe beside the request path's own: the target runs it
on :class:`~dmkit.block.FileDevice` backends only (positional I/O on a file descriptor),
unless told otherwise.
"""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from .jwriter import HomePlan

__all__ = ["HomeWriter", "SkippedJob"]


class SkippedJob(RuntimeError):
    """A queued write-home that did not run because one before it failed."""


class HomeWriter:
    """One worker thread, started at the first write-home, stopped by :meth:`close`."""

    def __init__(self, name: str, depth: int = 2):
        if depth < 1:
            raise ValueError(f"{name}: writer queue depth must be at least 1, not {depth}")
        self.name = name
        self.depth = depth
        self._executor: ThreadPoolExecutor | None = None
        #: (future, plan) of the write-homes started and not taken, oldest first
        self._jobs: collections.deque[tuple[Future, HomePlan]] = collections.deque()
        #: set by the thread when a job fails (the jobs after it are skipped)
        self._failed = False

    @property
    def busy(self) -> bool:
        """A write-home was started and its result not taken yet."""
        return bool(self._jobs)

    @property
    def full(self) -> bool:
        """``depth`` write-homes are queued: no more can start."""
        return len(self._jobs) >= self.depth

    @property
    def done(self) -> bool:
        """The oldest write-home under way has ended (its result can be taken without
        waiting)."""
        return bool(self._jobs) and self._jobs[0][0].done()

    def _run(self, job: Callable[[], None]) -> None:
        if self._failed:
            raise SkippedJob(f"{self.name}: write-home not run: an earlier one failed")
        try:
            job()
        except BaseException:
            self._failed = True
            raise

    def start(self, job: Callable[[], None], plan: HomePlan) -> None:
        """Queue ``job()``, the I/O of ``plan``, for the thread (run inline when the
        interpreter is shutting down and no thread can start)."""
        if self.full:
            raise RuntimeError(f"{self.name}: {self.depth} write-homes are already under way")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-writer")
        try:
            future = self._executor.submit(self._run, job)
        except RuntimeError:            # "cannot schedule new futures after shutdown"
            for f, _ in self._jobs:     # keep the order: what was queued runs first
                f.exception()
            future = Future()
            try:
                self._run(job)
            except BaseException as e:
                future.set_exception(e)
            else:
                future.set_result(None)
        self._jobs.append((future, plan))

    def withdraw_pending(self) -> HomePlan | None:
        """Take back the newest write-home if the thread has not started it (and there is
        one before it): returns its plan, which then never runs, or None.  The target
        plans it again together with the sections committed since, so that a thread
        slower than the requests makes fewer, bigger write-homes (one flush each)."""
        if len(self._jobs) < 2:
            return None
        future, plan = self._jobs[-1]
        if not future.cancel():
            return None
        self._jobs.pop()
        return plan

    def take(self) -> HomePlan:
        """Wait for the oldest job under way and return its plan; raise what the job
        raised (the job is then over either way)."""
        if not self._jobs:
            raise RuntimeError(f"{self.name}: no write-home is under way")
        future, plan = self._jobs[0]
        try:
            future.result()
        finally:
            self._jobs.popleft()
        return plan

    def close(self) -> BaseException | None:
        """Wait for every write-home under way and stop the thread.  Returns the first
        failure nobody took, if there is one (the caller decides how to report it)."""
        error = None
        while self._jobs:
            try:
                self.take()
            except BaseException as e:
                if error is None and not isinstance(e, SkippedJob):
                    error = e
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        return error
