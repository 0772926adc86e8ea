"""Why is this process stuck? Evidence from /proc and the usual tools, a verdict, and next steps.

:func:`diagnose` watches a process for ``sample_s`` seconds and names what it is doing:

=============  =====================================================================
cpu-bound      it burns CPU (most samples in state R)
blocked-io     it waits in a read/write/accept/connect on a pipe, socket or file, or in D state
lock-wait      its threads wait on futexes (locks, conditions): a deadlock looks like this
idle-sleep     it sleeps on purpose: nanosleep, pause, wait4, an event loop with no events
stopped        SIGSTOP / Ctrl-Z / a debugger holds it (state T or t); SIGTTIN/SIGTTOU when a
               background job touched its terminal
frozen         a cgroup freezer holds it (v1 freezer.state FROZEN, v2 cgroup.freeze 1)
undetermined   it sleeps, and the kernel hides why (no ptrace permission: wchan and syscall hidden)
zombie         it has exited; its parent has not collected the exit status (state Z)
gone           there is no such process
progressing    (a labkit trainer) its heartbeat and step count move
hung           (a labkit trainer) no step for the whole window; ``cause`` says why
=============  =====================================================================

Every verdict comes with the evidence that decided it, in words, and what a person should do
next. ``confidence`` is "high" when the kernel showed what decides the verdict and "low" when
some of it was hidden (``missing`` says what, and how to get it). Tools (py-spy, strace, lsof, gdb) add detail where they are installed and ptrace is
permitted; where they are not, the report says so and the verdict rests on /proc alone.
"""

from __future__ import annotations

import json
import platform
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from labkit import _linux
from labkit._linux import proc as _proc, tree as _tree

VERDICTS = ("cpu-bound", "blocked-io", "lock-wait", "idle-sleep", "stopped", "frozen", "zombie", "gone", "undetermined",
            "progressing", "hung")
_TOOL_TIMEOUT_S = 10.0
_SHOWN_LINES = {"py-spy": 12, "strace": 6, "lsof": 8, "gdb": 10}
# system call numbers that say what a blocked process waits for (x86_64, aarch64)
_SYSCALLS = {
    "x86_64": {0: "read", 1: "write", 2: "open", 257: "openat", 7: "poll", 17: "pread64", 19: "readv", 23: "select", 34: "pause",
               35: "nanosleep", 42: "connect", 43: "accept", 44: "sendto", 45: "recvfrom", 47: "recvmsg",
               61: "wait4", 72: "fcntl", 73: "flock", 74: "fsync", 75: "fdatasync", 128: "rt_sigtimedwait",
               130: "rt_sigsuspend", 202: "futex", 230: "clock_nanosleep", 232: "epoll_wait", 247: "waitid",
               270: "pselect6", 271: "ppoll", 281: "epoll_pwait", 288: "accept4"},
    "aarch64": {56: "openat", 63: "read", 64: "write", 67: "pread64", 65: "readv", 73: "ppoll", 72: "pselect6", 22: "epoll_pwait",
                101: "nanosleep", 115: "clock_nanosleep", 98: "futex", 202: "accept", 203: "connect", 206: "sendto",
                207: "recvfrom", 212: "recvmsg", 260: "wait4", 95: "waitid", 242: "accept4", 25: "fcntl", 32: "flock",
                82: "fsync", 83: "fdatasync", 133: "rt_sigsuspend", 137: "rt_sigtimedwait"},
}
_IO_CALLS = {"open", "openat", "read", "write", "pread64", "readv", "recvfrom", "recvmsg", "sendto", "accept", "accept4", "connect",
             "fsync", "fdatasync"}
_LOCK_CALLS = {"futex", "flock", "fcntl"}  # fcntl blocks only for F_SETLKW, a record lock
_FD_CALLS = _IO_CALLS - {"open", "openat"}  # their first argument is the file descriptor
_SLEEP_CALLS = {"nanosleep", "clock_nanosleep", "pause", "rt_sigsuspend", "rt_sigtimedwait", "wait4", "waitid"}
_POLL_CALLS = {"poll", "ppoll", "select", "pselect6", "epoll_wait", "epoll_pwait"}
_IO_WCHANS = ("wait_for_partner", "fifo_open", "pipe_read", "pipe_write", "wait_woken", "sk_wait_data", "unix_stream_read_generic", "inet_csk_accept",
              "unix_wait_for_peer", "io_schedule", "folio_wait", "wait_on_page", "do_wait_for_common", "n_tty_read")
