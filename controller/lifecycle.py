"""A daemon's lifecycle in uvicorn's shape: ``startup -> main_loop -> shutdown``, signals as flags.

Signal handlers only set flags (uvicorn's ``Server.handle_exit``). The first SIGTERM or SIGINT
sets :attr:`Lifecycle.should_exit`: the main loop returns and shutdown stops new work, drains
what is in progress with a timeout, cancels the rest and closes the sockets. A second signal (of
either kind: ``tcplab-controller stop`` sends SIGTERM, a terminal sends SIGINT) sets
:attr:`Lifecycle.force_exit`: shutdown waits for nothing more. uvicorn forces on a second SIGINT
only; a daemon that nobody watches in a terminal gets the second SIGTERM from its supervisor.

Exit codes (:meth:`Lifecycle.exit_code`): 0 stopped as asked; 1 a task of the main loop crashed;
128 + N forced by a second signal N (130 for SIGINT, 143 for SIGTERM: what a shell reports for a
process that signal ended, since work was cut short).

Nothing here knows the controller: the probe can take the same shape (a candidate for tcplab/).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Awaitable, Callable

import structlog

log = structlog.get_logger("lifecycle")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Lifecycle:
    def __init__(self) -> None:
        self.should_exit = asyncio.Event()
        self.force_exit = asyncio.Event()
        self.forced_by: int | None = None
        self._installed: list[int] = []

    def handle_exit(self, sig: int) -> None:
        """A signal arrived: the first asks for a stop, a second forces it. Only sets flags."""
        name = signal.Signals(sig).name
        if self.should_exit.is_set():
            if not self.force_exit.is_set():
                self.forced_by = sig
                log.warning("exit_forced", signal=name)
            self.force_exit.set()
        else:
            log.info("exit_requested", signal=name)
            self.should_exit.set()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(sig, self.handle_exit, sig)
            self._installed.append(sig)

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        while self._installed:
            loop.remove_signal_handler(self._installed.pop())

    async def wait_forced(self, aw: Awaitable, timeout: float) -> str | None:
        """Wait for ``aw`` up to ``timeout`` seconds or until a second signal; None if it ended
        in time, else why the wait was cut short (``"signal"`` or ``"timeout"``). ``aw`` is left
        running: the caller cancels it."""
        fut = asyncio.ensure_future(aw)
        forced = asyncio.ensure_future(self.force_exit.wait())
        try:
            await asyncio.wait({fut, forced}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
        if fut.done():
            return None
        return "signal" if self.force_exit.is_set() else "timeout"

    def exit_code(self, crashed: bool) -> int:
        if self.forced_by is not None:
            return 128 + self.forced_by
        return 1 if crashed else 0

    async def serve(self, startup: Callable[[], None], main_loop: Callable[[], Awaitable[bool]],
                    shutdown: Callable[[], Awaitable[None]]) -> int:
        """``startup()``, then ``main_loop()`` (returns True if a task crashed) until it returns,
        then ``shutdown()`` whatever happened; the exit code. Signals are handled throughout."""
        self.install()
        crashed = True
        try:
            startup()
            crashed = await main_loop()
        finally:
            try:
                await shutdown()
            finally:
                self.uninstall()
        return self.exit_code(crashed)
