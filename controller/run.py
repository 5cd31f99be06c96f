"""One run: the directory, the trace and pcaps being written, and what each host has shown so far.

Probe events come in with the probe's monotonic clock (``t_ns``); a run maps them onto the
controller's clock through the probe's :class:`~controller.clock.ClockEstimate` and writes
``t`` as seconds since the run started. Events from before the start are not part of the film.

The records stay in memory (``run.trace.records``, arrival order) and are aligned as they arrive:
each event's ``t`` is mapped with the estimate known at that moment, and that is what the live view
reads (``trace.partial.jsonl``) and what the sequencer's expectations wait on. At the end,
:meth:`Run.align` maps every event again with the host's *final* fit (every exchange of the run,
drift included) and applies the clock's causal correction, then :meth:`Run.finish_trace` writes
trace.jsonl from the one :class:`~controller.trace.index.TraceIndex` the report and every renderer
then read. Why not keep the live ``t`` unchanged: an estimate made early in a run has seen fewer
round trips and no drift, and the causal correction needs both hosts' packets; the final trace is
the better one, so the live view and it agree "as far as the final fit allows": by how much each
host's records moved is measured and kept in run.json (``hosts.<h>.clock.realigned_max_s``;
microseconds on the netns lab, below the live view's millisecond resolution).

A probe's ``counters`` event (its drops and misses, emitted by its sync barrier) and its
``capture_stats`` are facts for run.json, not trace records: the run keeps each host's latest.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Callable

import structlog

from controller.captures import Captures
from controller.clock import ClockEstimate, causal_shift, write_exchanges
from controller.film.words import shortened
from controller.scenario import TOLERANCE_REL, TOLERANCE_S, Expectation, Step
from controller.trace.index import TraceIndex
from controller.trace.pcap import PcapFiles
from controller.trace.schema import CONTROLLER, FIELDS, Kind, LossWhy, StepStatus, Stream, is_listener
from controller.trace.writer import Trace
from tcplab.errors import TcplabError
from tcplab.tcpstates import LISTENER_REMOTE

__all__ = ["LISTENER_REMOTE", "Run", "RunDirError", "new_run_dir"]

log = structlog.get_logger("controller")
FACTS = ("capture_stats", "counters")  # event kinds that are run.json's, not the trace's
RECEIVED = ".received"  # per batch: "<host> <session> <upto>", what the trace holds of each probe's events
_FIELDS = {str(kind): fields for kind, fields in FIELDS.items()}  # by the kind's plain string


def event_record(host: str, body: dict, t: float, fields: tuple[str, ...]) -> dict:
    """The trace record of ``host``'s event ``body`` (of a kind with trace ``fields``) at ``t``."""
    rec = {"t": t, "host": host, "kind": body["kind"]}
    for k in fields:
        if k in body:
            rec[k] = body[k]
    return rec


def trace_fields(body: dict) -> tuple[str, ...] | None:
    """The trace fields of the event's kind; None for a kind that is not a trace record."""
    kind = body.get("kind")
    return _FIELDS.get(kind) if type(kind) is str else None


class RunDirError(TcplabError, RuntimeError):
    """No free run directory could be made."""


def new_run_dir(runs_dir: Path, name: str) -> Path:
    runs_dir.mkdir(parents=True, exist_ok=True)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
    for n in range(1, 1000):
        path = runs_dir / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunDirError(f"no free run directory for {base} in {runs_dir}")


