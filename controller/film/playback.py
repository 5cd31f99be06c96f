"""``tcplab replay``: a finished run played again in the terminal, moment by moment.

Timing. The film steps through ``film.moments`` (steps, shaping, packets, kernel events, state
changes, console lines). The wait after a moment is the trace's gap to the next moment, in film
seconds, played at ``speed`` (1 = real time, 0.1 to 20):

- ``--slow`` (slow motion): every moment stays on screen at least ``SLOW_MIN_S`` film seconds (gaps.py), so
  a state that lived microseconds (a zero-delay handshake) can still be seen; longer gaps are kept;
- a quiet stretch longer than ``max_gap`` film seconds (default ``MAX_GAP_S``, the long-gap rule's limit
  of controller/film/gaps.py; 0 keeps every gap),
  such as TIME_WAIT's 60 s, is played in ``max_gap`` seconds with a note in the header saying how
  long it really was. The clock and the netstat timers keep running through it, only faster.

While waiting, the frame is redrawn ``FPS`` times a second with the clock between the two moments,
so the netstat timers count down. On a terminal the frames are drawn with rich's Live (tmux
included); otherwise one plain line per moment is printed (controller/film/lines.py), paced the
same way.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from rich.console import Console
from rich.live import Live

from controller.film import gaps, lines, model, term
from controller.film.model import Film
from controller.film.tracefile import NotATrace, open_run
from controller.film.visible import guard, visible
from tcplab import logs

SPEED_MIN, SPEED_MAX = 0.1, 20.0
SLOW_MIN_S = gaps.SLOW_MIN_S
MAX_GAP_S = gaps.LONG_GAP_S
FPS = 10
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Beat:
    """One moment of the replay: draw trace record ``moment`` at ``t``, then hold ``hold`` wall seconds
    while the clock runs on to ``t + gap``."""
    moment: int
    t: float
    gap: float
    hold: float
    note: str = ""


def schedule(film: Film, speed: float = 1.0, slow: bool = False, max_gap: float = MAX_GAP_S) -> list[Beat]:
    if not SPEED_MIN <= speed <= SPEED_MAX:
        raise ValueError(f"speed {speed:g} is out of range: {SPEED_MIN:g} to {SPEED_MAX:g}")
    recs, beats = film.records, []
    end = recs[-1]["t"] if recs else 0.0
    for k, i in enumerate(film.moments):
        t = recs[i]["t"]
        last = k + 1 == len(film.moments)
        gap = max(0.0, (end if last else recs[film.moments[k + 1]]["t"]) - t)
        play, note = gap, ""
        if gaps.is_cut(gap, max_gap):
            play = gaps.shown(gap, max_gap)
            waiting = [h for h in film.hosts if film.state_at(h, i) == "TIME_WAIT"]
            why = f" ({' and '.join(waiting)} in TIME_WAIT)" if waiting else ""
            note = f"fast-forward: {gap:.1f} s of quiet{why} in {max_gap / speed:.1f} s"
        if slow and not last:
            play = max(play, SLOW_MIN_S)
        beats.append(Beat(i, t, gap, play / speed, note))
    return beats


def _upto(film: Film, beats: list[Beat], k: int, t: float) -> int:
    """The last record to show at ``t`` during beat ``k``: the moment, and the backdrop (netstat, a
    step's end) up to ``t``, never the next moment."""
    nxt = beats[k + 1].moment if k + 1 < len(beats) else len(film.records)
    return min(max(beats[k].moment, term.upto_index(film, t)), nxt - 1)


def play(film: Film, beats: list[Beat], console: Console, run: str = "", stop: threading.Event | None = None) -> bool:
    """Play ``beats`` on ``console``; False when ``stop`` was set before the end."""
    stop = stop or threading.Event()
    end = film.records[-1]["t"] if film.records else 0.0
    if not console.is_terminal or console.is_dumb_terminal:
        for b in beats:
            console.print(visible(lines.line(film, b.moment)), highlight=False, markup=False, emoji=False,
                          soft_wrap=True)
            console.file.flush()
            if stop.wait(b.hold):
                return False
        return True
    with Live(console=console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as live:
        start = time.monotonic()
        due = 0.0
        for k, b in enumerate(beats):
            begin, due = due, due + b.hold
            while True:
                now = time.monotonic() - start
                frac = 0.0 if b.hold <= 0 else min(1.0, max(0.0, (now - begin) / b.hold))
                t = b.t + b.gap * frac
                live.update(guard(term.snapshot(film, t, run=run, upto=_upto(film, beats, k, t), note=b.note, end=end,
                                                height=console.size.height - 1, width=console.size.width)),
                            refresh=True)
                left = due - (time.monotonic() - start)
                if left <= 0:
                    break
                if stop.wait(min(left, 1.0 / FPS)):
                    return False
    return True


def replay(film: Film, speed: float = 1.0, slow: bool = False, max_gap: float = MAX_GAP_S, run: str = "",
           console: Console | None = None) -> int:
    """Replay ``film``; the exit status: 0 done, 130 interrupted (Ctrl-C), 143 terminated."""
    beats = schedule(film, speed, slow, max_gap)
    console = console or Console()
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        return 0 if play(film, beats, console, run, stop) else 143
    except KeyboardInterrupt:
        return 130
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def main(path: str, speed: float = 1.0, slow: bool = False, max_gap: float = MAX_GAP_S) -> int:
    """``tcplab replay RUN_DIR``: 0 done, 2 bad input (one line on stderr), 130 Ctrl-C."""
    logs.configure_cli()  # events on stderr, the film on stdout; routine ones are debug
    if not SPEED_MIN <= speed <= SPEED_MAX:
        return _bad(f"--speed {speed:g} is out of range: {SPEED_MIN:g} to {SPEED_MAX:g}")
    if max_gap < 0:
        return _bad(f"--max-gap {max_gap:g} is negative (0 keeps every gap)")
    try:
        records, run, finished = open_run(Path(path))
        film = model.build(records)
    except NotATrace as e:
        return _bad(str(e))
    except (ValueError, KeyError, TypeError) as e:
        return _bad(f"{path} cannot be replayed: {e}")
    except KeyboardInterrupt:
        return 130
    if not film.moments:
        return _bad(f"{path} has no moment to replay")
    code = replay(film, speed, slow, max_gap, run if finished else f"{run} (unfinished)")
    log.debug("replay_done", run=run, moments=len(film.moments), speed=speed, slow=slow, code=code)
    return code


def _bad(text: str) -> int:
    print(f"tcplab: {text}", file=sys.stderr)
    return 2
