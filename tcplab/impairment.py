"""What a host's egress does to its lab port's packets: one value, read the same by the scenario, the
wire, both shaper backends, the trace and the film.

The parameters are netem's (tc-netem(8)), and both backends give them netem's meaning:

- ``delay_ms`` and ``jitter_ms``: each packet waits delay +- jitter, drawn uniformly (netem without a
  distribution table); with jitter, a later packet may leave before an earlier one, as in netem;
- ``loss_pct``: dropped on arrival at the shaper;
- ``duplicate_pct``: a second copy is sent, with a delay of its own;
- ``reorder_pct``: sent at once instead of after the delay (netem's ``reorder P gap 1``), so it
  overtakes the packets being delayed; needs a delay;
- ``corrupt_pct``: one random bit of the TCP segment is flipped, so the peer's TCP drops it for its
  checksum (netem flips a bit anywhere in the frame; the delay line keeps the IP header whole so the
  segment still reaches the peer's TCP and is counted there);
- ``rate_kbit``: the link's speed: a packet leaves only when the one before has been serialised at
  this rate (netem's ``rate``, after the delay); 0 is no limit.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields

from tcplab.errors import TcplabError

MAX_DELAY_MS = 60_000
MAX_RATE_KBIT = 10_000_000  # 10 Gbit/s; netem's rate field holds bytes/s in 32 bits


class ImpairmentError(TcplabError, ValueError):
    """One line naming the parameter and what it may be; ``field``: the parameter."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


# parameter -> (the step's field, its unit in a scenario, low, high, whole number?)
PARAMS: dict[str, tuple[str, str, float, float, bool]] = {
    "delay_ms": ("delay", "ms", 0, MAX_DELAY_MS, True),
    "jitter_ms": ("jitter", "ms", 0, MAX_DELAY_MS, True),
    "loss_pct": ("loss", "%", 0, 100, False),
    "duplicate_pct": ("duplicate", "%", 0, 100, False),
    "reorder_pct": ("reorder", "%", 0, 100, False),
    "corrupt_pct": ("corrupt", "%", 0, 100, False),
    "rate_kbit": ("rate", "kbit/s", 0, MAX_RATE_KBIT, True),
}
RATE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(kbit|mbit|gbit)\s*$")
RATE_UNITS = {"kbit": 1, "mbit": 1000, "gbit": 1_000_000}


@dataclass(frozen=True)
class Impairment:
    delay_ms: int = 0
    jitter_ms: int = 0
    loss_pct: float = 0.0
    duplicate_pct: float = 0.0
    reorder_pct: float = 0.0
    corrupt_pct: float = 0.0
    rate_kbit: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            _, unit, lo, hi, whole = PARAMS[f.name]
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi \
                    or (whole and v != int(v)):
                kind = "a whole number" if whole else "a number"
                raise ImpairmentError(f"{f.name} must be {kind} from {lo:g} to {hi:g} ({unit}), got {v!r}", f.name)
        if self.jitter_ms > self.delay_ms:
            raise ImpairmentError(f"jitter_ms {self.jitter_ms} is larger than delay_ms {self.delay_ms}: "
                                  "a packet cannot leave before it was sent", "jitter_ms")
        if self.reorder_pct and not self.delay_ms:
            raise ImpairmentError("reorder_pct needs a delay: a reordered packet overtakes delayed ones",
                                  "reorder_pct")

    @classmethod
    def from_args(cls, args: dict) -> "Impairment":
        """From a shape command's arguments (unknown keys are the wire check's business)."""
        return cls(**{k: args[k] for k in PARAMS if k in args})

    def args(self) -> dict:
        """The wire arguments: the delay always, every other parameter when it is set."""
        return {k: v for k, v in asdict(self).items() if v or k == "delay_ms"}

    def words(self) -> str:
        """Short, for a label: ``3000 ms ± 200 ms delay, 5 % loss, 64 kbit/s``."""
        d = self.args()
        parts = [f"{self.delay_ms:g} ms" + (f" ± {self.jitter_ms:g} ms" if self.jitter_ms else "") + " delay"]
        for key, word in (("loss_pct", "loss"), ("duplicate_pct", "duplicated"), ("reorder_pct", "reordered"),
                          ("corrupt_pct", "corrupted")):
            if key in d:
                parts.append(f"{d[key]:g} % {word}")
        if self.rate_kbit:
            parts.append(f"{self.rate_kbit:g} kbit/s")
        return ", ".join(parts)

    def doing(self) -> list[str]:
        """What it does besides the delay, in a sentence's words (``dropping 5 % of them``)."""
        out = []
        if self.jitter_ms:
            out.append(f"give or take {self.jitter_ms:g} ms")
        for value, words in ((self.loss_pct, "dropping {} % of them"), (self.duplicate_pct, "sending {} % twice"),
                             (self.reorder_pct, "sending {} % at once, ahead of the delayed ones"),
                             (self.corrupt_pct, "flipping a bit in {} % (their checksum fails)")):
            if value:
                out.append(words.format(f"{value:g}"))
        if self.rate_kbit:
            out.append(f"at most {self.rate_kbit:g} kbit/s")
        return out


def of_record(rec: dict) -> Impairment | None:
    """A shaper record's impairment; None for a clear. A record that does not make one (an edited
    trace) is read for its delay alone."""
    if not rec.get("backend"):
        return None
    try:
        return Impairment(**{k: rec[k] for k in PARAMS if rec.get(k) is not None})
    except (ImpairmentError, TypeError):
        delay = rec.get("delay_ms")
        return Impairment(int(delay) if isinstance(delay, (int, float)) and 0 <= delay <= MAX_DELAY_MS else 0)


def rate_kbit(value: object) -> int:
    """A step's ``rate``: a number of kbit/s, or tc's ``64kbit``, ``2mbit``, ``1gbit``."""
    if isinstance(value, bool):
        raise ValueError(f"got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"got {value!r}")
        kbit = float(value)
    else:
        m = RATE_RE.match(str(value))
        if not m:
            raise ValueError(f"got {value!r}")
        kbit = float(m.group(1)) * RATE_UNITS[m.group(2)]
    if kbit != int(kbit):
        raise ValueError(f"{value!r} is not a whole number of kbit/s")
    return int(kbit)
