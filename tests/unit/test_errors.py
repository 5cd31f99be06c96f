"""The rule of tcplab's errors: every exception class the project defines has TcplabError as its root.

The classes are collected by walking the packages (every module of tcplab/, probe/ and controller/
is imported), so a class added anywhere later is held to the rule too. The one exception is the
host installer (controller/wheelhouse/hostinstall.py): stdlib only, it runs before tcplab is
installed.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from tcplab.errors import TcplabError

PACKAGES = ("tcplab", "probe", "controller")
STDLIB_ONLY = {"controller.wheelhouse.hostinstall"}


def modules() -> list[str]:
    names = []
    for root in PACKAGES:
        pkg = importlib.import_module(root)
        names.append(root)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{root}.")]
    return sorted(n for n in names if n not in STDLIB_ONLY)


def exception_classes() -> dict[str, type]:
    found = {}
    for name in modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == name:
                found[f"{name}.{cls.__qualname__}"] = cls
    return found


CLASSES = exception_classes()


def test_the_walk_finds_the_exception_classes_of_every_package():
    assert {n.split(".")[0] for n in CLASSES} == set(PACKAGES)
    for known in ("tcplab.configfile.ConfigError", "probe.kstates.KStatesError", "probe.shaper.errors.NetemUnavailable",
                  "controller.testbed.spec.TestbedError", "controller.wheelhouse.WheelhouseError"):
        assert known in CLASSES


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_exception_class_is_a_tcplab_error(name):
    assert issubclass(CLASSES[name], TcplabError), f"{name} does not subclass tcplab.errors.TcplabError"


def test_the_other_base_is_kept_so_callers_catching_it_still_do():
    from probe.capture import CaptureError
    from probe.kstates import KStatesError
    from probe.sockets import SocketWatchError
    from probe.tracefs_raw import FormatError
    assert issubclass(KStatesError, OSError) and issubclass(SocketWatchError, OSError)
    assert issubclass(CaptureError, RuntimeError) and issubclass(FormatError, ValueError)
