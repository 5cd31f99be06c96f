"""The terminal film: one frame of a run at a time ``t``, drawn with rich from the film model.

:func:`snapshot` is a pure function of a :class:`~controller.film.model.Film` and a time; the
replay (controller/film/playback.py) and the live view of a running film (controller/film/watch.py)
only choose which ``t`` to draw and when. Top to bottom:

- the header: the run, the time, the current step (``[4/9] send on thinkpad``) and a progress bar
  through the scenario's steps;
- each host's connection state, big, in its role's colour (server blue, client red, both green
  when the two sides are in the same state), with its last transition and what caused it;
- the last packets as Wireshark lists them, the capture they come from, retransmissions dim;
- each host's console (``>`` marks what the scenario typed);
- both hosts' ``netstat -nao`` rows for the lab port, from each host's latest netstat record, the
  timers counted down by the time since that record.

What came from a probe (console lines, a step's error, netstat's cells) is drawn with its control
characters made visible (controller/film/visible.py) before the layout, so an escape sequence nc
printed is shown, never obeyed; playback and watch also :func:`~controller.film.visible.guard` the frame.
"""

from __future__ import annotations

import io
import re
from bisect import bisect_right

from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from controller.film.model import Film
from controller.film.visible import visible
from controller.trace import Kind, StepStatus, Stream

ROLE_COLOURS = {"server": "blue", "client": "red"}
BOTH_COLOUR = "green"
PACKET_ROWS = 8
CONSOLE_LINES = 4
NARROW = 100          # below this width the tables drop their least telling columns
_TIMER = re.compile(r"^(\w+) \((\d+(?:\.\d+)?)/(\d+)/(\d+)\)$")


def upto_index(film: Film, t: float) -> int:
    """The index of the last trace record at or before ``t`` (-1 before the first)."""
    return bisect_right([r["t"] for r in film.records], t) - 1


def colours(film: Film, upto: int) -> dict[str, str]:
    """Each host's colour once record ``upto`` has happened: its role's, or green when both agree."""
    states = {h: film.state_at(h, upto) for h in film.hosts}
    if len(set(states.values())) == 1:
        return {h: BOTH_COLOUR for h in film.hosts}
    return {h: ROLE_COLOURS[film.roles[h]] for h in film.hosts}


def step_progress(film: Film, upto: int, total: int | None = None) -> tuple[dict | None, int, int]:
    """(the latest step record, steps finished, steps in all) once record ``upto`` has happened.

    The number of steps is the largest ``index`` among the trace's step records, or ``total`` when
    that is larger (a running film knows only the steps so far).
    """
    known = max((r["index"] for r in film.records.steps()), default=0)
    seen = film.records.span(Kind.STEP, 0, upto + 1)
    done = {r["index"] for r in seen if r["status"] in (StepStatus.OK, StepStatus.FAILED)}
    return (seen[-1] if seen else None), len(done), max(known, total or 0)


def step_label(step: dict | None, total: int) -> str:
    if step is None:
        return "before the first step"
    where = "" if step["target"] == "-" else f" on {step['target'].replace(',', ' and ')}"
    status = {"start": "", "ok": " ✓"}.get(step["status"], " FAILED")
    return f"[{step['index']}/{total}] {step['action']}{where}{status}"


def countdown(timer: str, elapsed: float) -> str:
    """A netstat timer such as ``timewait (59.87/0/0)`` counted down by ``elapsed`` seconds."""
    m = _TIMER.match(timer)
    if not m or m.group(1) == "off":
        return timer
    left = max(0.0, float(m.group(2)) - max(0.0, elapsed))
    return f"{m.group(1)} ({left:.2f}/{m.group(3)}/{m.group(4)})"