class Run:
    def __init__(self, run_dir: Path, hosts: tuple[str, ...]):
        self.dir = run_dir
        self.id = run_dir.name
        self.hosts = hosts
        self.start_ns = time.monotonic_ns()
        self.start_wall_ns = time.time_ns()  # the same instant as wall-clock time, for merged.pcapng
        self.trace = Trace(run_dir)
        self.pcaps = PcapFiles(run_dir)
        self.pcaps.ensure(hosts)
        self.captures = Captures(run_dir, hosts)  # <host>.pcapng, the analysis, merged.pcapng
        self.changed = asyncio.Condition()
        self.backends: dict[str, str | None] = {}
        self.shaper_counters: dict[str, dict] = {}  # what went through each host's delay, read at its clear
        self.packets = {h: 0 for h in hosts}
        self.capture_stats: dict[str, dict] = {}
        self.counters: dict[str, dict[str, int]] = {}  # each probe's latest counters event
        self.silent: dict[str, str] = {}                # host -> why: it fell silent during the run (liveness)
        self.silences: dict[str, list[dict]] = {}       # host -> each silence, for run.json (hosts.<h>.silences)
        self.index: TraceIndex | None = None            # the final trace's, once aligned
        self.rfc: dict | None = None                    # the RFC 9293 check of the final trace (controller.rfc9293)
        self._received = open(run_dir / RECEIVED, "a", encoding="utf-8")
        self._received_at: dict[str, tuple[str | None, int]] = {}
        self._stamped: list[tuple[dict, int]] = []  # (record, probe t_ns): mapped again at the end
        self._seen: dict[tuple[str, str], list[dict]] = {}  # (kind, host) -> records, for the expectations
        self.clock_bound: dict[str, int] = {}  # host -> its clock estimate's uncertainty (ns), the latest
        self.jitter_s = 0.0  # the scenario's largest jitter (the sequencer's): a time's tolerance grows by it
        self.delay_s = 0.0   # the scenario's delay (the sequencer's): a time written in delays (``at 2d``) is of it
        self.pairs: dict[str, dict[str, tuple[str, str]]] = {}  # a named connection -> host -> (local, remote)

    def t(self, controller_ns: int) -> float:
        return round((controller_ns - self.start_ns) / 1e9, 9)

    def now(self) -> float:
        return self.t(time.monotonic_ns())

    # --- records in ----------------------------------------------------------------------------
    async def add_event(self, host: str, body: dict, clock: ClockEstimate) -> None:
        await self.add_events(host, [body], clock)

    async def add_events(self, host: str, bodies: list[dict], clock: ClockEstimate) -> None:
        """A batch of ``host``'s events, in order: its records kept and written, one wake-up for the waits."""
        if host not in self.hosts:
            return
        packets = self.packets[host]
        if clock.uncertainty_ns is not None:
            self.clock_bound[host] = clock.uncertainty_ns
        records = [rec for rec in (self._record(host, body, clock) for body in bodies) if rec is not None]
        if self.packets[host] != packets:  # the pcaps once per batch, not per packet
            self.pcaps.flush()
            self.captures.flush()
        if records:
            await self.add_many(records)

    def note_received(self, host: str, session: str | None, upto: int) -> None:
        """``host``'s events up to ``upto`` (of its probe process ``session``) are in the trace: a line
        in ``.received``, flushed like the partial trace, so that a restarted controller knows which
        of the events a probe sends again after its hello the trace already holds (controller.aftermath)."""
        if self._received_at.get(host) != (session, upto) and not self._received.closed:
            self._received_at[host] = (session, upto)
            self._received.write(f"{host} {session or '-'} {upto}\n")
            self._received.flush()

    async def add_loss(self, host: str, first: int, last: int, why: LossWhy | str, detail: str | None = None) -> dict:
        """The record of ``host``'s events ``first`` .. ``last`` that the trace will never have (``t`` now)."""
        rec = {"t": self.now(), "host": host, "kind": Kind.LOSS.value, "from": first, "to": last,
               "why": LossWhy(why).value}
        if detail is not None:
            rec["detail"] = detail
        return await self.add(rec)

    def _record(self, host: str, body: dict, clock: ClockEstimate) -> dict | None:
        """The trace record of one event (None: a fact for run.json, an unknown kind, before the start)."""
        kind = body.get("kind")
        fields = trace_fields(body)
        if fields is None:
            if kind in FACTS:
                self._fact(host, kind, body)
            return None
        t_ns = body.get("t_ns")
        if not isinstance(t_ns, int):
            return None
        t = self.t(clock.to_controller(t_ns))
        if t < 0:
            return None
        rec = event_record(host, body, t, fields)
        self._stamped.append((rec, t_ns))
        if kind == Kind.PACKET:
            rec["analysis"] = []  # a packet without its frame: nothing to analyse
            if isinstance(body.get("raw"), bytes) and isinstance(body.get("wall_ns"), int):
                self.pcaps.write(host, body["raw"], body["wall_ns"])
                self.captures.add(host, rec, body["raw"], body["wall_ns"])
            self.packets[host] += 1
        elif kind == Kind.SHAPER and body.get("backend"):  # a later clear keeps the record of what was used
            self.backends[host] = body["backend"]
        elif kind == Kind.SHAPER and isinstance(body.get("counters"), dict) and body["counters"]:
            self.shaper_counters[host] = body["counters"]
        return rec

    def _fact(self, host: str, kind: str, body: dict) -> None:
        if kind == "capture_stats":  # the kernel's counters
            self.capture_stats[host] = {k: v for k, v in body.items() if k not in ("kind", "t_ns")}
        elif isinstance(body.get("counters"), dict):  # flat name -> count; anything else is not a count
            self.counters[host] = {str(k): v for k, v in body["counters"].items()
                                   if isinstance(v, int) and not isinstance(v, bool)}

    async def add(self, rec: dict) -> dict:
        await self.add_many([rec])
        return rec

    async def add_many(self, records: list[dict]) -> None:
        self.trace.add_many(records)
        for rec in records:
            self._seen.setdefault((rec["kind"], rec["host"]), []).append(rec)
        async with self.changed:
            self.changed.notify_all()

    async def add_step(self, step: Step, status: StepStatus | str, error: str | None = None) -> dict:
        """The step's record (``t`` now), e.g. its start: the record's ``t`` is the step's ``since``."""
        rec = {"t": self.now(), "host": CONTROLLER, "kind": Kind.STEP.value, "index": step.index,
               "action": step.action, "target": step.target, "status": StepStatus(status).value}
        if error is not None:
            rec["error"] = error
        detail = getattr(step, "detail", None)
        if status == StepStatus.START and detail:
            rec["detail"] = detail
        if status == StepStatus.START and getattr(step, "own_app", False):
            rec["app"] = True
        return await self.add(rec)

    async def note_silent(self, host: str, why: str, silent_s: float) -> None:
        """``host`` stopped answering (controller.liveness): a fact for run.json, and the step
        waiting now wakes up to fail naming it."""
        self.silent.setdefault(host, why)
        self.silences.setdefault(host, []).append({"t": self.now(), "silent_s": round(silent_s, 3)})
        log.warning("run_probe_silent", probe=host, silent_s=round(silent_s, 3))
        async with self.changed:
            self.changed.notify_all()

    def note_back(self, host: str) -> None:
        """``host`` speaks again after a silence: when, in its last silence's fact."""
        if self.silences.get(host):
            self.silences[host][-1]["back_t"] = self.now()

    # --- named connections ------------------------------------------------------------------------
    def note_pair(self, name: str, host: str, peer: str, local: str, remote: str) -> None:
        """Connection ``name``, which ``host`` opened to ``peer``, is ``local`` -> ``remote`` (its connect's result)."""
        self.pairs[name] = {host: (local, remote), peer: (remote, local)}

    def pair(self, name: str, host: str) -> tuple[str, str] | None:
        """Connection ``name`` as ``host`` sees it: (local, remote), once its connect reported it."""
        return self.pairs.get(name, {}).get(host)

    def _of(self, e: Expectation) -> Callable[[dict], bool]:
        """Whether a record of ``e``'s host is of ``e``'s connection (every one, when it names none):
        a state, kernel or console record by its local and remote address, a segment by its source
        and destination."""
        if e.conn is None:
            return lambda r: True
        pair = self.pair(e.conn, e.host)
        if pair is None:
            return lambda r: False
        both = {pair, pair[::-1]}
        return lambda r: (r.get("local"), r.get("remote")) == pair or (r.get("src"), r.get("dst")) in both

    # --- what has been seen --------------------------------------------------------------------
    def states_since(self, host: str, since: float, listener: bool | None = None) -> list[dict]:
        return [r for r in self._seen.get((Kind.STATE, host), ()) if r["t"] >= since
                and (listener is None or listener == is_listener(r))]

    def printed_since(self, host: str, since: float) -> list[str]:
        """The lines ``host``'s nc printed (stdout) from ``since`` on, stripped."""
        return [r["text"].strip() for r in self._seen.get((Kind.CONSOLE, host), ())
                if r["t"] >= since and r.get("stream") == Stream.STDOUT]

    def packets_since(self, host: str, since: float, direction: str | None = None) -> list[dict]:
        """The segments ``host``'s capture saw from ``since`` on (``direction``: only out or in)."""
        return [r for r in self._seen.get((Kind.PACKET, host), ()) if r["t"] >= since
                and (direction is None or r.get("dir") == direction)]

    def kernel_since(self, host: str, since: float) -> list[dict]:
        return [r for r in self._seen.get((Kind.KERNEL, host), ()) if r["t"] >= since]

    def hits(self, e: Expectation, since: float) -> list[float]:
        """The times of what ``e`` counts, in order: each connection's first arrival in the state, each
        matching segment, kernel event or printed line (of its connection, when it names one)."""
        of = self._of(e)
        if e.state is not None:
            first: dict = {}
            for r in self.states_since(e.host, since, e.state == "LISTEN"):
                if r["to"] == e.state and of(r):
                    first.setdefault((r["local"], r["remote"]), r["t"])
            return sorted(first.values())
        if e.packet is not None:
            return sorted(r["t"] for r in self.packets_since(e.host, since, e.packet.dir) if e.packet.matches(r) and of(r))
        if e.kernel is not None:
            return sorted(r["t"] for r in self.kernel_since(e.host, since) if r["event"] == e.kernel and of(r))
        return sorted(r["t"] for r in self._seen.get((Kind.CONSOLE, e.host), ()) if r["t"] >= since
                      and r.get("stream") == Stream.STDOUT and r["text"].strip() == e.text and of(r))

    def tolerance(self, e: Expectation) -> float:
        """How far from its ``at`` an expectation's time may be: its own, or packetdrill's rule, the larger
        of an absolute bound (scenario.TOLERANCE_S, twice the scenario's largest jitter, the clocks'
        bound now) and a fraction (scenario.TOLERANCE_REL) of the time."""
        if e.tol is not None:
            return e.tol
        bound = max(self.clock_bound.values(), default=0) / 1e9
        return max(TOLERANCE_S + 2 * self.jitter_s + bound, TOLERANCE_REL * (e.when(self.delay_s) or 0.0))

    def verdict(self, e: Expectation, since: float) -> bool | None:
        """True once ``e`` is met (at its time, if it has one), False once its time was missed, None
        while it may still be."""
        hits = self.hits(e, since)
        if len(hits) < e.count:
            return None
        return e.at is None or abs(hits[e.count - 1] - since - e.when(self.delay_s)) <= self.tolerance(e)

    def met(self, e: Expectation, since: float) -> bool:
        return self.verdict(e, since) is True

    def explain(self, e: Expectation, since: float, most: int = 10) -> dict:
        """An expectation against what was observed, for a failed step: ``expected``, ``observed``
        (how many of what it counts) and ``records``, the last ``most`` of those it looked at, in
        words (time since the run's start; a ``*`` marks one that counted). For an expectation on a
        named connection, only that connection's records."""
        of = self._of(e)
        if e.state is not None:
            looked = [r for r in self.states_since(e.host, since, e.state == "LISTEN") if of(r)]
            counted = [r["to"] == e.state for r in looked]
            observed = f"{len(self.hits(e, since))} of {e.count} reached {e.state}"
            lines = [f"t={r['t']:.3f} s {r['local']} {r['remote']} {r['from']} -> {r['to']}" for r in looked]
        elif e.packet is not None:
            looked = [r for r in self.packets_since(e.host, since, e.packet.dir) if of(r)]
            counted = [e.packet.matches(r) for r in looked]
            verb = "sent" if e.packet.dir == "out" else "received"
            observed = f"{sum(counted)} of {e.count} among {len(looked)} segments {verb}"
            lines = [f"t={r['t']:.3f} s {r.get('src')} > {r.get('dst')} [{'+'.join(r.get('flags', ()))}] "
                     f"seq={r.get('seq')} len={r.get('len')}"
                     + (f" ({', '.join(r['analysis'])})" if r.get("analysis") else "") for r in looked]
        elif e.kernel is not None:
            looked = [r for r in self.kernel_since(e.host, since) if of(r)]
            counted = [r["event"] == e.kernel for r in looked]
            observed = f"{sum(counted)} of {e.count} among {len(looked)} kernel events"
            lines = [f"t={r['t']:.3f} s {r['event']} {r['local']} {r['remote']} in {r.get('state') or '?'}"
                     for r in looked]
        else:
            looked = [r for r in self._seen.get((Kind.CONSOLE, e.host), ())
                      if r["t"] >= since and r.get("stream") == Stream.STDOUT and of(r)]
            counted = [r["text"].strip() == e.text for r in looked]
            observed = f"{sum(counted)} of {e.count} lines printed"
            lines = [f"t={r['t']:.3f} s prints {shortened(r['text'].strip())!r}" for r in looked]
        if e.at is not None:
            hits = self.hits(e, since)
            when = (f"the {_nth(e.count)} at {hits[e.count - 1] - since:.3f} s" if len(hits) >= e.count
                    else f"the {_nth(e.count)} not yet")
            expected = f"{e.when(self.delay_s):g}" + (f" ({e.delays:g} x the delay of {self.delay_s:g} s"
                                                     + (f" + {e.at:g} s)" if e.at else ")") if e.delays else "")
            observed += f"; {when} after the step began, expected at {expected} ± {self.tolerance(e):.3g} s"
        shown = [("* " if c else "  ") + line for c, line in zip(counted, lines)][-most:]
        if len(lines) > most:
            shown.insert(0, f"  ({len(lines) - most} earlier not shown)")
        return {"expected": str(e), "observed": observed, "records": shown}

    def observed(self, host: str, since: float, most: int = 12) -> str:
        """What ``host`` did since ``since``, in words, for a failed step's message: each transition
        with how many connections made it (the ``most`` first kinds), the last lines printed."""
        moves: dict[str, int] = {}
        for r in self.states_since(host, since, listener=False):
            moves[f"{r['from']}->{r['to']}"] = moves.get(f"{r['from']}->{r['to']}", 0) + 1
        states = [m if n == 1 else f"{m} x{n}" for m, n in list(moves.items())[:most]]
        if len(moves) > most:
            states.append(f"and {len(moves) - most} other transitions")
        lines = self.printed_since(host, since)
        parts = [f"states {', '.join(states)}" if states else "no connection state change"]
        if lines:
            last = ", ".join(repr(shortened(x)) for x in lines[-3:])
            parts.append(f"printed {last}" if len(lines) <= 3 else f"printed {len(lines)} lines, the last {last}")
        return f"{host}: " + "; ".join(parts)

    async def wait_for(self, expect: tuple[Expectation, ...], since: float, timeout: float) -> list[Expectation]:
        """Wait until every expectation is met; return the ones still unmet at the timeout, or
        at once when a host of the run fell silent (:attr:`silent`: the caller names it)."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with self.changed:
            while True:
                verdicts = [(e, self.verdict(e, since)) for e in expect]
                unmet = [e for e, v in verdicts if v is not True]
                left = deadline - asyncio.get_running_loop().time()
                if not unmet or left <= 0 or self.silent or any(v is False for _, v in verdicts):
                    return unmet  # a time missed fails at once
                try:
                    await asyncio.wait_for(self.changed.wait(), timeout=left)
                except asyncio.TimeoutError:
                    pass

    # --- the end -------------------------------------------------------------------------------
    def align(self, clocks: dict[str, ClockEstimate] | None = None) -> dict[str, dict]:
        """Map every event again with each host's final clock fit, then tighten with the packets.

        During the run an event is mapped with the estimate known when it arrives; the final fit
        (offset and drift from every exchange of the run, controller/clock.py) maps it at its own
        time. Then the first host is the reference and every other host's records move by the
        smallest shift that makes no segment arrive before it left (clock.causal_shift on the run's
        index, :attr:`index`), bounded by the ping estimates. Returns per host the estimate at the
        run's start, the correction and how far its records moved from their live ``t``
        (``realigned_max_s``), for run.json (``hosts.<h>.clock``); the exchanges go to ``clock.jsonl``.
        """
        clocks = {h: c for h, c in (clocks or {}).items() if h in self.hosts}
        live = {id(r): r["t"] for r in self.trace.records}
        for rec, t_ns in self._stamped:
            if rec["host"] in clocks:
                rec["t"] = self.t(clocks[rec["host"]].to_controller(t_ns))
        out: dict[str, dict] = {h: clocks[h].as_dict(self.start_ns) for h in self.hosts if h in clocks}
        write_exchanges(self.dir / "clock.jsonl", clocks, since_ns=self.start_ns - 60_000_000_000)
        self.index = index = TraceIndex(self.trace.records, ordered=False)
        ref = self.hosts[0] if self.hosts else None
        for host in self.hosts[1:]:
            u = [out.get(h, {}).get("uncertainty_ns") for h in (ref, host)]
            bound = None if None in u else (u[0] + u[1]) / 1e9
            fix = causal_shift(index, ref, host, bound_s=bound)
            out.setdefault(host, {})["causal"] = fix
            index.shift(host, fix["shift_s"])
        for host in self.hosts:
            moved = [abs(r["t"] - live[id(r)]) for r in index.records if r["host"] == host]
            if host in out:
                out[host]["realigned_max_s"] = round(max(moved, default=0.0), 9)
        return out

    def finish_captures(self) -> None:
        """After align(), before the trace is finished: merged.pcapng (the analysis was made as the packets came)."""
        try:
            self.captures.finish(self.start_wall_ns)
        except Exception as e:  # the trace must still be written
            log.error("captures_not_finished", error=repr(e))

    def finish_trace(self) -> TraceIndex:
        """Write trace.jsonl from the run's index (built by align(), or now) and return the index:
        its records are the trace's own from here on (the run's private keys are gone)."""
        if self.index is None:
            self.index = TraceIndex(self.trace.records, ordered=False)
        for r in self.index.records:
            r.pop("_n", None)
        self.trace.finish(self.index.records)
        return self.index

    def close(self) -> None:
        self.captures.close()
        self.pcaps.close()
        self.trace.close()
        self._received.close()

    def release(self) -> None:
        """After the finish (everything is on disk): drop the records, so that a finished run
        something still refers to (the runner's last sequencer) holds no memory of its size."""
        self.trace.records = []
        self.captures.frames = {h: [] for h in self.hosts}
        self.captures.analyzers = {}
        self._stamped, self._seen, self.index = [], {}, None


def _nth(n: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(n, f"{n}th")
