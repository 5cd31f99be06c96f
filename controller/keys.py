"""Making the lab's Curve keys on the control node (what the Ansible role ``controller`` runs).

    python -m controller.keys --dir KEYS controller thinkpad raspberrypi
    # {"changed": true, "made": ["controller", "raspberrypi", "thinkpad"]}
    python -m controller.keys --check --dir KEYS ...   # makes nothing, names what it would make

One pair per name, in zmq.auth's certificate format (``NAME.key``, ``NAME.key_secret``), made only
when it is missing (a pair half there is an error, not remade: a probe may hold the other half).
The directory is 0700 and every file 0600, whatever the umask. See :mod:`tcplab.wire.curve`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Iterable

import zmq.auth

from tcplab import wire
from tcplab.configfile import ConfigError
from tcplab.files import private_dir
from tcplab.wire import curve


def make_keys(keys_dir: str | Path, names: Iterable[str], check: bool = False) -> list[str]:
    """Make the pair of each of ``names`` that ``keys_dir`` lacks; the names made, sorted.
    ``check``: make nothing, name what would be made."""
    keys_dir = Path(keys_dir)
    if not check:
        private_dir(keys_dir, "key store")
    made = []
    for name in sorted(set(names)):
        if not wire.HOST_RE.match(name):
            raise ConfigError(f"{name!r}: not a host name")
        have = [p.exists() for p in (curve.public_path(keys_dir, name), curve.secret_path(keys_dir, name))]
        if all(have):
            continue
        if any(have):
            raise ConfigError(f"{curve.secret_path(keys_dir, name)}: half a key pair (remove both files to remake it)")
        made.append(name)
        if check:
            continue
        old = os.umask(0o077)  # the secret file is never readable by others, not even for a moment
        try:
            for path in zmq.auth.create_certificates(keys_dir, name):
                os.chmod(path, 0o600)
        finally:
            os.umask(old)
    return made


def install_keys(store: str | Path, keys_dir: str | Path, own: str, publics: Iterable[str]) -> Path:
    """What one daemon needs from the ``store``, in ``keys_dir`` (0700): ``own``'s pair and the public
    key of each of ``publics``, 0600 (what the Ansible roles install; for the tests and benchmarks)."""
    keys_dir = private_dir(keys_dir, "key directory")
    for src in [curve.secret_path(store, own), *(curve.public_path(store, p) for p in publics)]:
        dest = keys_dir / src.name
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(src.read_bytes())
        os.chmod(dest, 0o600)
    return keys_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controller.keys", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path, help="the key store (made 0700)")
    parser.add_argument("--check", action="store_true", help="make nothing, say what would be made")
    parser.add_argument("names", nargs="+", help="controller and the lab hosts")
    args = parser.parse_args(argv)
    try:
        made = make_keys(args.dir, args.names, check=args.check)
    except (ConfigError, OSError) as e:
        print(f"controller.keys: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"changed": bool(made), "made": made}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
