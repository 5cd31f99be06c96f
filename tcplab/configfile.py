"""Reading a daemon's YAML configuration file, with errors that name the file, the line and the field."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tcplab.errors import TcplabError


class ConfigError(TcplabError, ValueError):
    """A configuration file that cannot be used; the message names the file and the field."""


_ENDPOINT = re.compile(r"^(tcp://[A-Za-z0-9.\-]+:\d{1,5}|ipc:///\S+)$")


def read_yaml(path: Path, error: type[ValueError] = ConfigError, mapping: str | None = "settings"):
    """A YAML file's data; unreadable or invalid files raise ``error`` with a one-line reason naming
    the file (and the line). ``mapping``: the top level must be a mapping (of what), unless None."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise error(f"{path}: not valid YAML{where} ({getattr(e, 'problem', None) or 'syntax'})") from e
    if mapping is not None and not isinstance(data, dict):
        raise error(f"{path}: must be a mapping of {mapping}")
    return data


def check_endpoint(path: Path, value: object, field: str) -> str:
    if not isinstance(value, str) or not _ENDPOINT.match(value):
        raise ConfigError(f"{path}: {field} must look like tcp://HOST:PORT or ipc:///PATH, got {value!r}")
    return value


