"""The wire: the one package that knows what a tcplab message looks like and how it is sent.

- :mod:`tcplab.wire.envelope` — the frame format (envelope, types, size limit, ProtocolError).
- :mod:`tcplab.wire.session` — :class:`Session`, one sender's identity, numbering and counters;
  every sender (the probe's transport, the controller's probe bus and control server, the CLI)
  sends and receives through one.
- :mod:`tcplab.wire.bodies` — every message type's body and every event kind, each field's type
  and bound (``check_body``, run by ``Session.decode`` after the envelope; ``check_event``, run by
  the bus on each event of a batch), written with :mod:`tcplab.wire.checks`.
- :mod:`tcplab.wire.curve` — CurveZMQ keys and socket options.

A command's action and arguments are checked by :mod:`tcplab.actions`, which owns each action's
arguments (``check_body`` calls it). Nothing here imports ``controller``: the probe is installed alone.
"""

from tcplab.wire.envelope import (FIELDS, HOST_RE, MAX_BATCH, MAX_FRAME, TYPES, VERSION, ProtocolError, check_envelope,
                                  decode, encode, limit, make, now_ns)
from tcplab.wire.session import Session

__all__ = ["FIELDS", "HOST_RE", "MAX_BATCH", "MAX_FRAME", "TYPES", "VERSION", "ProtocolError", "Session", "check_envelope",
           "decode", "encode", "limit", "make", "now_ns"]

