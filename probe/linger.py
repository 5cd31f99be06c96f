"""An application's connections ended with a reset (RST) rather than a FIN: ``SO_LINGER`` 0 on its
sockets, set from outside the process.

nc has no way to abort a connection: killed, its kernel closes the socket in order (a FIN). With
``SO_LINGER`` {on, 0} the same close resets it instead (RFC 9293 3.10.4's ABORT, what
``close()`` after ``SO_LINGER`` 0 does in any application). :func:`linger_zero` borrows each of a
process's sockets with ``pidfd_getfd(2)`` (Linux 5.6; the same syscall number on x86_64, arm64 and
arm), sets the option on the shared socket and closes the borrowed descriptor; the socket itself
stays nc's until nc ends. Root may do this to any process (``PTRACE_MODE_ATTACH_REALCREDS``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct

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


def linger_zero(pid: int) -> int:
    """Set ``SO_LINGER`` 0 on every TCP socket of process ``pid``; how many. OSError when the kernel
    does not let us (no pidfd_getfd, no permission) or the process is gone."""
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
            sock = socket.socket(fileno=mine)
            try:
                if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
                    done += 1
            finally:
                sock.close()  # the borrowed descriptor; the socket stays the process's
    finally:
        os.close(pidfd)
    return done
