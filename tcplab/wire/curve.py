"""CurveZMQ between the hosts: keys on disk, the sockets' options, and the controller's authenticator.

Every socket between a probe and the controller is encrypted and authenticated with CurveZMQ
(pyzmq's ``zmq.auth``). Keys are files in zmq.auth's certificate format
(``zmq.auth.create_certificates``: ``NAME.key`` holds a public key, ``NAME.key_secret`` the
public and the secret key), one pair per host, named after it (``controller`` for the controller);
``controller.keys`` makes them on the control node and Ansible installs each host only what it
needs::

    probe thinkpad:   KEYS/thinkpad.key_secret   KEYS/controller.key
    controller:       KEYS/controller.key_secret KEYS/thinkpad.key KEYS/raspberrypi.key ...

- The probe's DEALER is a Curve client (:func:`client`): it knows the controller's public key, so
  it talks to nobody else.
- The controller's ROUTER is a Curve server (:func:`server`) with a ZAP domain; its
  :class:`Authenticator` admits only the known probes' public keys and gives each connection the
  ``User-Id`` of the key's host name. The bus reads that name from every frame
  (``frame.get("User-Id")``) and refuses a frame whose routing id (and so envelope host) is not it:
  a probe speaks only as itself.

A key file that is missing, garbled, or a secret readable by others is a one-line
:class:`~tcplab.configfile.ConfigError` naming the file.
"""

from __future__ import annotations

import asyncio
import binascii
import ipaddress
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import structlog
import zmq
import zmq.asyncio
import zmq.auth
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from tcplab.configfile import ConfigError

CONTROLLER = "controller"  # the controller's key name
ZAP_DOMAIN = "tcplab"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq asks (RFC 27)
KEY_LEN = 40  # a z85 Curve key

log = structlog.get_logger("wire.curve")
# what a server socket's monitor reports (a refused key is the ZAP handler's to count)
HANDSHAKE_FAILED = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL


@dataclass(frozen=True)
class Keys:
    """One host's keys: its own pair (z85) and the public keys of the peers it accepts, by name
    (a probe: the controller's; the controller: each probe's)."""

    name: str
    public: bytes
    secret: bytes = field(repr=False)
    peers: dict[str, bytes] = field(default_factory=dict)

    @property
    def by_key(self) -> dict[bytes, str]:
        """The peers' names by public key (z85)."""
        return {key: name for name, key in self.peers.items()}


def public_path(keys_dir: str | Path, name: str) -> Path:
    return Path(keys_dir) / f"{name}.key"


def secret_path(keys_dir: str | Path, name: str) -> Path:
    return Path(keys_dir) / f"{name}.key_secret"


def _check_key(path: Path, what: str, key: bytes | None) -> bytes:
    try:
        if key is None or len(key) != KEY_LEN:
            raise ValueError
        z85.decode(key)
    except (ValueError, binascii.Error, KeyError, TypeError):
        raise ConfigError(f"{path}: no valid Curve {what} key in it (a zmq.auth certificate)") from None
    return key


def _read(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        st = path.stat()
        mode = st.st_mode
        public, secret_key = zmq.auth.load_certificate(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: key file missing") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read key file ({e.strerror or e})") from None
    except ValueError:
        public, secret_key = None, None
    except UnicodeDecodeError:
        public, secret_key = None, None
    _check_key(path, "public", public)
    if secret:
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path}: secret key readable by others (mode {stat.S_IMODE(mode):04o}); "
                              "chmod 600 it")
        if st.st_uid not in (os.getuid(), 0):
            raise ConfigError(f"{path}: secret key owned by uid {st.st_uid}, not this daemon's user ({os.getuid()})")
        _check_key(path, "secret", secret_key)
        if zmq.curve_public(secret_key) != public:
            raise ConfigError(f"{path}: its secret key does not match its public key")
    return public, secret_key


def load_keys(keys_dir: str | Path, name: str, peers: Iterable[str]) -> Keys:
    """``name``'s own pair (``NAME.key_secret``) and each peer's public key (``PEER.key``)."""
    public, secret = _read(secret_path(keys_dir, name), secret=True)
    return Keys(name=name, public=public, secret=secret,
                peers={p: _read(public_path(keys_dir, p), secret=False)[0] for p in peers})


def load_probe_keys(keys_dir: str | Path, host: str) -> Keys:
    """A probe's keys: its own pair and the controller's public key."""
    return load_keys(keys_dir, host, [CONTROLLER])


def load_controller_keys(keys_dir: str | Path, hosts: Iterable[str]) -> Keys:
    """The controller's keys: its own pair and the public key of each of ``hosts``."""
    return load_keys(keys_dir, CONTROLLER, hosts)


