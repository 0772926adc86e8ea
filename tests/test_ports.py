"""labkit.course._ports: kernel ports below the ephemeral range, one kernel each."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

from labkit.course import _ports


def test_ports_are_free_distinct_and_below_the_range_outgoing_connections_use():
    first, _ = _ports.ephemeral_range()
    with ThreadPoolExecutor(8) as pool:  # kernels start at once under --jobs 8
        handed = list(pool.map(lambda _: _ports.reserve(5), range(16)))
    try:
        flat = [port for ports in handed for port in ports]
        assert all(len(ports) == 5 for ports in handed)
        assert len(set(flat)) == len(flat) == 80
        assert all(_ports.LOWEST <= port < first for port in flat)
        for port in flat[:10]:  # free: a kernel can bind it
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
    finally:
        for ports in handed:
            _ports.release(ports)
    assert not _ports._taken


def test_a_port_someone_listens_on_is_never_handed_out(monkeypatch):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        busy = listener.getsockname()[1]
        listener.listen()
        calls = iter([busy, busy, busy + 1 if busy + 1 != busy else busy + 2])
        monkeypatch.setattr(_ports.random, "randrange", lambda low, high: next(calls))
        monkeypatch.setattr(_ports, "ephemeral_range", lambda: (65000, 65535))
        monkeypatch.setattr(_ports, "LOWEST", 1024)
        ports = _ports.reserve(1)
        _ports.release(ports)
    assert ports and busy not in ports


def test_the_range_is_read_from_proc_and_defaults_where_it_cannot_be(tmp_path, monkeypatch):
    from labkit._linux import proc

    (tmp_path / "sys" / "net" / "ipv4").mkdir(parents=True)
    (tmp_path / "sys" / "net" / "ipv4" / "ip_local_port_range").write_text("40000\t50000\n")
    monkeypatch.setattr(proc, "PROC", str(tmp_path))
    assert _ports.ephemeral_range() == (40000, 50000)
    monkeypatch.setattr(proc, "PROC", str(tmp_path / "missing"))
    assert _ports.ephemeral_range() == (32768, 60999)


def test_no_room_below_the_range_leaves_the_choice_to_jupyter_client(monkeypatch):
    monkeypatch.setattr(_ports, "ephemeral_range", lambda: (10100, 60999))
    assert _ports.reserve(5) == []
