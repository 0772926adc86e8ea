"""The unit linter: each rule on the mistake it is for, silence on good units, no crash on real ones,
nothing that only ``systemd-analyze verify`` sees, and its claims checked on a real systemd manager.

The corpus in tests/fixtures/lint/ holds the unit files of the seed text (``seed-*.service``; the
seed's lines in SEED_LINES) and one hand-written unit per kind of mistake.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import wait_for

from labkit.systemd import manager
from labkit.systemd.lint import has_errors, lint_file, lint_unit, systemd_analyze_verify
from labkit.systemd.unitfile import load, parse

FIXTURES = Path(__file__).parent / "fixtures" / "lint"
CORPUS = sorted(p for p in FIXTURES.rglob("*") if p.suffix in (".service", ".timer"))
PRODUCTION = FIXTURES / "seed-production-ml-inference-api.service"
# Where each seed unit comes from in /work/shared/seed/000_7fa21d0946d53ddb.txt (first-last line).
SEED_LINES = {
    "seed-training": "362-374", "seed-restart": "626-629", "seed-inference-deps": "765-771",
    "seed-inference-api": "901-926", "seed-batch": "960-967", "seed-coordinator": "997-1016",
    "seed-production-ml-inference-api": "1035-1089", "seed-cpu-affinity": "1140-1145",
    "seed-training-limited": "1150-1165", "seed-memory-limits": "1180-1189", "seed-training-memory": "1194-1211",
    "seed-production-training": "1218-1234", "seed-inference-nice": "1501-1506",
    "seed-training-memoryhigh": "1525-1538",
}
UNAVAILABLE = os.environ.get("LABKIT_SYSTEMD_UNAVAILABLE")
needs_manager = pytest.mark.skipif(bool(UNAVAILABLE), reason=f"no systemd user manager here: {UNAVAILABLE}")
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")

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


def rules(text: str, name: str = "train.service", **kwargs) -> dict[str, str]:
    return {f.rule: f.severity for f in lint_unit(parse(text, name), **kwargs)}


def line_of(path: Path, start: str) -> int:
    """The number of the line of ``path`` that starts with ``start`` (so tests name lines by content)."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith(start):
            return number
    raise AssertionError(f"no line starting with {start!r} in {path}")


