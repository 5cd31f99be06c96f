"""The wire: the one package that knows what a tcplab message looks like and how it is sent.

- :mod:`tcplab.wire.envelope` — the frame format (envelope, types, size limit, ProtocolError).
- :mod:`tcplab.wire.session` — :class:`Session`, one sender's identity, numbering and counters;
  every sender (the probe's transport, the controller's probe bus and control server, the CLI)
  sends and receives through one.

A command's body (an action and its arguments) is checked by :mod:`tcplab.actions`, which owns
each action's arguments. Nothing here imports ``controller``: the probe is installed alone.
"""

from tcplab.wire.envelope import (FIELDS, HOST_RE, MAX_BATCH, MAX_FRAME, TYPES, VERSION, ProtocolError, check_envelope,
                                  decode, encode, limit, make, now_ns)
from tcplab.wire.session import Session

__all__ = ["FIELDS", "HOST_RE", "MAX_BATCH", "MAX_FRAME", "TYPES", "VERSION", "ProtocolError", "Session", "check_envelope",
           "decode", "encode", "limit", "make", "now_ns"]

