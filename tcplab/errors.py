"""The root of every exception tcplab raises on purpose (as httpx roots its errors at ``HTTPError``).

A caller that wants "anything tcplab refused or could not do" catches :class:`TcplabError`; each
part raises its own subclass, whose message is one line naming what was wrong. Low-level errors
(OSError, zmq.ZMQError, yaml.YAMLError) are mapped to a subclass at the seam, ``raise ... from e``.
"""

from __future__ import annotations


class TcplabError(Exception):
    """Something tcplab refused or could not do; the message is one line naming what."""