def line_of_text(text: str, start: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(start))


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
    # trailing comments: what systemd does with each kind of value
    (("CPUQuota=400%", "CPUQuota=400%          # 4 CPUs"), "trailing-comment", "error", "no CPU limit"),
    (("MemoryMax=16G", "MemoryMax=16G # hard limit"), "trailing-comment", "error", "no memory limit"),
    (("Nice=5", "Nice=5 ; lower priority"), "trailing-comment", "error", "rejects it and ignores the line"),
    (("Nice=5", "CPUAffinity=0 1 2 3  # cores 0-3"), "trailing-comment", "error", "all CPUs"),
    (("KillMode=mixed", "KillMode=mixed # trainer only"), "trailing-comment", "error", "KillMode=control-group"),
    (("Description=Train the model", "Description=Train the model # v2"), "trailing-comment", "warning",
     "comment included"),
    (("WorkingDirectory=/srv/train", "WorkingDirectory=/srv/train  # the project"), "trailing-comment", "error",
     "200/CHDIR"),
    (("--resume", "--resume # keep going"), "trailing-comment", "error",
     "'#', 'keep' and 'going' become more arguments"),
    (("Environment=OMP_NUM_THREADS=4", "Environment=OMP_NUM_THREADS=4 # B=2"), "trailing-comment", "error",
     "'B=2' are set as variables"),
    (("After=network-online.target", "After=network-online.target # wait"), "trailing-comment", "error",
     "more entries"),
    # shell syntax in Exec lines
    (("--resume", "--resume > /srv/runs/log 2>&1"), "shell-syntax", "error", "'>' and '2>&1' are shell syntax"),
    (("--resume", "--resume | tee /srv/runs/log"), "shell-syntax", "error", "'|', 'tee' and '/srv/runs/log'"),
    (("--resume", "--tag $(date)"), "shell-syntax", "error", "command substitution"),
    (("--resume", "--out ~/runs"), "shell-syntax", "error", "%h"),
    (("Nice=5", "ExecStartPre=/bin/mkdir -p /srv/runs && /bin/chown trainer /srv/runs"), "shell-syntax", "error",
     "ExecStartPre=/bin/sh -c '/bin/mkdir -p /srv/runs && /bin/chown trainer /srv/runs'"),
    (("Nice=5", "ExecStartPre=cd /srv/train"), "shell-syntax", "error", "shell builtin"),
    (("Nice=5", "ExecStartPre=/bin/mkdir -p /srv/runs ; make the folder"), "command-separator", "warning",
     "'make the folder' as a second command"),
    # specifiers
    (("--resume", "--tag run-%F"), "specifier", "error", "refuses to load the unit"),
    (("Nice=5", "ExecStartPre=/bin/date +%Y-%m-%d"), "specifier", "warning", "/bin/date +%%Y-%%m-%%d"),
    (("Environment=OMP_NUM_THREADS=4", "Environment=RUN=%x"), "specifier", "error", "ignores the line"),
    # Environment= quoting
    (("Environment=OMP_NUM_THREADS=4", "Environment=TRAIN_ARGS=--lr 0.1 --epochs 3"), "environment-quoting", "error",
     'Environment="TRAIN_ARGS=--lr 0.1 --epochs 3"'),
    # restarts, stops, commands, paths
    (("RestartSec=30s", "RestartSec=5min"), "restart-loop", "warning", "3 x (5min + run time), at least 15min"),
    (("Nice=5", "ExecStop=/bin/kill -TERM $MAINPID"), "signal-execstop", "warning", "two signals at once"),
    (("Nice=5", "ExecStop=/bin/kill -s INT $MAINPID"), "signal-execstop", "warning", "set KillSignal=SIGINT"),
    (("Nice=5", "ExecStop=/bin/sh -c 'kill -TERM $MAINPID'"), "signal-execstop", "warning", "SIGTERM"),
    (("Nice=5", "ExecStart=/srv/venv/bin/python -m labkit.evaluate"), "multiple-execstart", "error",
     "only allowed for Type=oneshot"),
    (("WorkingDirectory=/srv/train", "WorkingDirectory=srv/train"), "relative-path", "error",
     "refuses to load the unit"),
    (("Nice=5", "EnvironmentFile=train.env"), "relative-path", "error", "none of its variables are set"),
    (("ExecStart=/srv/venv/bin/python", "ExecStart=./train.sh"), "relative-path", "error", "refuses to load"),
])
def test_each_rule_fires_on_its_mistake_with_a_fix(change, rule, severity, words):
    text = GOOD.replace(*change)
    assert text != GOOD, f"{change[0]!r} is not in GOOD"
    if words is None:
        text = text.replace("Restart=on-failure", "Restart=always")
    findings = [f for f in lint_unit(parse(text, "train.service")) if f.rule == rule]
    assert findings, f"{rule} did not fire on {change}"
    assert findings[0].severity == severity
    if words:
        assert words in findings[0].message + findings[0].fix, findings[0]
    changed = next(n for n, line in enumerate(text.splitlines(), 1) if change[1].splitlines()[-1] in line) \
        if change[1] else None
    assert findings[0].line > 0 and findings[0].fix
    # (a section's header line is known only from a file: parse() of a text has the first assignment's)
    if rule not in ("no-user", "stop-timeout", "duplicate-key", "network-online", "wrong-section", "invalid-value",
                    "restart-loop", "unknown-section"):
        assert findings[0].line == changed, f"{rule} on line {findings[0].line}, the change is on line {changed}"


def test_a_trailing_comment_is_reported_once_with_its_cause_not_as_a_bad_value():
    text = GOOD.replace("CPUQuota=400%", "CPUQuota=400%          # 4 CPUs")
    found = [f for f in lint_unit(parse(text, "train.service")) if "CPUQuota" in f.message]
    assert [f.rule for f in found] == ["trailing-comment"]
    assert "no end-of-line comments" in found[0].message
    assert found[0].fix.startswith("put the comment on a line of its own above it ('# 4 CPUs', then 'CPUQuota=400%')")