_LOCK_WCHANS = ("futex", "flock", "locks_lock", "posix_lock")
_SLEEP_WCHANS = ("hrtimer_nanosleep", "do_nanosleep", "sigsuspend", "do_wait", "kernel_wait4", "do_sys_poll",
                 "ep_poll", "do_select", "schedule_timeout")


@dataclass
class Diagnosis:
    """What a process is doing, why we think so, and what to do about it."""

    pid: int
    verdict: str
    state: str = ""
    wchan: str = ""
    syscall: str = ""
    cpu_percent: float = 0.0
    evidence: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    cause: str = ""  # for a hung trainer: the low-level verdict behind it
    command: str = ""
    threads: list[dict] = field(default_factory=list)
    open_files: list[str] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)  # tool -> what it said, or why it did not run
    confidence: str = "high"  # "low" when evidence that decides the verdict was hidden from us
    missing: list[str] = field(default_factory=list)  # evidence we could not see, and why

    def as_dict(self) -> dict:
        """The JSON object ``labkit diagnose --json`` prints."""
        return asdict(self)

    def report(self) -> str:
        """The diagnosis as a few lines of text for a person."""
        command = " ".join(self.command.split())[:70]
        lines = [f"pid {self.pid} ({command}): {self.verdict.upper()}"
                 + (f" (cause: {self.cause})" if self.cause else "")]
        lines.append(f"  state {self.state or '-'}, wchan {self.wchan or '-'}, syscall {self.syscall or '-'}, "
                     f"cpu {self.cpu_percent:.0f}% of a core")
        lines += ["  evidence:"] + [f"    - {e}" for e in self.evidence]
        if self.missing:
            lines += [f"  confidence {self.confidence}: could not see"] + [f"    - {m}" for m in self.missing]
        lines += ["  next steps:"] + [f"    - {s}" for s in self.next_steps]
        for tool, said in self.tools.items():
            shown = [line for line in said.strip().splitlines() if line.strip()][:_SHOWN_LINES.get(tool, 4)]
            lines.append(f"  {tool}:" + ("".join(f"\n    {line[:110]}" for line in shown) if shown else " (nothing)"))
        return "\n".join(lines)


def diagnose(pid: int, sample_s: float = 2.0, use_tools: bool = True) -> Diagnosis:
    """Watch ``pid`` for ``sample_s`` seconds and diagnose it (never raises for a missing pid)."""
    if not _proc.exists(pid):
        return Diagnosis(pid, "gone", evidence=[f"no process has pid {pid}: {_linux.path(pid)} does not exist (it "
                                                 "exited and was reaped, or never existed)"],
                         next_steps=["check the pid (ps aux | grep NAME) or your pid file: it may be stale",
                                     "look for how it ended: its log, `journalctl`, `dmesg` for an OOM kill"])
    samples = _Sampler(pid).run(sample_s)
    if samples.gone:
        return Diagnosis(pid, "gone", evidence=[f"pid {pid} exited while it was being watched"],
                         next_steps=["read its log for the reason; its exit status went to its parent"])
    diagnosis = Diagnosis(pid, "idle-sleep", state=samples.state_text(), wchan=samples.main_wchan(),
                          syscall=samples.main_syscall_text(), cpu_percent=round(samples.cpu_percent, 1),
                          command=samples.command, threads=samples.thread_summary())
    samples.zombie_children = _zombie_children(pid)
    _add_files(diagnosis, pid, samples.zombie_children)
    _decide(diagnosis, samples)
    _trainer(diagnosis, samples)
    if use_tools and diagnosis.verdict not in ("zombie", "gone"):
        _run_tools(diagnosis, pid, samples)
    return diagnosis


