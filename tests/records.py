"""Hand-made trace records for tests that need a particular shape real runs do not give on demand."""


def packet(t: float, host: str, direction: str, src: str, flags: list[str]) -> dict:
    """A ``packet`` record with seq, ack and len 0 and a destination that does not matter."""
    return {"t": t, "host": host, "kind": "packet", "dir": direction, "src": src, "dst": "x", "flags": flags,
            "seq": 0, "ack": 0, "len": 0}