@pytest.mark.parametrize("line", [
    "ExecStartPre=/bin/sh -c 'echo started > /srv/runs/log || exit 1'",
    "ExecStartPre=/usr/bin/find /tmp -name '*.tmp' -exec rm {} \\;",
    "ExecStartPre=/bin/sh -c 'echo $$HOME; date +%%Y-%%m-%%d'",
    "ExecStartPre=/bin/echo a ; /bin/echo b",
    "ExecStartPre=/bin/echo 'a # not a comment' \"b ; c\"",
    "ExecStartPre=/bin/echo %n %i %h",
    "Environment=\"ARGS=--lr 0.1 --epochs 3\" A=1 B=2",
    "Environment=\"WITH_HASH=a#b\" 'SEMI=x;y'",
    "Description=Bob's trainer; the nightly one",
    "EnvironmentFile=-/etc/train.env",
    "WorkingDirectory=~",
    "LogsDirectory=journal/%m.%i",
    "ExecStartPre=/usr/bin/test ! -e /srv/train/lock",
])
def test_legal_lines_that_look_like_mistakes_are_left_alone(line):
    section = "Unit" if line.startswith("Description") else "Service"
    text = GOOD.replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)
    findings = lint_unit(parse(text, "train@x.service"))
    assert findings == [], [str(f) for f in findings]


def test_user_units_are_told_what_a_user_manager_cannot_do():
    text = GOOD.replace("Wants=network-online.target\nAfter=network-online.target\n", "")
    assert "user-unit" not in rules(text, user=False)
    user = [f for f in lint_unit(parse(text, "train.service"), user=True) if f.rule == "user-unit"]
    assert [f.line for f in user] == [line_of_text(text, "User="), line_of_text(text, "WantedBy=")]
    assert "217/USER" in user[0].message and user[1].fix == "use WantedBy=default.target"
    assert "no-user" not in rules(text.replace("User=trainer\n", ""), user=True)
    # a file in a systemd/user folder is a user unit without being told
    assert {f.rule for f in lint_file(FIXTURES / "systemd" / "user" / "train.service", use_systemd_analyze=False)} \
        == {"user-unit"}


def test_the_seeds_production_unit_gets_every_cause_named():
    findings = lint_file(PRODUCTION, use_systemd_analyze=False)
    by_line: dict[int, list] = {}
    for finding in findings:
        by_line.setdefault(finding.line, []).append(finding)
    for key, lost in [("CPUQuota=", "no CPU limit"), ("MemoryLimit=", "no memory limit"),
                      ("TasksMax=", "default task limit"), ("LimitNOFILE=", "open-file limit")]:
        found = [f for f in by_line.get(line_of(PRODUCTION, key), []) if f.rule == "trailing-comment"]
        assert found and found[0].severity == "error", key
        assert "rejects it and ignores the line" in found[0].message and lost in found[0].message
        assert not [f for f in by_line[line_of(PRODUCTION, key)] if f.rule == "invalid-value"]
    shell = [f for f in by_line[line_of(PRODUCTION, "ExecStartPost=/usr/bin/curl")] if f.rule == "shell-syntax"]
    assert shell and "'||', 'exit' and '1' to curl" in shell[0].message
    assert shell[0].fix == "ExecStartPost=/bin/sh -c '/usr/bin/curl -f http://localhost:8000/health || exit 1'"
    stop = [f for f in by_line[line_of(PRODUCTION, "ExecStop=")] if f.rule == "signal-execstop"]
    assert stop and "KillSignal=" in stop[0].message
    assert has_errors(findings) and all(f.line > 0 for f in findings)


def test_the_seeds_restart_loop_and_every_seed_comment_are_found():
    restart = [f for f in lint_file(FIXTURES / "seed-restart.service", use_systemd_analyze=False)
               if f.rule == "restart-loop"]
    assert restart and "5 starts within 10s" in restart[0].message and "at least 50s" in restart[0].message
    for path in FIXTURES.glob("seed-*.service"):
        text = path.read_text().splitlines()
        commented = {n for n, line in enumerate(text, 1) if re.search(r"=.*\s[#;]", line)}
        flagged = {f.line for f in lint_file(path, use_systemd_analyze=False) if f.rule == "trailing-comment"}
        assert flagged == commented, path.name