class _Sampler:
    """Reads /proc/PID several times over the window."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.states: list[str] = []
        self.wchans: list[str] = []
        self.syscalls: list[list[str]] = []
        self.thread_states: dict[int, list[tuple[str, str, str]]] = {}
        self.cpu_percent = 0.0
        self.gone = False
        self.command = ""
        self.status: dict[str, str] = {}
        self.started = time.time()
        self.trainer_steps: tuple[int, int] | None = None
        self.stat: _linux.Stat | None = None
        self.hidden: set[str] = set()  # "wchan", "syscall": what the kernel would not show us
        self.zombie_children: list[int] = []  # its exited children nobody reaped, read once after the window

    def run(self, seconds: float) -> "_Sampler":
        try:
            proc = psutil.Process(self.pid)
            self.command = _command(proc)
            before = sum(proc.cpu_times()[:2])
        except psutil.NoSuchProcess:
            self.gone = True
            return self
        first_step = _trainer_step(self.command)
        started = time.monotonic()
        rounds = max(3, int(seconds / 0.1))
        for index in range(rounds):
            if not self._sample():
                self.gone = True
                return self
            time.sleep(max(0.0, started + (index + 1) * seconds / rounds - time.monotonic()))
        try:
            elapsed = time.monotonic() - started
            self.cpu_percent = (sum(proc.cpu_times()[:2]) - before) / elapsed * 100 if elapsed else 0.0
        except psutil.Error:
            pass
        if first_step is not None:
            self.trainer_steps = (first_step, _trainer_step(self.command) or first_step)
        self.status = _linux.read_status(self.pid)
        return self

    def _sample(self) -> bool:
        try:
            self.stat = _linux.read_stat(self.pid)
        except OSError:
            return False
        self.states.append(self.stat.state)
        wchan, calls = _linux.wchan(self.pid), _linux.syscall(self.pid)
        for what, value in (("wchan", wchan), ("syscall", calls)):
            if value == _linux.HIDDEN:
                self.hidden.add(what)
        self.wchans.append("" if wchan == _linux.HIDDEN else wchan)
        self.syscalls.append([] if calls == _linux.HIDDEN else list(calls))
        for tid in _tids(self.pid):
            try:
                tstat = _linux.read_stat(self.pid, tid)
            except OSError:
                continue
            twchan = _linux.wchan(self.pid, tid)
            entry = (tstat.state, "" if twchan == _linux.HIDDEN else twchan, tstat.comm)
            self.thread_states.setdefault(tid, []).append(entry)
        return True

    def fraction(self, *states: str) -> float:
        return sum(s in states for s in self.states) / max(len(self.states), 1)

    def state_text(self) -> str:
        common = max(set(self.states), key=self.states.count) if self.states else "?"
        return f"{common} ({self.fraction(common):.0%} of {len(self.states)} samples)"

    def main_wchan(self) -> str:
        named = [w for w in self.wchans if w and w != "0"]
        return max(set(named), key=named.count) if named else ""

    def main_syscall(self) -> tuple[str, list[str]]:
        blocked = [s for s in self.syscalls if s and s[0] not in ("running", "-1")]
        if not blocked:
            return ("running" if any(s[:1] == ["running"] for s in self.syscalls) else ""), []
        fields = max(blocked, key=blocked.count)
        table = _SYSCALLS.get(platform.machine(), {})
        return table.get(int(fields[0]), f"syscall {fields[0]}"), fields[1:]

    def main_syscall_text(self) -> str:
        name, args = self.main_syscall()
        if name in _FD_CALLS and args:
            return f"{name}(fd {int(args[0], 16)})"
        return name

    def thread_summary(self) -> list[dict]:
        summary = []
        for tid, seen in sorted(self.thread_states.items()):
            last = seen[-1]
            summary.append({"tid": tid, "name": last[2], "state": last[0], "wchan": last[1]})
        return summary


def _decide(d: Diagnosis, s: _Sampler) -> None:
    """The low-level verdict from states, wait channels, system calls and CPU."""
    name, args = s.main_syscall()
    if s.fraction("Z") > 0.5:
        _zombie(d, s)
        return
    frozen = _linux.freezer_state(d.pid)
    if frozen is not None:
        _frozen(d, frozen)
        return
    if s.fraction("T") > 0.5 and s.stat is not None and s.stat.in_background and _tty_stop(d, s, name, args):
        return
    if s.fraction("T", "t") > 0.5:
        tracer = s.status.get("TracerPid", "0")
        d.verdict = "stopped"
        d.evidence.append(f"state {'t (traced)' if s.fraction('t') > 0.5 else 'T (stopped)'} in "
                          f"{s.fraction('T', 't'):.0%} of samples and {d.cpu_percent:.0f}% CPU")
        if tracer != "0":
            d.evidence.append(f"TracerPid {tracer} ({_name(tracer)}): a debugger holds it")
        d.next_steps += [f"resume it: kill -CONT {d.pid} (someone sent SIGSTOP, or pressed Ctrl-Z in its terminal: "
                         "`fg` there)"] + ([f"or detach the debugger (pid {tracer})"] if tracer != "0" else [])
        return
    if d.cpu_percent >= 50 or s.fraction("R") > 0.6:
        d.verdict = "cpu-bound"
        d.evidence.append(f"{d.cpu_percent:.0f}% of a core over the window; state R (running) in "
                          f"{s.fraction('R'):.0%} of samples")
        d.next_steps += [f"see where it spends the time: py-spy dump --pid {d.pid} (Python), "
                         f"perf top -p {d.pid}, or gdb -p {d.pid} -batch -ex 'thread apply all bt'",
                         "a busy loop that makes no progress is a bug (a retry loop without sleep, a spin-wait)"]
        return
    if s.fraction("D") > 0.3:
        d.verdict = "blocked-io"
        d.evidence.append(f"state D (uninterruptible, in the kernel) in {s.fraction('D'):.0%} of samples, "
                          f"wchan {d.wchan or '?'}: waiting for a device, a disk or a network file system")
        d.next_steps += ["D state cannot be interrupted, not even by SIGKILL: find the device (iostat -x 1, "
                         "dmesg for I/O errors, an NFS server that stopped answering)",
                         f"cat /proc/{d.pid}/stack (as root) shows the kernel path it waits in"]
        return
    lock_threads = [t for t in d.threads if any(w in t["wchan"] for w in _LOCK_WCHANS)]
    if name in _LOCK_CALLS or any(w in d.wchan for w in _LOCK_WCHANS) or \
            (d.threads and len(lock_threads) == len(d.threads)):
        d.verdict = "lock-wait"
        waiting = len(lock_threads) or 1
        what = "a file lock (flock/fcntl): another process holds it" if name in ("flock", "fcntl") else \
            "a lock or a condition (futex)"
        d.evidence.append(f"{waiting} of {len(d.threads)} thread(s) wait in {name or 'futex'} (wchan "
                          f"{d.wchan or '?'}): blocked on {what}, {d.cpu_percent:.0f}% CPU")
        if d.threads and waiting == len(d.threads) and len(d.threads) > 1:
            d.evidence.append("every thread waits on a futex and none runs: the pattern of a deadlock")
        d.next_steps += [f"find who holds the lock: py-spy dump --pid {d.pid} (Python shows the line in each thread) "
                         f"or gdb -p {d.pid} -batch -ex 'thread apply all bt'",
                         "a deadlock does not resolve itself: fix the lock order; to stop it now, SIGTERM may not be "
                         "handled (the handler needs the lock): SIGKILL after a grace period"]
        return
    if name in _IO_CALLS or any(w in d.wchan for w in _IO_WCHANS):
        d.verdict = "blocked-io"
        d.evidence.append(f"state S and waiting in {d.syscall or name or 'I/O'} (wchan {d.wchan or '?'})")
        fd = int(args[0], 16) if name in _FD_CALLS and args else None
        if fd is not None:
            d.evidence.append(_describe_fd(d.pid, fd))
            if name in ("read", "readv", "pread64") and _is_terminal(_fd_target(d.pid, fd)):
                d.evidence.append(f"it waits for keyboard input on its terminal ({_fd_target(d.pid, fd)}): "
                                  "input(), a prompt, or anything reading stdin")
                d.next_steps += ["type the answer in its terminal (tmux attach / screen -r, then the window it runs "
                                 "in), or restart it with input that never blocks: `< /dev/null`, a flag such as "
                                 "--yes, or an environment variable instead of a prompt"]
                return
        if "wait_for_partner" in d.wchan or "fifo_open" in d.wchan:
            d.evidence.append("it is opening a FIFO (named pipe): open() blocks until another process opens the "
                              "other end")
        d.next_steps += [f"see what the other end is doing: lsof -p {d.pid}, ss -tp | grep {d.pid}, "
                         f"and who holds the other end of a pipe: lsof | grep the pipe's inode",
                         "give it data or close the other end (the read then returns end-of-file), or add a "
                         "timeout to the code that reads"]
        return
    if {"wchan", "syscall"} <= s.hidden:
        _undetermined(d, s)
        return
    d.verdict = "idle-sleep"
    why = name or d.wchan or "sleep"
    if name in _POLL_CALLS:
        d.evidence.append(f"state S in {why}: waiting for events on its file descriptors (an event loop or "
                          "a server with nothing to do), 0% CPU" if d.cpu_percent < 1 else
                          f"state S in {why}, {d.cpu_percent:.0f}% CPU")
    else:
        d.evidence.append(f"state S in {why} (wchan {d.wchan or '?'}), {d.cpu_percent:.1f}% CPU: it sleeps by "
                          "choice (a timer, a sleep call, waiting for a child)")
    zombies = s.zombie_children
    if zombies:
        d.next_steps += [f"its own problem: it never reaps its exited children {zombies[:10]} (zombies). It must call "
                         "wait()/waitpid() for each (in Python: Popen.wait(), or a SIGCHLD handler); as PID 1 of a "
                         "container, run it under an init that reaps (docker run --init, tini, dumb-init)"]
    else:
        d.next_steps += ["nothing is wrong with the process itself: check what it waits for (a timer, a child, a "
                         "request) in its code or with py-spy/strace"]
    _note_hidden(d, s)


def _zombie(d: Diagnosis, s: _Sampler) -> None:
    parent = s.status.get("PPid", "?")
    d.verdict = "zombie"
    d.evidence.append(f"state Z in {s.fraction('Z'):.0%} of samples: it has exited; parent pid {parent} "
                      f"({_name(parent)}) has not collected its exit status")
    if parent.isdigit() and _linux.nspid(int(parent))[-1] == 1 and int(parent) != 1:
        d.evidence.append(f"the parent, pid {parent} ({_name(parent)}), is PID 1 of its own PID namespace (a "
                          "container's entrypoint): PID 1 inherits every orphan and must reap them, and this one "
                          "does not (a program that is not an init)")
        d.next_steps += ["a zombie cannot be killed (it is already dead), and killing this parent stops the whole "
                         "container: do not",
                         "start the container with an init that reaps: `docker run --init`, tini or dumb-init as "
                         "the entrypoint (Kubernetes: shareProcessNamespace, or tini in the image)",
                         "or make the entrypoint reap: wait() for every child (in Python a SIGCHLD handler calling "
                         "os.waitpid(-1, os.WNOHANG) in a loop)"]
        return
    d.next_steps += [f"a zombie cannot be killed (it is already dead): the parent (pid {parent}) must reap it "
                     "with wait(); fix or signal the parent (some reap on SIGCHLD)",
                     f"if the parent is stuck, stopping it (kill {parent}) hands the zombie to init/a subreaper, "
                     "which reaps it"]


def _frozen(d: Diagnosis, frozen: _linux.FreezerState) -> None:
    d.verdict = "frozen"
    d.evidence.append(f"its cgroup {frozen.folder} is {frozen.state} by the cgroup {frozen.version} freezer: the "
                      "kernel holds every process in it, so it neither runs nor answers signals until thawed "
                      "(kill -CONT does nothing)")
    thaw = "echo THAWED >" if frozen.version == "v1" else "echo 0 >"
    d.next_steps += [f"find out who froze it (a scheduler suspending jobs, `docker pause`, systemd's freezer, a "
                     f"checkpointing tool), then thaw it: {thaw} {frozen.control}"
                     + ("  (or `docker unpause`, `systemctl thaw UNIT`)" if frozen.version == "v2" else
                        "  (or `docker unpause`)")]


def _tty_stop(d: Diagnosis, s: _Sampler, name: str, args: list[str]) -> bool:
    """A background job stopped for touching its terminal: SIGTTIN (read) or SIGTTOU (write, tcsetattr)."""
    fd = int(args[0], 16) if name in _FD_CALLS and args else None
    target = _fd_target(d.pid, fd) if fd is not None else ""
    if not _is_terminal(target) or name not in ("read", "readv", "pread64", "write"):
        return False
    sig = "SIGTTIN" if name != "write" else "SIGTTOU"
    d.verdict = "stopped"
    d.evidence.append(f"state T, stopped in {name}(fd {fd}) on its terminal {target}, in a background process group "
                      f"({s.stat.pgrp if s.stat else '?'}, the terminal's foreground group is "
                      f"{s.stat.tpgid if s.stat else '?'}): the kernel stopped it with {sig} because a background "
                      f"job {'read from' if sig == 'SIGTTIN' else 'wrote to'} the terminal")
    d.next_steps += [f"`kill -CONT {d.pid}` alone does not help: it {'reads' if sig == 'SIGTTIN' else 'writes'} "
                     f"again and stops again at once",
                     "bring it to the foreground in its shell (`fg`) and answer it, or restart it so that it never "
                     "reads the terminal: `nohup CMD < /dev/null > train.log 2>&1 &`, or run it in tmux/screen"]
    return True


def _undetermined(d: Diagnosis, s: _Sampler) -> None:
    d.verdict, d.confidence = "undetermined", "low"
    d.evidence.append(f"state S (sleeping) in {s.fraction('S'):.0%} of samples, {d.cpu_percent:.1f}% CPU; what it "
                      "sleeps in is hidden: it could be a lock, I/O or a plain sleep")
    _note_hidden(d, s)
    d.next_steps += ["run the diagnosis where ptrace is allowed on it: as its own user with the same capabilities, "
                     "as root, or in a container started with --cap-add SYS_PTRACE",
                     "meanwhile: its log and heartbeat say whether it still makes progress"]


def _note_hidden(d: Diagnosis, s: _Sampler) -> None:
    """Say which evidence the kernel hid, and lower the confidence of the verdict."""
    if not s.hidden:
        return
    d.confidence = "low"
    why = _ptrace_denied_reason()
    for what in sorted(s.hidden):
        d.missing.append(f"{_linux.path(d.pid, what)}: hidden by the kernel ({why})")


def _ptrace_denied_reason() -> str:
    from labkit._linux.ptrace import restrictions

    return "; ".join(restrictions()) or "no ptrace access to this process: another user's, or it has capabilities we lack"


def _zombie_children(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children() if c.status() == psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


def _fd_target(pid: int, fd: int) -> str:
    try:
        return _proc.fd_target(pid, fd)
    except OSError:
        return ""


def _is_terminal(target: str) -> bool:
    return target.startswith(("/dev/pts/", "/dev/tty", "/dev/console"))


def _trainer(d: Diagnosis, s: _Sampler) -> None:
    """For a labkit trainer: progressing or hung, from its step counter and heartbeat."""
    if s.trainer_steps is None or d.verdict in ("zombie", "gone"):
        return
    first, last = s.trainer_steps
    run_dir = _run_dir(s.command)
    heartbeat = run_dir / "heartbeat" if run_dir else None
    age = time.time() - heartbeat.stat().st_mtime if heartbeat and heartbeat.exists() else None
    if last > first:
        d.cause, d.verdict = d.verdict, "progressing"
        d.evidence.insert(0, f"a labkit trainer: steps {first} -> {last} during the window"
                             + (f", heartbeat {age:.1f} s ago" if age is not None else ""))
        d.next_steps = ["it trains: nothing to do (slow is not stuck)"]
    else:
        d.cause, d.verdict = d.verdict, "hung"
        d.evidence.insert(0, f"a labkit trainer with no new step during the window (still at step {last})"
                             + (f"; heartbeat last touched {age:.1f} s ago" if age is not None else ""))
        d.next_steps.append("its checkpoint is safe on disk: after fixing the cause, resume with --resume")


def _add_files(d: Diagnosis, pid: int, zombies: list[int]) -> None:
    if zombies:
        d.evidence.append(f"child process(es) {zombies} are zombies: this process never reaped them (wait())")
    try:
        proc = psutil.Process(pid)
        d.open_files = [f"fd {f.fd}: {f.path}" for f in proc.open_files()]
        d.connections = [f"fd {c.fd}: {c.type.name} {c.status} {c.laddr} -> {c.raddr or '-'}"
                         for c in proc.net_connections(kind="all")]
    except (psutil.Error, AttributeError):
        pass


def _describe_fd(pid: int, fd: int) -> str:
    """What fd N of pid is, and for a pipe, whether anyone can write to it (or read from it)."""
    try:
        target = _proc.fd_target(pid, fd)
    except OSError:
        return f"fd {fd} is not open any more"
    if target.startswith("pipe:"):
        others = _other_ends(pid, target)
        own = [other for other, link in _fd_targets(pid).items() if other != fd and link == target]
        if own and not others:
            return (f"fd {fd} is a pipe ({target}) whose only other end is its own fd {own[0]}: it waits for itself, "
                    f"forever; writing to {_linux.path(pid, 'fd', fd)} from outside would wake it")
        if not others:
            return f"fd {fd} is a pipe/FIFO ({target}) and no other process has it open: nobody will ever write"
        return f"fd {fd} is a pipe/FIFO ({target}); also open in " + ", ".join(
            f"pid {p} ({_name(p)})" for p in others[:5]) + ": the other end is alive but silent"
    if target.startswith("socket:"):
        return f"fd {fd} is a socket ({target}): waiting for the peer (see ss -tp / lsof -i)"
    return f"fd {fd} is {target}"


def _other_ends(pid: int, target: str) -> list[int]:
    return [other for other in _tree.pids() if other != pid and target in _fd_targets(other).values()]


def _fd_targets(pid: int) -> dict[int, str]:
    try:
        return _proc.fd_targets(pid)
    except OSError:
        return {}


def _run_tools(d: Diagnosis, pid: int, samples: _Sampler) -> None:
    python = "python" in Path(samples.command.split()[0] if samples.command else "").name
    if python:
        _tool(d, "py-spy", ["py-spy", "dump", "--pid", str(pid)])
    _tool(d, "strace", ["strace", "-f", "-tt", "-p", str(pid)], run_for_s=0.5)
    _tool(d, "lsof", ["lsof", "-n", "-P", "-p", str(pid)])
    if not python or "py-spy" not in d.tools or d.tools["py-spy"].startswith("not run"):
        _tool(d, "gdb", ["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt 8"])


def _tool(d: Diagnosis, name: str, argv: list[str], run_for_s: float | None = None) -> None:
    from labkit.doctor import find_tool

    path = find_tool(name)
    if path is None:
        d.tools[name] = f"not run: {name} is not installed"
        return
    try:
        if run_for_s is None:
            done = subprocess.run([path, *argv[1:]], capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S,
                                  errors="replace")
            output = done.stdout + done.stderr
        else:
            output = _run_for(path, argv, run_for_s)
    except subprocess.TimeoutExpired:
        d.tools[name] = f"not run: {name} did not finish in {_TOOL_TIMEOUT_S:g} s"
        return
    if re.search(r"Operation not permitted|ptrace.*(denied|not permitted)|Permission denied", output):
        d.tools[name] = (f"not run: ptrace is not permitted here ({name} says: "
                         f"{output.strip().splitlines()[-1][:120]}); containers need --cap-add SYS_PTRACE")
        return
    d.tools[name] = re.sub(r"\x1b\[[0-9;]*m", "", output).strip()[-4000:]  # py-spy colours even into a pipe


def _run_for(path: str, argv: list[str], seconds: float) -> str:
    """Run a tracer for ``seconds``, then stop it (SIGINT detaches strace cleanly)."""
    proc = subprocess.Popen([path, *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    try:
        time.sleep(seconds)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=_TOOL_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return output


def _command(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline()) or proc.name()
    except psutil.ZombieProcess:  # a zombie has no command line left, only its name
        return proc.name()


def _trainer_step(command: str) -> int | None:
    run_dir = _run_dir(command)
    if run_dir is None:
        return None
    from labkit.checks import last_logged_step

    return last_logged_step(run_dir)


def _run_dir(command: str) -> Path | None:
    if "labkit.trainer" not in command and "labkit train" not in command:
        return None
    match = re.search(r"--run-dir[ =](\S+)", command)
    return Path(match.group(1)) if match else None


def _tids(pid: int) -> list[int]:
    try:
        return _proc.tids(pid)
    except OSError:
        return []


def _name(pid: str | int) -> str:
    try:
        return psutil.Process(int(pid)).name()
    except (psutil.Error, ValueError):
        return "?"


def add_arguments(parser) -> None:
    """The options of ``labkit diagnose``."""
    parser.add_argument("pid", type=int)
    parser.add_argument("--sample", type=float, default=2.0, metavar="SEC", help="seconds to watch (default 2)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-tools", action="store_true", help="/proc only: no py-spy, strace, lsof, gdb")


def main(args) -> int:
    """``labkit diagnose PID``: print the diagnosis (exit 0; 1 if the pid does not exist)."""
    from labkit.errors import BadArgument

    if not 0 < args.sample <= 60:
        raise BadArgument(f"--sample must be between 0 and 60 seconds, got {args.sample:g}")
    if args.pid <= 0:
        raise BadArgument(f"bad pid {args.pid}")
    result = diagnose(args.pid, args.sample, use_tools=not args.no_tools)
    print(json.dumps(result.as_dict()) if args.json else result.report())
    return 1 if result.verdict == "gone" else 0
