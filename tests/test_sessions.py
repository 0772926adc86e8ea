"""A real terminal hang-up: which jobs of an interactive shell survive it."""

from __future__ import annotations

import psutil
import pytest

from labkit import sessions
from labkit.errors import BadArgument


def test_a_hangup_kills_plain_jobs_and_spares_nohup_setsid_and_disowned_ones():
    report = sessions.simulate_disconnect(settle_s=1.0)
    fates = {name: fate.survived for name, fate in report.items()}
    assert fates == {"plain": False, "nohup": True, "setsid": True, "disown": True}, report
    # survivors were killed before returning: nothing is left behind
    for fate in report.values():
        assert not psutil.pid_exists(fate.pid) or psutil.Process(fate.pid).status() == psutil.STATUS_ZOMBIE


def test_keep_leaves_survivors_to_the_caller():
    report = sessions.simulate_disconnect({"kept": "nohup sleep 300 > /dev/null 2>&1 &"}, keep=True)
    survivor = psutil.Process(report["kept"].pid)
    try:
        assert report["kept"].survived and survivor.status() in ("sleeping", "running")
    finally:
        survivor.kill()
        survivor.wait(5)


def test_bad_job_names_are_refused():
    with pytest.raises(BadArgument):
        sessions.simulate_disconnect({"no spaces": "sleep 1 &"})