def test_no_finding_has_line_zero_and_every_corpus_unit_has_findings():
    assert len(CORPUS) >= 25
    for path in CORPUS:
        findings = lint_file(path, use_systemd_analyze=False)
        assert findings, f"{path.name}: a bad unit with no finding"
        assert all(f.line > 0 and f.fix for f in findings), [str(f) for f in findings if f.line <= 0 or not f.fix]


SYSTEM_UNITS = [p for root in ("/lib/systemd/system", "/usr/lib/systemd/user") if Path(root).is_dir()
                for p in sorted(Path(root).rglob("*")) if p.is_file() and p.suffix]


@pytest.mark.skipif(not SYSTEM_UNITS, reason="no unit files under /lib/systemd/system on this machine")
def test_lint_never_crashes_on_an_installed_unit_and_finds_no_false_errors():
    errors = []
    for path in SYSTEM_UNITS:
        errors += [str(f) for f in lint_file(path, use_systemd_analyze=False) if f.severity == "error"]
    assert errors == []


@needs_analyze
def test_every_problem_systemd_analyze_reports_has_a_finding_of_ours_on_the_same_line():
    def compare(path: Path):
        theirs = systemd_analyze_verify(path, user="/systemd/user/" in path.as_posix())
        ours = {f.line for f in lint_file(path, use_systemd_analyze=False)}
        return path, theirs, ours

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(compare, CORPUS))
    reported, missed = 0, []
    for path, theirs, ours in results:
        reported += len(theirs)
        assert all(f.line > 0 for f in theirs), [str(f) for f in theirs]
        missed += [f"{path.name}:{f.line}: {f.message}" for f in theirs if f.line not in ours]
    assert reported >= 80, f"systemd-analyze found only {reported} problems in the corpus"
    assert missed == [], f"{len(missed)} of {reported} systemd-analyze findings have none of ours: {missed}"


@needs_analyze
def test_systemd_analyze_words_are_attached_to_our_finding_not_repeated(tmp_path):
    path = tmp_path / "train.service"
    path.write_text(GOOD.replace("ExecStart=/srv/venv/bin/python", "ExecStart=/no/such/python")
                    .replace("Restart=on-failure", "Restart=sometimes"))
    findings = lint_file(path)
    assert not [f for f in findings if f.source == "systemd-analyze"], [str(f) for f in findings]
    missing = [f for f in findings if f.rule == "missing-executable"]
    assert missing and "not executable" in missing[0].systemd and missing[0].line == line_of(path, "ExecStart=")
    assert sum("sometimes" in f.message for f in findings) == 1  # one finding for one mistake
    assert any("sometimes" in f.systemd for f in findings)
    assert has_errors(findings)


@needs_analyze
def test_what_only_systemd_analyze_says_is_kept_with_its_line(tmp_path):
    # IP address lists are not among labkit's rules: systemd's words come through, on their line.
    path = tmp_path / "api.service"
    path.write_text("[Service]\nUser=api\nExecStart=/bin/true\nIPAddressDeny=not-an-address\n")
    theirs = [f for f in lint_file(path) if f.source == "systemd-analyze"]
    assert theirs and all(f.line == line_of(path, "IPAddressDeny=") for f in theirs), [str(f) for f in theirs]
    assert "not-an-address" in theirs[0].message


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


# --- the claims, on a real systemd -----------------------------------------------------------------
def systemctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, timeout=30,
                          env=manager.user_environment())


