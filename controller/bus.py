"""The probe bus: the controller's ROUTER socket to the probes, and the sequencer's ``Bus``.

- Probes connect (DEALER, routing id = host name), with ``curve`` (:class:`tcplab.wire.curve.Keys`)
  over CurveZMQ: only the known probes' keys get in, and a frame whose routing id (so its envelope
  host) is not its key's host name is refused and counted for the key's host. A ``hello`` registers a probe in the
  :class:`~controller.fleet.Fleet` and is answered ``welcome`` (with what the controller holds of
  its events), then its clock is synced. A frame whose envelope does not check, or whose host is
  not its routing id, is refused (logged, counted for that peer) and the bus goes on.
- Frames come in bursts: the bus takes what is queued without waiting (up to :data:`BURST`),
  then sends each probe one cumulative ``ack`` for the burst rather than one per event.
- ``events`` frames (batches) go to the run in progress (:attr:`ProbeBus.run`), each event checked
  (tcplab.wire.bodies.check_event): a bad one is counted (``link_events_refused``), recorded as a
  ``loss`` and counts as received. A heartbeat's totals (dropped, spilled) are counted, and what
  lies below its ``oldest`` and never came is given up and recorded as ``loss``. ``result``
  frames resolve the command that asked for them, ``pong`` frames go to the clock sync.

A ``hello`` whose ``lab_ip`` is not its host's address in the configuration (:attr:`ProbeBus.addresses`,
the inventory's) is refused: logged, counted, no welcome. A connect goes to that configured address only.

For the sequencer (controller.sequencer.Bus): :meth:`lab_ip` (the configured address, never a hello's),
:meth:`lab_port`, :meth:`connected`,
:meth:`command`, and :meth:`shaping_unavailable` (what the probe's hello said it cannot shape).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Callable

import structlog
import zmq
import zmq.asyncio

from controller import readiness
from controller.fleet import Fleet, ProbeLink
from controller.run import Run
from controller.trace.schema import LossWhy
from tcplab import logs, wire
from tcplab.errors import TcplabError
from tcplab.wire import bodies as wire_bodies
from tcplab.wire import curve as wire_curve

log = structlog.get_logger("controller")

# Records of what a probe does by itself (its dead-man switch, its start-up sweep): outside a run they
# reach no trace (the run they belong to has ended), so the controller's log says them.
ACTED_ALONE = frozenset({"deadman", "sweep"})
BURST = 512  # frames handled before acks go out and other tasks get a turn


class NotConnected(TcplabError, ConnectionError):
    """A frame for a probe that is not connected (the ROUTER has no such peer)."""


class NoAnswer(TcplabError, TimeoutError):
    """A command whose result did not come within its timeout."""


class ProbeBus:
    def __init__(self, ctx: zmq.asyncio.Context, fleet: Fleet, curve: wire_curve.Keys | None = None):
        """``curve``: the controller's keys (None: no CurveZMQ, for tests of other logic)."""
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a peer that is gone raises
        self.sock.setsockopt(zmq.LINGER, 500)
        wire.limit(self.sock)
        self.auth = wire_curve.Authenticator(ctx, curve) if curve is not None else None
        if curve is not None:
            wire_curve.server(self.sock, curve)
        self.fleet = fleet
        self.addresses: dict[str, str] = {}  # each lab host's address, from the config (the inventory's)
        self.session = wire.Session("controller")
        self._ids = itertools.count(1)  # command and ping ids
        self.pending: dict[int, tuple[str, asyncio.Future]] = {}  # command id -> (its host, its result)
        self._ack_due: set[str] = set()  # probes owed an ack at the end of this burst
        self.run: Run | None = None  # where events go while a run is in progress
        self.on_hello: Callable[[str], None] = lambda host: None
        self.on_pong: Callable[[str, dict, int], None] = lambda host, env, received_ns: None
        # events that arrive when no run is in progress: (host, session, [(seq, event)]) (controller.aftermath)
        self.on_outside: Callable[[str, str | None, list[tuple[int, dict]]], None] = lambda host, s, items: None

    def bind(self, endpoint: str) -> None:
        """Bind (in the event loop: the authenticator starts first, so nobody gets in unchecked)."""
        if self.auth is not None:
            self.auth.start(watch=self.sock)
        self.sock.bind(endpoint)

    def close(self, linger_ms: int = 500) -> None:
        self.sock.close(linger=linger_ms)
        if self.auth is not None:
            self.auth.stop()

    def next_id(self) -> int:
        return next(self._ids)

    # --- sending ------------------------------------------------------------------------------
    def frame(self, type_: str, body: dict) -> bytes:
        return self.session.frame(type_, body)

    async def send_frame(self, host: str, frame: bytes) -> None:
        """Send a frame :meth:`frame` made (the clock sync stamps T1 between the two)."""
        try:
            await self.session.send_frame(self.sock, frame, to=host.encode())
        except zmq.ZMQError as e:  # EHOSTUNREACH: no such peer (ROUTER_MANDATORY)
            raise NotConnected(f"{host} is not connected") from e

    async def send(self, host: str, type_: str, body: dict) -> None:
        """Send one frame to ``host``; :class:`NotConnected` when it is not connected."""
        await self.send_frame(host, self.frame(type_, body))

    # --- the Bus the sequencer uses -------------------------------------------------------------
    def lab_ip(self, host: str) -> str | None:
        """``host``'s lab address from the configuration; None without one (what its hello says is not used)."""
        return self.addresses.get(host)

    def lab_port(self, host: str) -> int | None:
        link = self.fleet.probes.get(host)
        return link.hello.get("port") if link else None

    def connected(self, host: str) -> bool:
        return self.fleet.connected(host)

    def shaping_unavailable(self, host: str) -> str | None:
        """Why ``host`` cannot shape, as its hello said; None if it can (or said nothing)."""
        link = self.fleet.probes.get(host)
        return readiness.why_not_shape(link.hello) if link else None

    async def command(self, host: str, action: str, args: dict, timeout: float) -> dict:
        cid = self.next_id()
        body = {"id": cid, "action": action, "args": args}
        try:
            wire_bodies.check_body("command", body)  # what the probe's decode refuses without an answer
        except wire.ProtocolError as e:
            return {"id": cid, "ok": False, "error": str(e)}  # as the probe answered a refused command
        loop = asyncio.get_running_loop()
        fut, deadline = loop.create_future(), loop.time() + timeout
        self.pending[cid] = (host, fut)
        try:  # the timeout covers the send too: a probe whose queue is full (it reads nothing) fails it
            await asyncio.wait_for(self.send(host, "command", body), timeout)
            return await asyncio.wait_for(fut, max(deadline - loop.time(), 0.0))
        except asyncio.TimeoutError:
            raise NoAnswer(f"no answer to {action} within {timeout:g} s") from None
        finally:
            self.pending.pop(cid, None)

    # --- receiving ----------------------------------------------------------------------------
    async def serve(self) -> None:
        """Receive until cancelled: each burst of frames, then its acks."""
        copy = self.auth is None  # with Curve the frames keep their User-Id property
        while True:
            msg = await self.sock.recv_multipart(copy=copy)
            handled = 0
            while True:  # each frame stamped as it is taken (a pong's T4); none taken beyond BURST
                await self._on_frame(msg, time.monotonic_ns())
                handled += 1
                if handled == BURST:
                    break
                try:
                    msg = await self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=copy)
                except zmq.Again:
                    break
            await self._send_acks()
            await asyncio.sleep(0)  # a ready socket's recv does not yield: the other tasks' turn

    async def _send_acks(self) -> None:
        """One ack per probe heard in the burst, never waiting: a probe whose queue is full (it reads
        nothing) misses this one, and the next, cumulative, says the same and more. (Waiting on it
        stopped the bus for every probe once its 1,000 unread acks filled the ROUTER's queue.)"""
        for host in sorted(self._ack_due):
            link = self.fleet.probes.get(host)
            if link is None:
                continue
            try:
                await self.session.send_frame(self.sock, self.frame("ack", {"seq": link.upto}), to=host.encode(),
                                              flags=zmq.NOBLOCK)
            except zmq.Again:
                link.counters["link_acks_unsent"] += 1
            except zmq.ZMQError as e:  # EHOSTUNREACH: gone (ROUTER_MANDATORY)
                log.warning("probe_gone", probe=host, error=str(e))
        self._ack_due.clear()

    async def _on_frame(self, msg: list, received_ns: int) -> None:
        if self.auth is not None:  # zmq.Frames: the key's host name, then the bytes
            name = msg[-1].get("User-Id")
            msg = [f.bytes for f in msg]
            if name != msg[0].decode(errors="replace"):
                self._impersonating(name, msg[0])
                return
        peer = msg[0].decode(errors="replace")
        try:
            env = self.session.decode(msg[-1], peer=msg[0])
        except wire.ProtocolError as e:
            if logs.sampled(self.session.counters["refused"]):  # a flood is counted, not logged line by line
                log.warning("frame_refused", peer=peer, reason=str(e), refused=self.session.counters["refused"])
            self.fleet.refused(peer)
            return
        try:
            await self._on_probe(env, received_ns)
        except ConnectionError as e:  # it went away between its frame and our answer
            log.warning("probe_gone", probe=env["host"], error=str(e))

    def _impersonating(self, name: str, routing_id: bytes) -> None:
        """A frame whose routing id is not its key's host: refused, counted for the key's host."""
        log.warning("frame_refused", peer=name, routing_id=routing_id.decode(errors="replace"),
                    reason="routing id is not the key's host")
        self.session.counters["refused"] += 1
        self.fleet.refused(name)

    def _misplaced(self, host: str, body: dict) -> bool:
        """A hello whose lab_ip is not its host's configured address: refused (logged, counted)."""
        expected = self.addresses.get(host)
        if expected is None or body.get("lab_ip") == expected:
            return False
        log.warning("probe_lab_ip_refused", probe=host, said=body.get("lab_ip"), configured=expected)
        self.fleet.refused(host)
        return True

    async def _on_probe(self, env: dict, received_ns: int) -> None:
        host, kind, body = env["host"], env["type"], env["body"]
        if kind == "hello":
            if self._misplaced(host, body):
                return
            before = self.fleet.probes.get(host)
            link = self.fleet.hello(host, body)
            if link is None:  # not one of the inventory's hosts: no welcome, nothing kept
                log.warning("probe_not_in_inventory", probe=host, known=sorted(self.fleet.admit))
                return
            if before is not None and before is not link and before.pending:
                # a new session: the old one's events below what it sent last will never come
                await self._give_up(before, max(before.pending) + 1, "the probe restarted (a new session)")
            log.info("probe_hello", probe=host, lab_ip=link.lab_ip, pid=body.get("pid"))
            await self.send(host, "welcome", {"ack": link.upto})
            self.on_hello(host)
            return
        link = self.fleet.seen(host)
        if link is None:  # we restarted and it has not said hello yet: it will, after SILENCE_S
            return
        if kind == "events" and isinstance(body.get("events"), list):  # the container: checked in decode
            await self._on_events(link, env["seq"], body["events"])
            self._ack_due.add(host)
        elif kind == "heartbeat":
            await self._on_heartbeat(link, body)
            self._ack_due.add(host)
        elif kind == "result":
            cid = body.get("id")
            asked = self.pending.get(cid) if isinstance(cid, int) else None
            if asked is not None and asked[0] == host and not asked[1].done():  # only from the host asked
                asked[1].set_result(body)
        elif kind == "pong":
            self.on_pong(host, env, received_ns)

    async def _on_events(self, link: ProbeLink, first: int, items: list) -> None:
        """A batch: its events numbered ``first`` on; the new ones checked one by one (a bad one is
        refused, counted and recorded, and its number counts as received: no resend loop)."""
        new = link.receive_batch(first, len(items))
        good, refused = [], []
        for seq, item, fresh in zip(range(first, first + len(items)), items, new):
            if not fresh:
                continue
            try:
                wire_bodies.check_event(item)
            except wire.ProtocolError as e:
                refused.append((seq, str(e)))
                continue
            good.append((seq, item))
        if refused:
            link.counters["link_events_refused"] += len(refused)
            log.warning("events_refused", probe=link.host, events=len(refused), first=refused[0][0],
                        reason=refused[0][1])
        if self.run is not None:
            if good:
                await self.run.add_events(link.host, [item for _, item in good], link.clock)
            for seq, reason in refused:
                await self.run.add_loss(link.host, seq, seq, LossWhy.REFUSED, reason)
            self.run.note_received(link.host, link.session, link.upto)
            return
        if good:
            self.on_outside(link.host, link.session, good)
        for _, item in good:  # no run to hold it: what the probe did by itself is said here at least
            if item["kind"] in ACTED_ALONE:
                log.warning("probe_acted_outside_run", probe=link.host, kind=item["kind"],
                            **{k: item[k] for k in ("silent_s", "cleared", "removed") if k in item})

    async def _on_heartbeat(self, link: ProbeLink, body: dict) -> None:
        """The probe's totals (dropped, spilled: counted as they grow) and the oldest event it still
        holds: what lies below it and never came is given up, recorded as ``loss``."""
        grew = link.report(body)
        if grew.get("dropped") or grew.get("spilled"):
            log.warning("probe_overflowing", probe=link.host, **grew, spill_bytes=body.get("spill_bytes"))
        oldest = body.get("oldest")
        if not isinstance(oldest, int) or isinstance(oldest, bool):
            return
        await self._give_up(link, oldest)

    async def _give_up(self, link: ProbeLink, oldest: int, detail: str | None = None) -> None:
        """What ``link`` never received below ``oldest`` is given up: counted, and a ``loss`` record."""
        missing = link.missing_below(oldest)
        lost = link.give_up_below(oldest)
        if lost:
            log.warning("events_given_up", probe=link.host, events=lost, upto=link.upto, detail=detail)
            if self.run is not None:
                for first, last in missing:
                    await self.run.add_loss(link.host, first, last, LossWhy.GIVEN_UP, detail)
