"""Run probe code inside a lab host's network namespace, from a test, without a subprocess.

A ``NetnsThread`` is a thread that entered the namespace (``setns(2)`` is per thread) and runs its own
asyncio event loop there, as the probe daemon does on a real host. What it creates belongs to that
namespace for good: netlink and packet sockets keep their namespace, subprocesses (nc) and threads
(scapy's sniffer) inherit it. So a test can drive two hosts from one place::

    with NetnsThread(pair.a.ns) as a, NetnsThread(pair.b.ns) as b:
        watcher = a.call(SocketWatcher, 9090)      # built inside a's namespace
        ep = Endpoint(on_console)                   # builds nothing yet
        a.run(ep.listen(9090))                      # nc starts inside a's namespace
        changes, rows = a.call(watcher.poll)

``call`` runs a plain callable, ``run`` a coroutine; both block the test until it is done and re-raise
its exception. The thread never goes back to the root namespace; it ends when the block closes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from typing import Any, Awaitable, Callable

from pyroute2 import netns


class NetnsThread:
    def __init__(self, ns: str, timeout: float = 30.0):
        self.ns = ns
        self.timeout = timeout
        self._ready: concurrent.futures.Future = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name=f"netns-{ns}", daemon=True)

    def _main(self) -> None:
        try:
            netns.setns(ns_path(self.ns), flags=0)
            loop = _ChildKeepingLoop()
        except BaseException as e:  # report to the test instead of dying silently
            self._ready.set_exception(e)
            return
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._ready.set_result(None)
        try:
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for t in pending:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.reap_children())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def __enter__(self) -> "NetnsThread":
        self._thread.start()
        self._ready.result(timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def run(self, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        """Run a coroutine on this namespace's event loop and return its result."""
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return fut.result(timeout=timeout or self.timeout)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a plain function in this namespace's thread and return its result."""
        async def _call() -> Any:
            return fn(*args, **kwargs)
        return self.run(_call())


class _ChildKeepingLoop(asyncio.SelectorEventLoop):
    """An event loop that reaps every child it started before it closes.

    A loop closed while its child still runs cannot take the child's exit: asyncio's watcher thread
    reaps the pid, the transport's returncode stays unset, and when the transport is collected later
    it polls and kills that pid again. By then the pid may belong to another test's nc (pids wrap at
    32768 on a busy machine): that nc was reaped behind its own watcher's back and reported status
    255 (seen once in test_endpoint's test_abort_kills). So the loop ends every child first.
    """

    def __init__(self) -> None:
        super().__init__()
        self._children: list = []

    async def _make_subprocess_transport(self, *args: Any, **kwargs: Any) -> Any:
        transport = await super()._make_subprocess_transport(*args, **kwargs)
        self._children.append(transport)
        return transport

    async def reap_children(self, timeout: float = 5.0) -> None:
        deadline = self.time() + timeout
        for t in self._children:
            if t.get_returncode() is None:
                with contextlib.suppress(ProcessLookupError):
                    t.kill()
            while t.get_returncode() is None and self.time() < deadline:
                await asyncio.sleep(0.01)
            t.close()
        self._children.clear()


def ns_path(ns: str) -> str:
    return f"/var/run/netns/{ns}"
