"""labkit.systemd.real: reading systemd's answers right (the runs themselves: test_systemd_differential)."""

from __future__ import annotations

import os
import signal

import pytest

from labkit.errors import BadArgument
from labkit.systemd import real
from labkit.systemd.unitfile import parse

UNAVAILABLE = os.environ.get("LABKIT_SYSTEMD_UNAVAILABLE")


def test_an_exec_record_with_braces_in_its_argv_keeps_its_pid_and_status():
    value = ("{ path=/bin/sh ; argv[]=/bin/sh -c f() { echo hi; }; f ; ignore_errors=no ; start_time=[n/a] ; "
             "stop_time=[n/a] ; pid=4242 ; code=exited ; status=3 }")
    [record] = real._records(value)
    assert (record["pid"], record["code"], record["status"]) == ("4242", "exited", "3")


def test_real_time_signals_have_names_not_a_crash():
    assert real._signal_name("15") == "SIGTERM"
    assert real._signal_name(str(signal.SIGRTMIN + 1)) == "SIGRTMIN+1"
    assert real._describe_exit("killed", "9/KILL") == {"code": 137, "status": "SIGKILL", "core_dumped": False}


@pytest.mark.skipif(bool(UNAVAILABLE), reason=f"no systemd user manager here: {UNAVAILABLE}")
def test_a_unit_name_installed_elsewhere_is_refused_before_anything_is_written(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    name = f"labkit-test-shadow-{os.getpid()}.service"
    installed = real.unit_dir() / name
    installed.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")  # as if a user's own unit
    try:
        real.RealRun(parse("[Service]\nExecStart=/bin/true\n", name), lambda e: None)._show(("LoadState",))
        other = elsewhere / name
        other.write_text("[Service]\nExecStart=/bin/false\n")
        # ours is installed in the manager's folder; a different file of the same name must not replace it
        with pytest.raises(BadArgument, match="exists already|would shadow"):
            real.run_real(parse(other.read_text(), name, path=other), lambda e: None)
        assert installed.read_text().endswith("ExecStart=/bin/true\n")
    finally:
        installed.unlink()