def _header(film: Film, t: float, upto: int, run: str, total: int | None, note: str, end: float | None) -> Panel:
    step, done, steps = step_progress(film, upto, total)
    grid = Table.grid(expand=True, padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_column(no_wrap=True, justify="right")
    clock = f"t = {t:7.3f} s" + (f" of {end:.3f} s" if end is not None else "")
    grid.add_row(Text(clock), ProgressBar(total=max(steps, 1), completed=done), Text(f"{done}/{steps} steps"))
    failed = step is not None and step["status"] == StepStatus.FAILED
    line = Text(step_label(step, steps), style="bold red" if failed else "bold", no_wrap=True, overflow="ellipsis")
    if note:
        line.append(f"   {note}", style="italic yellow")
    body = Group(grid, line)
    if step is not None and step.get("error"):
        body = Group(grid, line, Text(visible(step["error"]), style="red"))
    return Panel(body, title=f"tcplab · {run}" if run else "tcplab", title_align="left", box=box.ROUNDED)


def _host_state(film: Film, host: str, upto: int, colour: str, big: bool) -> Panel:
    state = film.state_at(host, upto)
    block: RenderableType = Text(state, style=f"bold white on {colour}", justify="center")
    if big:
        block = Padding(block, (1, 2), style=f"bold white on {colour}")
    lines: list[RenderableType] = [block]
    last = [tr for tr in film.transitions if tr.host == host and tr.record <= upto]
    wrap = {} if big else {"no_wrap": True, "overflow": "ellipsis"}   # a small pane: one line each
    if last:
        tr = last[-1]
        now = tr.record == upto
        why = tr.because if tr.packet is None else f"No. {tr.packet}: {tr.because}"
        lines.append(Text(f"{tr.frm} → {tr.to} at {tr.t:.3f} s" + (f"  ({tr.rfc})" if tr.rfc else ""),
                          style="bold yellow" if now else "", **wrap))
        lines.append(Text(why, style="yellow" if now else "dim", **wrap))
    else:
        lines.append(Text("no transition yet", style="dim"))
    title = Text.assemble((host, f"bold {ROLE_COLOURS[film.roles[host]]}"), f" · {film.roles[host]}")
    return Panel(Group(*lines), title=title, title_align="left", box=box.ROUNDED, height=9 if big else 5)


def _table(title: str, expand: bool = False) -> Table:
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, expand=expand,
                 title=title, title_justify="left", title_style="bold")


PACKET_COLUMNS = ("No.", "Time", "Capture", "Source", "Destination", "Protocol", "Length", "Info")


def _packet_cells(p: dict) -> dict[str, str]:
    arrow = "→" if p["dir"] == "out" else "←"
    return {"No.": str(p["no"]), "Time": f"{p['t']:.3f}", "Capture": f"{p['host']} {arrow}",
            "Source": p["source"], "Destination": p["destination"], "Protocol": p["protocol"],
            "Length": "" if p["length"] is None else str(p["length"]), "Info": p["info"]}


def _packet_widths(film: Film) -> dict[str, int]:
    every = [_packet_cells(p) for p in film.packets]
    return {name: max([len(name)] + [len(c[name]) for c in every]) for name in PACKET_COLUMNS}


def _packets(film: Film, upto: int, rows: int, narrow: bool, widths: dict[str, int]) -> Table:
    """The last ``rows`` packets; the columns are as wide as the whole film needs, so they never jump."""
    names = list(PACKET_COLUMNS)
    if narrow:
        names = ["No.", "Time", "Capture", "Info"]
    elif all(p["length"] is None for p in film.packets):  # a trace from before frame_len was recorded
        names.remove("Length")
    table = _table("packets", expand=True)
    for name in names:
        width = None if name == "Info" else widths[name]
        table.add_column(name, no_wrap=True, overflow="ellipsis", width=width, ratio=1 if name == "Info" else None,
                         justify="right" if name in ("No.", "Time", "Length") else "left")
    seen = [p for p in film.packets if p["record"] <= upto]
    for p in seen[max(0, len(seen) - rows):]:
        style = ("dim" if p["retransmission"] else "") + (" reverse" if p["record"] == upto else "")
        cells = _packet_cells(p)
        table.add_row(*(cells[n] for n in names), style=style.strip() or None)
    for _ in range(max(0, rows - len(seen))):
        table.add_row(*([""] * len(names)))
    return table