def needs_keys(endpoint: str) -> bool:
    """Whether ``endpoint`` can be reached from another machine: tcp on anything but loopback."""
    if not endpoint.startswith("tcp://"):
        return False  # ipc://: a file on this machine
    address = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    if address == "localhost":
        return False
    try:
        return not ipaddress.ip_address(address).is_loopback
    except ValueError:
        return True  # *, an interface name, a host name: assume the network


def from_config(path: Path, value: object, endpoint: str, setting: str, load: Callable[[Path], Keys]) -> Keys | None:
    """The keys a daemon's configuration names (``keys_dir``, relative to the file), loaded; None
    without the setting, which only an endpoint no other machine reaches may do."""
    if value is None:
        if needs_keys(endpoint):
            raise ConfigError(f"{path}: {setting} {endpoint} is reachable from the network: "
                              "keys_dir (the CurveZMQ keys) is required")
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: keys_dir must be a directory, got {value!r}")
    return load(Path(path).parent / value)


def client(sock: zmq.Socket, keys: Keys) -> zmq.Socket:
    """Make ``sock`` (before it connects) a Curve client of the controller. Returns ``sock``."""
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.peers[CONTROLLER])
    return sock


def server(sock: zmq.Socket, keys: Keys) -> zmq.Socket:
    """Make ``sock`` (before it binds) a Curve server whose clients the ZAP handler of its context
    (an :class:`Authenticator`, started first) checks; with no handler nobody gets in."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    return sock


class Authenticator:
    """The controller's ZAP handler (RFC 27, ``inproc://zeromq.zap.01`` of its context): admits only
    ``keys.peers``' public keys, and a connection's ``User-Id`` is its key's host name. Refusals are
    counted (:attr:`refused`) and logged (the first few, then every thousandth: a stranger picks its
    rate). :meth:`start` inside the event loop, before the bind; with ``watch`` (the server socket) it
    also counts the handshakes that never reach it (:attr:`failed`: a peer without Curve, a garbled
    one) from the socket's monitor.

    Not pyzmq's AsyncioAuthenticator: a second one started in the same event loop (a second bus)
    never saw its requests (pyzmq 27.3), and every connection of it waited forever."""

    def __init__(self, ctx: zmq.asyncio.Context, keys: Keys):
        self.ctx = ctx
        self.names = keys.by_key
        self.refused = 0
        self.failed = 0
        self.sock: zmq.asyncio.Socket | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task] = []

    def start(self, watch: zmq.Socket | None = None) -> None:
        if self.sock is not None:
            return
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)
        self._tasks = [asyncio.ensure_future(self._serve())]
        if watch is not None:
            self._monitor = watch.get_monitor_socket(HANDSHAKE_FAILED)
            self._tasks.append(asyncio.ensure_future(self._watch()))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for sock in (self.sock, self._monitor):
            if sock is not None:
                sock.close(linger=0)
        self.sock = self._monitor = None
        self._tasks = []

    async def _watch(self) -> None:
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())
            self.failed += 1
            if self.failed <= 10 or self.failed % 1000 == 0:
                try:
                    reason = zmq.Event(event["value"]).name
                except ValueError:
                    reason = str(event["value"])
                log.warning("handshake_refused", reason=reason, failed=self.failed)

    async def _serve(self) -> None:
        while True:
            await self.sock.send_multipart(self.reply(await self.sock.recv_multipart()))

    def reply(self, request: list[bytes]) -> list[bytes]:
        """The ZAP reply to one request: 200 with the host's name as User-Id, or 400."""
        if len(request) < 6:
            request = [b"1.0", request[1] if len(request) > 1 else b"", b"", b"", b"", b""]
        version, request_id, domain, address, _identity, mechanism, *credentials = request
        name = None
        if version == b"1.0" and domain == ZAP_DOMAIN.encode() and mechanism == b"CURVE" and len(credentials) == 1 \
                and len(credentials[0]) == 32:
            name = self.names.get(z85.encode(credentials[0]))
        if name is None:
            self.refused += 1
            if self.refused <= 10 or self.refused % 1000 == 0:
                key = z85.encode(credentials[0]).decode() if credentials and len(credentials[0]) == 32 else None
                log.warning("curve_refused", address=address.decode(errors="replace"), key=key,
                            mechanism=mechanism.decode(errors="replace"), refused=self.refused)
            return [b"1.0", request_id, b"400", b"unknown key", b"", b""]
        return [b"1.0", request_id, b"200", b"OK", name.encode(), b""]


def user_id(frame: zmq.Frame) -> str | None:
    """The authenticated host name a received frame came from (None without Curve)."""
    try:
        return frame.get("User-Id")
    except zmq.ZMQError:  # EINVAL: no such property (a NULL-mechanism socket)
        return None
