"""Journal mode's write-home in a thread: the kernel's ``writer_wq`` (``integrity_writer``).

A write-home is flush-bound: the journal flush before the blocks go home and the flush
after them take most of its time, and both release the GIL.  In a thread they overlap
with the next requests filling the free half of the journal.  The target plans each
write-home (:meth:`.jwriter.JournalWriter.plan_home`, under the request path), this
module runs its I/O (:meth:`HomeWriter.start`), and the target finishes it
(:meth:`.jwriter.JournalWriter.finish_home`, which frees the sections) when it takes the
result (:meth:`HomeWriter.take`).  One write-home is under way at a time.

The thread only writes; every decision and every change of the journal's state stays in
the request path.  Its I/O must be safe beside the request path's own: the target runs it
on :class:`~dmkit.block.FileDevice` backends only (positional I/O on a file descriptor),
unless told otherwise.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from .jwriter import HomePlan

__all__ = ["HomeWriter"]


class HomeWriter:
    """One worker thread, started at the first write-home, stopped by :meth:`close`."""

    def __init__(self, name: str):
        self.name = name
        self._executor: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self._plan: HomePlan | None = None

    @property
    def busy(self) -> bool:
        """A write-home was started and its result not taken yet."""
        return self._future is not None

    @property
    def done(self) -> bool:
        """The write-home under way has ended (its result can be taken without waiting)."""
        return self._future is not None and self._future.done()

    def start(self, job: Callable[[], None], plan: HomePlan) -> None:
        """Run ``job()``, the I/O of ``plan``, in the thread (inline when the interpreter
        is shutting down and no thread can start)."""
        if self._future is not None:
            raise RuntimeError(f"{self.name}: a write-home is already under way")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-writer")
        try:
            future = self._executor.submit(job)
        except RuntimeError:            # "cannot schedule new futures after shutdown"
            future = Future()
            try:
                job()
            except BaseException as e:
                future.set_exception(e)
            else:
                future.set_result(None)
        self._future, self._plan = future, plan

    def take(self) -> HomePlan:
        """Wait for the job under way and return its plan; raise what the job raised (the
        job is then over either way)."""
        future, plan = self._future, self._plan
        if future is None or plan is None:
            raise RuntimeError(f"{self.name}: no write-home is under way")
        try:
            future.result()
        finally:
            self._future = self._plan = None
        return plan

    def close(self) -> BaseException | None:
        """Wait for the write-home under way, if any, and stop the thread.  Returns what
        the job raised, if it did and nobody took it (the caller decides how to report
        it)."""
        error = None
        if self._future is not None:
            try:
                self.take()
            except BaseException as e:
                error = e
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        return error
