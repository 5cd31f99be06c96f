"""The frames :mod:`bench.fuzz_wire` throws: random bytes, valid frames, and valid frames mutated.

One :class:`Frames` per target, seeded, so a failure is found again by its seed. Each frame is one of:
- random bytes (any length up to 512, or msgpack's own markers strung together);
- an envelope with one field a list nested as deep as msgpack unpacks;
- a valid frame of the target's corpus with bytes flipped, cut, inserted or repeated;
- a valid envelope with one field (of the envelope or anywhere in its body) replaced by a value of
  the wrong type or out of its bound, deleted, or a field nobody declared added;
- now and then the valid frame itself (so the frames that get past the checks are fuzzed too).
"""

from __future__ import annotations

import copy
import random

import msgpack

from tcplab import wire

STATE = {"kind": "state", "t_ns": 1, "local": "10.90.0.1:9090", "remote": "0.0.0.0:*", "from": "CLOSED",
         "to": "LISTEN", "source": "inet_diag"}
PACKET = {"kind": "packet", "t_ns": 2, "wall_ns": 3, "dir": "in", "src": "10.90.0.2:40000", "dst": "10.90.0.1:9090",
          "flags": ["SYN"], "seq": 0, "ack": 0, "len": 0, "payload": "", "win": 64240, "frame_len": 74,
          "raw": b"\x00" * 74, "linktype": 1}
CONSOLE = {"kind": "console", "t_ns": 4, "text": "Hello", "stream": "stdout"}
EVENTS = [STATE, PACKET, CONSOLE, {"kind": "counters", "t_ns": 5, "counters": {"transport_dropped": 0}},
          {"kind": "netstat", "t_ns": 6, "rows": [{"proto": "tcp", "recv_q": 0, "send_q": 0, "local": "0.0.0.0:9090",
                                                   "foreign": "0.0.0.0:*", "state": "LISTEN", "timer": "off"}]}]
SCENARIO = {"name": "fuzz", "delay": 0, "port": 9090, "steps": [{"action": "listen", "host": "thinkpad"}]}

# by target: the types its receiver reads, each with a valid body
CORPUS = {
    "controller": [("hello", {"pid": 4242, "lab_ip": "10.90.0.1", "port": 9090, "iface": "eth0",
                              "actions": ["listen"], "shaping": {"backend": "netem", "reason": "ok"}}),
                   ("heartbeat", {"unacked": 0, "oldest": 1, "dropped": 0}),
                   ("result", {"id": 1, "ok": True, "data": {}}), ("pong", {"id": 1, "t0": 1, "rx_ns": 2})],
    "control": [("status", {}), ("run", {"scenario": SCENARIO, "delay": 0.5})],
    "probe": [("welcome", {"ack": 0}), ("ack", {"seq": 1}), ("ping", {"id": 7}), ("heartbeat", {}),
              ("command", {"id": 1, "action": "sync"}),
              ("command", {"id": 2, "action": "shape", "args": {"delay_ms": 999_999}})],
}

WRONG = [None, True, False, -1, 0, 2**64 - 1, -(2**63), 1.5, float("nan"), float("inf"), "", "x" * 70_000, "-lk",
         "\x1b[2J\x1b]0;owned\x07", "../../etc/passwd", b"\x00\xff", [], {}, [1], [[[[[[[[1]]]]]]]], {"a": 1},
         {1: 2}, list(range(300)), {f"k{i}": i for i in range(300)}]


FIELDS = ("v", "type", "host", "seq", "time", "body")


def nested(host: str, field: str, depth: int) -> bytes:
    """An ack envelope whose ``field`` (for ``body``: its seq) is a list nested ``depth`` deep, made
    byte by byte (msgpack.packb refuses to nest that deep; its unpacker takes about 1,000 levels).
    Naming such a value with repr() once raised RecursionError out of the decoder."""
    parts = {"v": b"\x01", "type": b"\xa3ack", "host": bytes([0xA0 | len(host)]) + host.encode(), "seq": b"\x01",
             "time": b"\x01", "body": b"\x81\xa3seq\x01"}
    deep = b"\x91" * depth + b"\x01"
    parts[field] = b"\x81\xa3seq" + deep if field == "body" else deep
    return b"\x86" + b"".join(bytes([0xA0 | len(k)]) + k.encode() + v for k, v in parts.items())


class Frames:
    def __init__(self, target: str, host: str, seed: int):
        self.rng = random.Random(seed)
        self.host = host
        self.corpus = list(CORPUS[target])
        if target == "controller":  # the event path: a batch where the wire has batches
            self.corpus.append(("events", {"events": list(EVENTS)}) if "events" in wire.TYPES
                               else ("event", dict(STATE)))
        self.session = wire.Session(host)
        self.valid = [self.session.frame(t, b) for t, b in self.corpus]

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        r = self.rng.random()
        if r < 0.08:
            return self.random_bytes()
        if r < 0.1:
            return self.deep()
        if r < 0.45:
            return self.flip(self.rng.choice(self.valid))
        if r < 0.95:
            return self.mutate()
        return self.rng.choice(self.valid)

    def random_bytes(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.5:
            return rng.randbytes(rng.randrange(0, 512))
        markers = [b"\xc0", b"\xc2", b"\xc3", b"\xdc\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xde\x00\x01", b"\xdf",
                   b"\x81", b"\x91", b"\xa1a", b"\xd9\xff", b"\xc4\x10", b"\xc1", b"\xcf" + b"\xff" * 8]
        return b"".join(rng.choice(markers) for _ in range(rng.randrange(1, 40)))

    def deep(self) -> bytes:
        return nested(self.host, self.rng.choice(FIELDS), self.rng.randrange(1, 1100))

    def flip(self, frame: bytes) -> bytes:
        rng, b = self.rng, bytearray(frame)
        for _ in range(rng.randrange(1, 6)):
            op, i = rng.randrange(5), rng.randrange(len(b) or 1)
            if op == 0 and b:
                b[i % len(b)] = rng.randrange(256)
            elif op == 1:
                del b[i:]
            elif op == 2:
                b[i:i] = rng.randbytes(rng.randrange(1, 16))
            elif op == 3 and b:
                b[i:i] = b[i:i + rng.randrange(1, 64)] * rng.randrange(1, 8)
            elif b:
                b[i % len(b)] ^= 1 << rng.randrange(8)
        return bytes(b)

    def mutate(self) -> bytes:
        rng = self.rng
        type_, body = rng.choice(self.corpus)
        env = {"v": 1, "type": type_, "host": self.host, "seq": rng.randrange(1, 1 << 20), "time": 1,
               "body": copy.deepcopy(body)}
        parent, key = self._pick(env)
        op = rng.random()
        if op < 0.15 and isinstance(parent, dict):
            parent.pop(key, None)
        elif op < 0.25 and isinstance(parent, dict):
            parent[rng.choice(["exec", "cmd", "", "kind", "t_ns"])] = rng.choice(WRONG)
        else:
            parent[key] = rng.choice(WRONG)
        try:
            return msgpack.packb(env, use_bin_type=True)
        except (OverflowError, ValueError, TypeError):
            return self.random_bytes()

    def _pick(self, env: dict) -> tuple:
        """A container and one of its keys (or indexes), anywhere in the envelope."""
        node, key = env, self.rng.choice(list(env))
        while isinstance(node[key], (dict, list)) and node[key] and self.rng.random() < 0.7:
            node = node[key]
            key = self.rng.choice(list(node)) if isinstance(node, dict) else self.rng.randrange(len(node))
        return node, key
