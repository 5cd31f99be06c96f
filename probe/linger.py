"""An application's connections acted on from outside the process: ended with a reset (RST) rather
than a FIN (``SO_LINGER`` 0, :func:`linger_zero`), half-closed (``shutdown(SHUT_WR)``,
:func:`shutdown_write`), or kept alive (``SO_KEEPALIVE`` and its timers, :func:`keepalive_all`).

nc has no way to abort a connection: killed, its kernel closes the socket in order (a FIN). With
``SO_LINGER`` {on, 0} the same close resets it instead (RFC 9293 3.10.4's ABORT, what
``close()`` after ``SO_LINGER`` 0 does in any application). :func:`linger_zero` borrows each of a
process's sockets with ``pidfd_getfd(2)`` (Linux 5.6; the same syscall number on x86_64, arm64 and
arm), sets the option on the shared socket and closes the borrowed descriptor; the socket itself
stays nc's until nc ends. Root may do this to any process (``PTRACE_MODE_ATTACH_REALCREDS``).

nc has no half-close either (``-N`` shuts down only at its stdin's EOF, and then exits once the peer
is done): :func:`shutdown_write` shuts the sending side of nc's connected sockets, which acts on
the shared socket as nc's own call would: a FIN goes out, and nc still reads and prints what the
peer sends.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from typing import Callable

SYS_PIDFD_GETFD = 438
LINGER_ZERO = struct.pack("ii", 1, 0)

_libc = ctypes.CDLL(None, use_errno=True)


def socket_fds(pid: int) -> list[int]:
    """The descriptors of ``pid`` that are sockets."""
    out = []
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{entry}").startswith("socket:"):
                out.append(int(entry))
        except (OSError, ValueError):
            continue
    return sorted(out)


def _getfd(pidfd: int, fd: int) -> int:
    got = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_getfd: {os.strerror(err)}")
    return got


def each_tcp_socket(pid: int, act: Callable[[socket.socket], bool]) -> int:
    """``act`` on a borrowed copy of each TCP socket of process ``pid``; how many it said True for.
    OSError when the kernel does not let us (no pidfd_getfd, no permission) or the process is gone."""
    pidfd = os.pidfd_open(pid)
    done = 0
    try:
        for fd in socket_fds(pid):
            try:
                mine = _getfd(pidfd, fd)
            except OSError as e:
                if e.errno == errno.EBADF:  # closed meanwhile
                    continue
                raise
            try:
                sock = socket.socket(fileno=mine)
            except OSError:  # the number now holds something else
                os.close(mine)
                continue
            try:
                if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6):
                    done += bool(act(sock))
            finally:
                sock.close()  # the borrowed descriptor; the socket stays the process's
    finally:
        os.close(pidfd)
    return done


def _linger_zero(sock: socket.socket) -> bool:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
    return True


def _shut_write(sock: socket.socket) -> bool:
    """Half-close a connected socket; False for a listener or a connect still under way (on those
    Linux's shutdown would not send a FIN: a SYN_SENT one is disconnected)."""
    if not _connected(sock):
        return False
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            return False
        raise
    return True


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError as e:
        if e.errno == errno.ENOTCONN:  # a listener
            return False
        raise
    return True


def keepalive(sock: socket.socket, idle_s: int, interval_s: int, probes: int) -> bool:
    """Keepalive on one connected socket (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT);
    False for a listener."""
    if not _connected(sock):
        return False
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return True


def keepalive_all(pid: int, idle_s: int, interval_s: int, probes: int) -> int:
    """Keepalive on every connected TCP socket of ``pid``; how many."""
    return each_tcp_socket(pid, lambda s: keepalive(s, idle_s, interval_s, probes))


def linger_zero(pid: int) -> int:
    """Set ``SO_LINGER`` 0 on every TCP socket of process ``pid``; how many."""
    return each_tcp_socket(pid, _linger_zero)


def shutdown_write(pid: int) -> int:
    """Shut the sending side of every connected TCP socket of ``pid`` (a FIN; reading goes on); how many."""
    return each_tcp_socket(pid, _shut_write)
