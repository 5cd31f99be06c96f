"""The pieces of the Debian side that need no mirror: index parsing, the base system, the mirrors."""

from __future__ import annotations

from controller.wheelhouse import debian

INDEX = """\
Package: libc6
Priority: optional
Version: 2.36-9
Depends: libgcc-s1

Package: libgcc-s1
Priority: optional
Version: 12.2.0-14
Depends: gcc-12-base (= 12.2.0-14), libc6 (>= 2.35)

Package: gcc-12-base
Priority: required
Version: 12.2.0-14

Package: dpkg
Priority: required
Version: 1.21.22
Pre-Depends: libc6 (>= 2.34), tar (>= 1.28-1)
Description: Debian package management system
 with a continuation line

Package: tar
Priority: required
Version: 1.34

Package: apt
Priority: important
Version: 2.6.1
Depends: adduser | passwd, debian-archive-keyring

Package: adduser
Priority: important
Version: 3.134

Package: passwd
Priority: required
Version: 1:4.13

Package: debian-archive-keyring
Priority: important
Version: 2023.3

Package: python3-zmq
Priority: optional
Version: 24.0.1-4
Depends: libzmq5 (>= 4.3.2), python3 (<< 3.12), python3:any
"""


def test_stanzas_keep_fields_and_continuation_lines():
    s = {x["Package"]: x for x in debian.stanzas(INDEX)}
    assert s["dpkg"]["Pre-Depends"] == "libc6 (>= 2.34), tar (>= 1.28-1)"
    assert s["dpkg"]["Description"].endswith("\n with a continuation line")
    assert debian.stanzas(debian.render(s["dpkg"]))[0] == s["dpkg"]


def test_the_base_system_is_required_and_apt_with_their_dependencies():
    base = [s["Package"] for s in debian.base_system(debian.stanzas(INDEX))]
    # libc6 is Priority: optional in bookworm, yet every system has it: dpkg pre-depends on it
    assert base == ["adduser", "apt", "debian-archive-keyring", "dpkg", "gcc-12-base", "libc6",
                    "libgcc-s1", "passwd", "tar"]
    assert "python3-zmq" not in base


def test_mirrors_come_from_this_machines_sources_in_either_format(tmp_path, monkeypatch):
    monkeypatch.delenv("TCPLAB_DEBIAN_MIRROR", raising=False)
    monkeypatch.delenv("TCPLAB_DEBIAN_SECURITY_MIRROR", raising=False)
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert debian.mirrors((tmp_path / "none.list", d)) == (
        "http://mirror.example/debian", "http://mirror.example/debian-security")
    one = tmp_path / "sources.list"
    one.write_text("# a comment\ndeb [arch=amd64] http://other.example/debian trixie main\n")
    assert debian.mirrors((one,)) == ("http://other.example/debian", None)
