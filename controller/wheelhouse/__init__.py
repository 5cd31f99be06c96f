"""What each lab host installs, prepared on the control node (the probe's install path).

The control node builds the project's wheel once (``project``) and, for every *install set* a lab
host needs (``targets``: its CPU, its python, its Debian release, online or offline), one archive
(``bundle``) holding the dependencies' wheels from PyPI (``pypi``) and, where PyPI has no wheel for
that CPU or the host has no internet, Debian's packages with their closure as a local apt repository
(``debian``). A host unpacks and installs its archive with ``hostinstall`` (stdlib only, run by the
host's own python): no index, no internet, no compiler.

    python -m controller.wheelhouse wheel   --repo . --wheelhouse .cache/wheelhouse
    python -m controller.wheelhouse prepare --repo . --wheelhouse .cache/wheelhouse \\
        --set aarch64-py3.11-bookworm --set armv7l-py3.11-bookworm-offline --apt netcat-openbsd

Both print one JSON object (``changed``, paths) for Ansible; nothing is rebuilt when its
fingerprint matches the last build's.
"""

from __future__ import annotations

from tcplab.errors import TcplabError


class WheelhouseError(TcplabError):
    """The root of every error this package raises: the message is one line, meant for the user."""


def run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run a tool (apt-get, pip) with ``env`` over this process's; a failure is a WheelhouseError.

    The one rule for a tool's failure, the host installer's (both sides use its ``run``, as they use
    its ``sha256_of``): ``<what> failed (exit N): <its first E:/ERROR line, else its last line>``.
    """
    from controller.wheelhouse import hostinstall  # stdlib only: it runs on the host before tcplab is there

    try:
        hostinstall.run(cmd, what, env)
    except hostinstall.InstallError as e:
        raise WheelhouseError(str(e)) from e
