"""The unit linter: each rule on the mistake it is for, silence on good units, no crash on real ones."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.systemd.lint import has_errors, lint_file, lint_unit
from labkit.systemd.unitfile import parse

GOOD = """\
[Unit]
Description=Train the model
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=10min
StartLimitBurst=3

[Service]
Type=exec
User=trainer
WorkingDirectory=/srv/train
Environment=OMP_NUM_THREADS=4
ExecStart=/srv/venv/bin/python -m labkit.trainer --run-dir /srv/runs/a --resume
Restart=on-failure
RestartSec=30s
KillMode=mixed
TimeoutStopSec=5min
MemoryMax=16G
CPUQuota=400%
Nice=5

[Install]
WantedBy=multi-user.target
"""


def rules(text: str, name: str = "train.service") -> dict[str, str]:
    return {f.rule: f.severity for f in lint_unit(parse(text, name))}


def test_a_good_training_unit_has_no_findings():
    assert lint_unit(parse(GOOD, "train.service")) == []


@pytest.mark.parametrize("change, rule, severity, words", [
    (("ExecStart=", "ExecStrat="), "unknown-key", "error", "did you mean ExecStart="),
    (("[Install]", "[Instal]"), "unknown-section", "error", "did you mean [Install]"),
    (("Restart=on-failure", "Restart=sometimes"), "invalid-value", "error", "is not one of"),
    (("Nice=5", "Nice=25"), "invalid-value", "error", "-20"),
    (("CPUQuota=400%", "CPUQuota=lots"), "invalid-value", "error", "percentage"),
    (("MemoryMax=16G", "MemoryMax=16Q"), "invalid-value", "error", "size"),
    (("TimeoutStopSec=5min", "TimeoutStopSec=5 parsecs"), "invalid-value", "error", "time span"),
    (("MemoryMax=16G", "MemoryLimit=16G"), "deprecated", "warning", "MemoryMax="),
    (("ExecStart=/srv/venv/bin/python", "ExecStart=python"), "relative-path", "warning", "fixed PATH"),
    (("ExecStart=/srv/venv/bin/python", "ExecStart=venv/bin/python"), "relative-path", "error", "relative path"),
    (("StartLimitIntervalSec=10min", "StartLimitIntervalSec=0"), "restart-loop", "warning", "forever"),
    (("Wants=network-online.target\nAfter=network-online.target", "After=network.target"), "network-online",
     "warning", "network-online.target"),
    (("TimeoutStopSec=5min", "TimeoutStopSec=10s"), "stop-timeout", "warning", "SIGKILL"),
    (("TimeoutStopSec=5min\n", ""), "stop-timeout", "warning", "default 90 s"),
    (("KillMode=mixed", "KillMode=control-group"), "kill-mode", "warning", "KillMode=mixed"),
    (("KillMode=mixed", "KillMode=process"), "kill-mode", "warning", "left running"),
    (("User=trainer\n", ""), "no-user", "warning", "root"),
    (("StartLimitBurst=3\n", "StartLimitBurst=3\nRestartSec=1s\n"), "wrong-section", "error", "[Service]"),
    (("Restart=on-failure", "Restart=on-failure\nRestart=no"), "duplicate-key", "info", "last value wins"),
    (("Type=exec", "Type=oneshot"), "invalid-value", "error", None),  # with Restart=always below
])
def test_each_rule_fires_on_its_mistake_with_a_fix(change, rule, severity, words):
    text = GOOD.replace(*change)
    if words is None:
        text = text.replace("Restart=on-failure", "Restart=always")
    findings = [f for f in lint_unit(parse(text, "train.service")) if f.rule == rule]
    assert findings, f"{rule} did not fire on {change}"
    assert findings[0].severity == severity
    if words:
        assert words in findings[0].message + findings[0].fix
    assert findings[0].line > 0 and findings[0].fix


def test_missing_execstart_and_syntax_problems_are_errors():
    found = rules("[Service]\nRestart=no\nnot an assignment\n")
    assert found["missing-execstart"] == "error" and found["syntax"] == "error"
    assert "missing-execstart" not in rules("[Unit]\nSuccessAction=exit\n[Service]\nType=oneshot\n", "x.service")


def test_a_non_training_service_is_not_told_about_checkpoints():
    text = "[Service]\nUser=www\nExecStart=/usr/bin/python3 -m http.server\n"
    assert "stop-timeout" not in rules(text, "web.service") and "kill-mode" not in rules(text, "web.service")


def test_x_sections_and_keys_are_left_alone():
    assert rules("[X-Mine]\nAnything=1\n[Service]\nUser=a\nExecStart=/bin/true\nX-Note=hi\n", "a.service") == {}


SYSTEM_UNITS = [p for root in ("/lib/systemd/system", "/usr/lib/systemd/user") if Path(root).is_dir()
                for p in sorted(Path(root).rglob("*")) if p.is_file() and p.suffix]


@pytest.mark.skipif(not SYSTEM_UNITS, reason="no unit files under /lib/systemd/system on this machine")
def test_lint_never_crashes_on_an_installed_unit_and_finds_no_false_errors():
    errors = []
    for path in SYSTEM_UNITS:
        errors += [str(f) for f in lint_file(path, use_systemd_analyze=False) if f.severity == "error"]
    assert errors == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_findings_are_merged_without_repeating_ours(tmp_path):
    path = tmp_path / "train.service"
    path.write_text(GOOD.replace("ExecStart=/srv/venv/bin/python", "ExecStart=/no/such/python")
                    .replace("Restart=on-failure", "Restart=sometimes"))
    findings = lint_file(path)
    analyze = [f for f in findings if f.source == "systemd-analyze"]
    assert any("not executable" in f.message for f in analyze)  # a problem only systemd-analyze sees
    assert sum("sometimes" in f.message for f in findings) == 1  # one finding for one mistake
    assert has_errors(findings)
    assert len(lint_file(SYSTEM_UNITS[0])) >= 0 if SYSTEM_UNITS else True


def test_the_command_exits_1_on_errors_0_on_warnings_and_prints_json(tmp_path):
    good, bad = tmp_path / "good.service", tmp_path / "bad.service"
    good.write_text("[Service]\nUser=a\nExecStart=/bin/true\n")
    bad.write_text("[Service]\nExecStrat=/bin/true\n")
    run = lambda *args: subprocess.run([sys.executable, "-m", "labkit", "unit", "lint", "--no-systemd-analyze", *args],
                                       capture_output=True, text=True)
    assert run(str(good)).returncode == 0
    done = run(str(bad), "--json")
    assert done.returncode == 1
    findings = json.loads(done.stdout)
    assert {"file", "line", "rule", "severity", "message", "fix"} <= set(findings[0])
    assert {f["rule"] for f in findings} >= {"unknown-key", "missing-execstart"}
    missing = run(str(tmp_path / "nope.service"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