@pytest.fixture
def installed():
    """Install unit files into the suite's manager; stop, reset and remove them afterwards."""
    found = manager.find()
    assert found is not None
    names: list[str] = []

    def install(name: str, text: str) -> Path:
        path = Path(found.unit_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        names.append(name)
        assert systemctl("daemon-reload").returncode == 0
        return path

    yield install
    if names:
        systemctl("stop", *names)
        systemctl("reset-failed", *names)
        for name in names:
            (Path(found.unit_dir) / name).unlink(missing_ok=True)
        systemctl("daemon-reload")


def show(name: str, *props: str) -> dict[str, str]:
    out = systemctl("show", name, "-p", ",".join(props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@needs_manager
def test_systemd_drops_the_commented_limits_and_keeps_them_once_the_comments_move(installed):
    text = PRODUCTION.read_text()
    tag = f"labkit-lint-{os.getpid()}"
    installed(f"{tag}-as-written.service", text)
    fixed = text
    for finding in lint_file(PRODUCTION, use_systemd_analyze=False):
        if finding.rule == "trailing-comment":
            line = text.splitlines()[finding.line - 1]
            fixed = fixed.replace(line + "\n", re.sub(r"\s+#.*$", "", line) + "\n")
    installed(f"{tag}-fixed.service", fixed)
    props = ("CPUQuotaPerSecUSec", "MemoryLimit", "TasksMax", "LimitNOFILE")
    as_written, after = show(f"{tag}-as-written.service", *props), show(f"{tag}-fixed.service", *props)
    assert as_written["CPUQuotaPerSecUSec"] == "infinity" and as_written["MemoryLimit"] == "infinity"
    assert as_written["TasksMax"] != "100" and as_written["LimitNOFILE"] != "10000"
    assert after == {"CPUQuotaPerSecUSec": "4s", "MemoryLimit": str(8 * 2**30), "TasksMax": "100",
                     "LimitNOFILE": "10000"}


@needs_manager
def test_the_restart_loop_rule_agrees_with_systemd_on_which_loop_ends(installed):
    tag = f"labkit-lint-{os.getpid()}"
    units = {
        # 3 x 100ms fits in 2 s: the fourth start is refused
        f"{tag}-ends.service": "[Unit]\nStartLimitIntervalSec=2s\nStartLimitBurst=3\n"
                               "[Service]\nExecStart=/bin/false\nRestart=on-failure\nRestartSec=100ms\n",
        # 3 x 400ms does not fit in 1 s: never four starts in one interval
        f"{tag}-forever.service": "[Unit]\nStartLimitIntervalSec=1s\nStartLimitBurst=3\n"
                                  "[Service]\nExecStart=/bin/false\nRestart=on-failure\nRestartSec=400ms\n",
    }
    predicted = {name: any(f.rule == "restart-loop" for f in lint_unit(parse(text, name), user=True))
                 for name, text in units.items()}
    assert predicted == {f"{tag}-ends.service": False, f"{tag}-forever.service": True}
    for name, text in units.items():
        installed(name, text)
    assert systemctl("start", "--no-block", *units).returncode == 0
    ends = wait_for(lambda: (s := show(f"{tag}-ends.service", "ActiveState", "NRestarts"))["ActiveState"] == "failed"
                    and s, what="the bounded loop to fail")
    assert ends["NRestarts"] == "3"
    wait_for(lambda: int(show(f"{tag}-forever.service", "NRestarts")["NRestarts"] or 0) >= 5,
             what="the unbounded loop to pass its burst")
    assert show(f"{tag}-forever.service", "ActiveState")["ActiveState"] in ("activating", "active")


@needs_manager
def test_a_kill_execstop_sends_a_second_signal(installed, tmp_path):
    script = tmp_path / "term.py"
    script.write_text("import signal, time\nn = 0\n"
                      "def on_term(s, f):\n    global n\n    n += 1\n"
                      "signal.signal(signal.SIGTERM, on_term)\nprint('started', flush=True)\n"
                      "while n == 0:\n    time.sleep(0.01)\ntime.sleep(0.3)\n"
                      "print(f'exiting after {n} SIGTERM', flush=True)\n")
    tag = f"labkit-lint-{os.getpid()}"
    text = f"[Service]\nExecStart={sys.executable} {script}\nExecStop=/bin/kill -TERM $MAINPID\nTimeoutStopSec=10\n"
    assert "signal-execstop" in rules(text, f"{tag}-stop.service", user=True)
    installed(f"{tag}-stop.service", text)
    assert systemctl("start", f"{tag}-stop.service").returncode == 0
    journal = lambda: subprocess.run(["journalctl", "--user-unit", f"{tag}-stop.service", "-o", "cat", "--no-pager"],
                                     capture_output=True, text=True, timeout=30, env=manager.user_environment()).stdout
    wait_for(lambda: "started" in journal(), what="the service to start")
    assert systemctl("stop", f"{tag}-stop.service").returncode == 0
    said = wait_for(lambda: re.search(r"exiting after (\d+) SIGTERM", journal()), what="the service's last line")
    assert said.group(1) == "2"
