"""A daemon's life, in uvicorn's shape: ``startup -> main_loop -> shutdown``.

- Signal handlers only set flags. The first SIGTERM or SIGINT sets ``should_exit``: the main loop
  ends and the shutdown stops new work, cleans up and drains, each step bounded by its timeout.
- A second one sets ``force_exit``: from then on no step waits more than :data:`FORCED_S`, and a
  wait that is only a courtesy (the drain of unacknowledged events) is abandoned at once. The
  cleanups themselves still run (a probe must not leave a 3 s delay on someone's wifi; they take
  milliseconds), so a forced exit is fast and still leaves nothing behind.
- The main loop also ends when one of the daemon's tasks (:meth:`Lifecycle.spawn`) ends by itself:
  they run until cancelled, so that is a crash, and the exit code is 1.

A subclass writes :meth:`startup` (which spawns the tasks) and :meth:`shutdown` (which calls
:meth:`stop_tasks` and bounds each step with :meth:`bounded`); :meth:`serve` runs the three.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Coroutine

import structlog

from tcplab.errors import TcplabError

log = structlog.get_logger("probe.lifecycle")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
FORCED_S = 0.5  # what a step still gets once a second signal forced the exit


class LifecycleError(TcplabError, RuntimeError):
    """The daemon's start-up failed."""


class Lifecycle:
    def __init__(self) -> None:
        self.should_exit = asyncio.Event()
        self.force_exit = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    # --- signals ----------------------------------------------------------------------------
    def handle_exit(self, sig: int) -> None:
        """The signal handler: sets a flag, nothing more."""
        if self.should_exit.is_set():
            self.force_exit.set()
        self.should_exit.set()

    def _install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.handle_exit, sig)

    def _remove(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)

    # --- the three phases -------------------------------------------------------------------
    async def startup(self) -> None:
        """Open what the daemon needs and :meth:`spawn` its tasks."""

    async def shutdown(self) -> None:
        """Stop new work (:meth:`stop_tasks`), clean up and drain, each step :meth:`bounded`."""
        await self.stop_tasks()

    async def main_loop(self) -> int:
        """Until a signal (0), or until a task ends by itself (1: it crashed)."""
        exit_wait = asyncio.ensure_future(self.should_exit.wait())
        try:
            done, _ = await asyncio.wait([exit_wait, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            exit_wait.cancel()
        code = 0
        for task in done:
            if task is exit_wait:
                continue
            error = None if task.cancelled() else task.exception()
            log.error("task_ended", task=task.get_name(), error=repr(error))
            code = 1
        return code

    async def serve(self) -> int:
        """``startup -> main_loop -> shutdown``; the exit code. The shutdown runs whatever happened
        before it (a start-up that failed half-way is cleaned up too)."""
        loop = asyncio.get_running_loop()
        self._install(loop)
        code = 1
        try:
            started = asyncio.ensure_future(self.startup())
            if await self.bounded(started, None, "startup", forced_s=0):
                code = await self.main_loop()
            elif not self.force_exit.is_set():
                raise LifecycleError(f"start-up failed: {started.exception()!r}") from started.exception()
        finally:
            try:
                await self.shutdown()
            finally:
                self._remove(loop)
        return code

    # --- helpers for subclasses -------------------------------------------------------------
    def spawn(self, coro: Coroutine, name: str) -> asyncio.Task:
        """A task that runs until the shutdown cancels it."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.append(task)
        return task

    async def stop_tasks(self, names: tuple[str, ...] | None = None) -> None:
        """Cancel the spawned tasks (those named, or all) and wait until they have ended."""
        stopping = [t for t in self.tasks if names is None or t.get_name() in names]
        for task in stopping:
            task.cancel()
        await asyncio.gather(*stopping, return_exceptions=True)
        self.tasks = [t for t in self.tasks if t not in stopping]

    async def bounded(self, aw: Awaitable, timeout: float | None, what: str, forced_s: float = FORCED_S) -> bool:
        """Wait for ``aw`` at most ``timeout`` seconds (None: no limit), and at most ``forced_s``
        once the exit is forced; True when it finished without raising. A step cut short is
        cancelled; a failure or a cut is logged, never raised (the next step still runs)."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(aw)
        deadline = None if timeout is None else loop.time() + timeout
        forced = asyncio.ensure_future(self.force_exit.wait())
        try:
            await asyncio.wait([task, forced], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and forced.done():
                left = forced_s if deadline is None else min(forced_s, deadline - loop.time())
                if left > 0:
                    await asyncio.wait([task], timeout=left)
        finally:
            forced.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            log.error("step_cut_short", step=what, timeout=timeout, forced=self.force_exit.is_set())
            return False
        if task.cancelled() or task.exception() is not None:
            error = "cancelled" if task.cancelled() else repr(task.exception())
            log.error("step_failed", step=what, error=error)
            return False
        return True