def _console(film: Film, host: str, upto: int, lines: int) -> Panel:
    seen = film.records.span(Kind.CONSOLE, 0, upto + 1, host)
    text = Text()
    for r in seen[-lines:]:
        style = {"stdin": "bold", "stderr": "red"}.get(r.get("stream"), "")
        text.append(("> " if r.get("stream") == Stream.STDIN else "") + visible(r["text"]) + "\n", style=style)
    text.append("\n" * max(0, lines - len(seen)))
    text.rstrip()
    return Panel(text, title=f"{host} console", title_align="left", box=box.ROUNDED, height=lines + 2)


def _netstat(film: Film, t: float, upto: int, narrow: bool) -> Table:
    table = _table("netstat -nao (lab port)")
    names = ("Host", "Proto", "Recv-Q", "Send-Q", "Local Address", "Foreign Address", "State", "Timer")
    keep = [i for i, name in enumerate(names) if not (narrow and name in ("Proto", "Recv-Q", "Send-Q"))]
    for i in keep:
        table.add_column(names[i], no_wrap=True, overflow="ellipsis")
    for host in film.hosts:
        latest = next(reversed(film.records.span(Kind.NETSTAT, 0, upto + 1, host)), None)
        colour = ROLE_COLOURS[film.roles[host]]
        if latest is None or not latest["rows"]:
            cells = [Text(host, style=colour)] + [""] * (len(keep) - 1)
            cells[keep.index(4)] = Text("(no socket)", style="dim")   # under Local Address
            table.add_row(*cells)
            continue
        for row in latest["rows"]:
            cells = [Text(host, style=colour), *(visible(str(row[k])) for k in ("proto", "recv_q", "send_q", "local",
                     "foreign", "state")), visible(countdown(str(row["timer"]), t - latest["t"]))]
            table.add_row(*(cells[i] for i in keep))
    return table


def _frame(film: Film, t: float, upto: int, head: Panel, width: int, widths: dict[str, int],
           rows: int, big: bool, lines: int) -> Group:
    colour = colours(film, upto)
    states = Table.grid(expand=True, padding=(0, 1))
    consoles = Table.grid(expand=True, padding=(0, 1))
    for _ in film.hosts:
        states.add_column(ratio=1)
        consoles.add_column(ratio=1)
    states.add_row(*(_host_state(film, h, upto, colour[h], big) for h in film.hosts))
    consoles.add_row(*(_console(film, h, upto, lines) for h in film.hosts))
    narrow = width < NARROW
    return Group(head, states, _packets(film, upto, rows, narrow, widths), consoles, _netstat(film, t, upto, narrow))


def _sizes(film: Film) -> list[tuple[int, bool, int]]:
    """(packet rows, big state blocks, console lines), from the full layout down to the smallest."""
    most = max(len(film.records.kind(Kind.CONSOLE, h)) for h in film.hosts)
    lines = min(CONSOLE_LINES, max(1, most))
    return [(n, True, lines) for n in range(PACKET_ROWS, 2, -1)] + [(3, False, lines)] + \
        [(2, False, n) for n in range(lines, 0, -1)] + [(1, False, 1), (0, False, 1)]


def snapshot(film: Film, t: float, *, run: str = "", total_steps: int | None = None, upto: int | None = None,
             note: str = "", end: float | None = None, height: int | None = None, width: int = 120) -> Group:
    """The frame at time ``t``: every record up to ``upto`` (default: the last one at or before ``t``).

    ``width`` below 100 drops the packet list's addresses, protocol and length and netstat's queues;
    ``height`` (the terminal's lines) shortens the packet list, then the state blocks and the
    consoles, until the frame fits a small pane (tmux's default 80x24 included).
    """
    upto = upto_index(film, t) if upto is None else upto
    head = _header(film, t, upto, run, total_steps, note, end)
    frame, widths = None, _packet_widths(film)
    for rows, big, lines in _sizes(film):
        frame = _frame(film, t, upto, head, width, widths, rows, big, lines)
        if height is None or _height(frame, width) <= height:
            break
    return frame


def _height(renderable: RenderableType, width: int) -> int:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    return len(console.render_lines(renderable, console.options.update(width=width), pad=False))


def waiting(text: str, run: str = "") -> Panel:
    """The frame before a film can be drawn (no run yet, or not both hosts seen yet)."""
    return Panel(Text(text, style="italic"), title=f"tcplab · {run}" if run else "tcplab", title_align="left")
