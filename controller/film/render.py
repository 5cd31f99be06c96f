"""Every file a run's trace makes: what a finished run and ``tcplab render`` call.

    summary.txt  the run in a page of text, with run.json's facts (controller/film/summary.py);
                 only where run.json is (a bare trace.jsonl has no summary)
    ladder.svg   the two-column sequence diagram (controller/film/ladder.py)
    ladder.png   the same picture as PNG, rasterized by librsvg's rsvg-convert
    film.html    the seed's screen in a browser, offline (controller/film/html.py)
    story.md     the run told in plain words (controller/film/story.py)

Every renderer reads one :class:`~controller.trace.index.TraceIndex`, built once here (or handed in by
the run's finish, which built it from the run's records in memory). Each file is written to a
temporary name and renamed into place, so a reader never sees half a file and a failed renderer
leaves the previous file, if any, untouched. Rendering the same trace again gives byte-identical files.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import structlog

from controller.film import html, ladder, story, summary
from controller.trace.index import TraceIndex
from controller.trace.reader import load
from tcplab.errors import TcplabError
from tcplab.files import replacing

log = structlog.get_logger("tcplab.film")

PNG_ZOOM = "1.5"  # a readable size for slides: 1290 px wide


class RenderError(TcplabError):
    pass


def png(svg: Path) -> Path:
    """ladder.png next to ``svg``, rasterized by rsvg-convert (Debian: librsvg2-bin)."""
    exe = shutil.which("rsvg-convert")
    if exe is None:
        raise RenderError("rsvg-convert is not installed (Debian/Ubuntu: apt-get install librsvg2-bin)")
    out = svg.with_suffix(".png")
    with replacing(out) as tmp:  # a failure leaves the previous ladder.png, if any
        res = subprocess.run([exe, "--format=png", f"--zoom={PNG_ZOOM}", "--output", str(tmp), str(svg)],
                             capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RenderError(f"rsvg-convert failed on {svg.name}: {res.stderr.strip() or res.returncode}")
    return out


def render_all(run_dir: Path, trace: TraceIndex | list[dict] | None = None) -> tuple[list[Path], list[str]]:
    """Write every file of ``run_dir`` its trace makes; return the files written and one error line
    per file not written. ``trace``: the run's index or records (default: its trace.jsonl).

    The renderers are independent: one failing (say, no rsvg-convert) does not stop the others.
    """
    run_dir = Path(run_dir)
    index = TraceIndex.of(load(run_dir / "trace.jsonl") if trace is None else trace)
    written: list[Path] = []
    errors: list[str] = []
    steps = (("summary.txt", lambda: summary.write(run_dir, index)),
             ("ladder.svg", lambda: ladder.write(run_dir, index)),
             ("ladder.png", lambda: png(run_dir / "ladder.svg")),
             ("film.html", lambda: html.write(run_dir, index)),
             ("story.md", lambda: story.write(run_dir, index)))
    for name, make in steps:
        if name == "ladder.png" and run_dir / "ladder.svg" not in written:
            errors.append("ladder.png: not drawn, because ladder.svg was not")
            continue
        try:
            path = make()
            if path is not None:  # None: nothing to make from what the directory holds
                written.append(path)
        except (RenderError, ValueError, OSError, subprocess.SubprocessError) as e:
            errors.append(f"{name}: {e}")
            log.error("render_failed", file=name, error=str(e))
        except Exception as e:  # a renderer's bug: the other files are still made, and the bug is named
            errors.append(f"{name}: {type(e).__name__}: {e}")
            log.exception("render_crashed", file=name)
    return written, errors
