"""Run one notebook for the grader: a fresh sandboxed kernel, timeouts, nothing left behind.

Each run gets a temporary folder (the kernel's working folder and ``$HOME``), per-run cgroups
where they are writable (see ``_cgroup.py``), and a kernel started through ``_sandbox.py``
(own session and process group, rlimits, subreaper). Cells run one by one through nbclient:

- a cell past its timeout is interrupted (SIGINT, as JupyterLab's stop button); if the kernel
  answers within a grace period the run goes on with the next cell, else the kernel is killed;
- the whole-notebook deadline shortens each cell's timeout, so it holds even for a kernel that
  ignores interrupts: the grader stops waiting and kills it from outside;
- a kernel that dies is noticed by nbclient's liveness poll (the sandbox exits with it); a cell
  that SIGKILLs the sandbox is blamed even when its reply beats the kernel's death.

Whatever happens, the end is the same: the sandbox is told to SIGKILL every descendant, the
cgroups are emptied and removed and, where no cgroup exists, processes still carrying the
run's token in their environment are killed too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import TYPE_CHECKING, Any

from labkit._linux import proc as _proc, tree as _tree, wait as _wait
from labkit.course import _cgroup, _ports
from labkit.course._isolation import SANDBOX as _SANDBOX, Isolation
from labkit.course._relay import JudgeLink, StandIns, cell_roles, freezes

if TYPE_CHECKING:
    from nbformat import NotebookNode

TOKEN_VAR = "LABKIT_GRADE_TOKEN"  #: set in the kernel's environment; inherited by all it starts
OUTPUT_MAX_BYTES = 2**20
#: The grader's environment variables a kernel keeps; the rest (credentials, tokens) is dropped.
KEPT_ENV = {"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "USER", "LOGNAME", "SHELL", "VIRTUAL_ENV",
            "LD_LIBRARY_PATH", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}
KEPT_PREFIXES = ("LC_", "PYTHON", "CONDA_", "LABKIT_", "CUDA_", "NVIDIA_")
KILL_TIMEOUT_S = 5.0  #: as in _sandbox.py (not imported: it loads ctypes, and this module stays light)


@dataclass(frozen=True)
class GradeLimits:
    """What one submission may use. ``None`` turns a limit off.

    The memory and process limits are enforced by a cgroup where one is writable; the rlimits
    (address space, CPU seconds and file size per process, and RLIMIT_NPROC for non-root users)
    always apply.
    """

    cell_timeout_s: float = 120.0  #: one cell; it is then interrupted
    notebook_timeout_s: float = 600.0  #: the whole notebook, kernel start included
    startup_timeout_s: float = 60.0  #: kernel start
    interrupt_grace_s: float = 5.0  #: after an interrupt; then the kernel is killed
    memory_max_bytes: int | None = 2 * 2**30  #: all processes of a submission (cgroup)
    max_processes: int | None = 256  #: tasks (threads count) of a submission (cgroup, RLIMIT_NPROC)
    address_space_max_bytes: int | None = 16 * 2**30  #: RLIMIT_AS, per process
    cpu_time_max_s: int | None = None  #: RLIMIT_CPU per process; None: twice the notebook timeout
    file_size_max_bytes: int | None = 2**30  #: RLIMIT_FSIZE: largest file a submission may write
    output_max_bytes: int = 2**20  #: output kept per cell (the grader's own memory); the rest is dropped
    freeze_student: bool = True  #: freeze the learner's processes while a test cell runs (a cgroup freezer)
    work_max_bytes: int | None = 2**30  #: the run's working folder, a tmpfs of this size (with the namespaces)


@dataclass
class CellOutcome:
    """What happened to one code cell."""

    index: int
    state: str  #: "ok", "error", "timeout"
    ename: str = ""
    evalue: str = ""


@dataclass
class RunOutcome:
    """The result of one run: per-cell outcomes and the run's status in words."""

    cells: dict[int, CellOutcome] = field(default_factory=dict)
    status: str = "ok"
    grader_error: bool = False  #: the grader, not the submission, failed (kernel did not start)
    seconds: float = 0.0
    missing: list[str] = field(default_factory=list)  #: protections this run lacked (see ``_isolation``)


async def run_notebook(nb: NotebookNode, limits: GradeLimits = GradeLimits(), isolation: Isolation | None = None,
                       answer_names: dict[int, list[str]] | None = None) -> RunOutcome:
    """Execute ``nb`` in place and say how each code cell ended: the answer cells in a fresh
    sandboxed student kernel, the other cells in the judge (``_relay.cell_roles``).

    Args:
        isolation: the sandbox user, namespaces and hidden folders (``_isolation.plan``);
            None: none of them (the judge still runs apart from the learner's code).
        answer_names: for an answer cell's index, the names the solution's answer defines: the
            ones brought into the judge after it (without: none).
    """
    import asyncio
    import subprocess
    import uuid

    import zmq
    from jupyter_client import AsyncKernelManager

    started = time.monotonic()
    deadline = started + limits.notebook_timeout_s
    token = uuid.uuid4().hex
    top = Path(tempfile.mkdtemp(prefix="labkit-grade-"))
    work = top / "work"
    (work / "tmp").mkdir(parents=True)
    groups = _cgroup.create(token[:16], limits.memory_max_bytes, limits.max_processes)
    student_group = _cgroup.student_freezer(groups) if limits.freeze_student else _cgroup.Cgroups()
    isolation = isolation or Isolation()
    import socket

    # the judge's connection: one end here, the other inherited by the sandbox (never a socket
    # file another process could connect to in the judge's place)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    km = AsyncKernelManager(kernel_spec_manager=_spec_manager(limits, groups, top, isolation, student_group,
                                                              theirs.fileno()))
    km.connection_file = str(top / "kernel.json")
    ports = _ports.reserve(5)  # outside the ephemeral range: no outgoing connection takes one first
    if ports:
        km.shell_port, km.iopub_port, km.stdin_port, km.control_port, km.hb_port = ports
    outcome, kc, link = RunOutcome(), None, None
    how: tuple[str, Any] = ("ok", None)
    try:
        with open(top / "kernel.log", "wb") as log:
            try:
                await km.start_kernel(cwd=str(work), env=_kernel_env(work, token), stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=log, pass_fds=[theirs.fileno()])
                theirs.close()
                kc = km.client()
                # A message bigger than this (ipykernel sends all a flood printed in 0.2 s as one)
                # closes the connection, which reconnects at once: the grader never decodes it.
                kc.context.setsockopt(zmq.MAXMSGSIZE, 16 * limits.output_max_bytes)
                kc.start_channels(stdin=False)  # never read: a kernel could fill it
                startup = min(limits.startup_timeout_s, max(deadline - time.monotonic(), 1))
                await kc.wait_for_ready(timeout=startup)
                reader, writer = await asyncio.open_unix_connection(sock=ours, limit=2**26)
                link = JudgeLink(reader, writer, km, kc, limits.interrupt_grace_s,
                                 StandIns(top / "init-signals.jsonl") if isolation.uid is not None else None,
                                 (lambda frozen: _cgroup.set_frozen(student_group, frozen))
                                 if student_group.folders else None, limits.output_max_bytes)
                await link.hello(startup)
                await link.install_student_code(startup)
            except Exception as err:  # noqa: BLE001 - any failure to start is reported, not raised
                how = ("start", f"{type(err).__name__}: {err}" + _log_tail(top / "kernel.log"))
            else:
                how = await _execute(nb, km, kc, limits, deadline, outcome, link, answer_names or {})
    finally:
        if link is not None:
            link.close()
        ours.close()
        theirs.close()
        _cgroup.set_frozen(student_group, False)
        left, kernel_end = await _uncancellable(_stop(km, kc, groups, token, top, student_group))
        notes = _notes(groups, limits, left)
        student_group.remove()
        groups.remove()
        shutil.rmtree(top, ignore_errors=True)
        _ports.release(ports)
    outcome.missing = _missing(limits, groups, student_group, isolation, link)
    outcome.status = _status(how, kernel_end, notes, limits, nb)
    outcome.grader_error = how[0] == "start"
    outcome.seconds = time.monotonic() - started
    return outcome


def _spec_manager(limits: GradeLimits, groups: _cgroup.Cgroups, top: Path, isolation: Isolation,
                  student_group: _cgroup.Cgroups, judge_fd: int):
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    command: list[str] = [sys.executable, "-I", "-S", str(_SANDBOX), "--status", str(top / "sandbox.json"),
               "--remove", str(top), "--top", str(top), "--judge-fd", str(judge_fd)]
    if isolation.uid is not None:
        command += ["--uid", str(isolation.uid), "--gid", str(isolation.gid)]
        for folder in isolation.hide:
            command += ["--hide", folder]
        for folder in isolation.expose:
            command += ["--expose", folder]
        for hierarchy, group in groups.folders.items():
            # The freezer stays the grader's: a frozen learner cannot thaw. On v2 the freezer is a
            # child of the run's folder, and whoever may write the run's cgroup.procs can move a
            # process out of it: then the run's folder is not delegated either.
            if hierarchy != "freezer" and not (hierarchy == "v2" and "v2" in student_group.folders):
                command += ["--delegate", str(group)]
        if limits.work_max_bytes:
            command += ["--work-max", str(int(limits.work_max_bytes))]
    for group in student_group.folders.values():
        command += ["--student-cgroup", str(group)]
    cpu = limits.cpu_time_max_s or int(2 * limits.notebook_timeout_s) + 1
    # RLIMIT_NPROC counts every task of the user, and silently: not where a pids cgroup counts the
    # run's own, nor under the sandbox user, which every submission graded at once shares
    nproc = None if isolation.uid is not None or any("tasks" in limit for limit in groups.limits) \
        else limits.max_processes
    for option, value in (("--as", limits.address_space_max_bytes), ("--cpu", cpu),
                          ("--fsize", limits.file_size_max_bytes), ("--nproc", nproc)):
        if value:
            command += [option, str(int(value))]
    for group in groups.folders.values():
        command += ["--cgroup", str(group)]
    # The grader's own Python and ipykernel (like nbval's --nbval-current-env), whatever
    # kernels are installed; no history file (a student could read another's).
    command += ["--", sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                "--HistoryManager.hist_file=:memory:"]
    spec = KernelSpec(argv=command, display_name="labkit grader (sandboxed)", language="python",
                      interrupt_mode="signal", env={}, metadata={})

    class OneSpec(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return spec

    return OneSpec()


def _missing(limits: GradeLimits, groups: _cgroup.Cgroups, student_group: _cgroup.Cgroups,
             isolation: Isolation, link: JudgeLink | None) -> list[str]:
    """The run's own protections that were not in force, in words, for the gradebook row."""
    missing = []
    if limits.freeze_student and not student_group.folders:
        missing.append("freezer (no writable cgroup freezer)")
    elif link is not None and link.freeze_failures:
        missing.append(f"freezer (failed {link.freeze_failures} times)")
    if limits.max_processes and not any("tasks" in limit for limit in groups.limits) and isolation.uid is not None:
        missing.append("process limit (no pids cgroup)")
    if limits.memory_max_bytes and not any(limit.startswith("memory") for limit in groups.limits):
        missing.append("memory limit for the whole submission (no memory cgroup; RLIMIT_AS per process only)")
    return missing


def _log_tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return f" ({lines[-1][:300]})" if lines else ""


def _kernel_env(work: Path, token: str) -> dict[str, str]:
    """What the kernel gets of the grader's environment, every per-user folder moved into the
    run's own folder.

    Only variables a notebook needs to run pass (see :data:`KEPT_ENV`): the instructor's tokens
    and keys stay out of reach of ``os.environ``. And a student must not reach the next
    submission through a shared file: IPython startup files, matplotlib's cache, a tmux
    server's socket, labkit's job records.
    """
    env = {key: value for key, value in os.environ.items() if key in KEPT_ENV or key.startswith(KEPT_PREFIXES)}
    env.update({
        TOKEN_VAR: token, "HOME": str(work), "TMPDIR": str(work / "tmp"), "TMUX_TMPDIR": str(work / "tmp"),
        "SCREENDIR": str(work / "tmp" / "screens"), "IPYTHONDIR": str(work / ".ipython"),
        "MPLCONFIGDIR": str(work / ".config" / "matplotlib"), "XDG_CONFIG_HOME": str(work / ".config"),
        "XDG_CACHE_HOME": str(work / ".cache"), "XDG_DATA_HOME": str(work / ".local" / "share"),
        "XDG_STATE_HOME": str(work / ".local" / "state"), "LABKIT_HOME": str(work / ".labkit"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    })
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")  # parallel grading: one core per kernel
    return env


async def _execute(nb, km, kc, limits: GradeLimits, deadline: float, outcome: RunOutcome, link: JudgeLink,
                   answer_names: dict[int, list[str]]) -> tuple[str, Any]:
    """Run the code cells in order, each where its role says; return how the run ended:
    (kind, cell index). Test cells are scored from the judge's outcome only."""
    roles = cell_roles(nb)
    first_timeout, count = None, [0]
    student = _StudentCells(nb, km, kc, limits)
    for index, cell in enumerate(nb.cells):
        role = roles.get(index, "skip")
        if role == "skip":
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "deadline", index
        limit = max(min(limits.cell_timeout_s, remaining), 0.01)
        if role in ("answer", "both"):
            ended = await student.run(index, cell, limit, count)
            if ended is not None:
                if ended[0] != "timeout":
                    return ended
                first_timeout = index if first_timeout is None else first_timeout
                if time.monotonic() >= deadline - 0.05:
                    return "deadline", index
            if role == "answer":
                outcome.cells[index] = student.outcomes.get(index, CellOutcome(index, "timeout"))
                names = answer_names.get(index, [])
                if not await link.bind(names, max(deadline - time.monotonic(), 1.0)) and student.dead():
                    return "died", index
                continue
        reply = await link.run(index, cell.source, max(min(limits.cell_timeout_s, deadline - time.monotonic()), 0.01),
                               freezes(cell))
        cell.outputs = _judge_outputs(reply)
        if reply.status in ("stuck", "gone"):  # the judge went silent: did the sandbox die under it?
            if await student.dies_within(2.0):
                return "died", index
            return ("judge died", index) if reply.status == "gone" else ("stuck", index)
        if reply.status == "timeout":
            outcome.cells[index] = CellOutcome(index, "timeout")
            if time.monotonic() >= deadline - 0.05:
                return "deadline", index
            first_timeout = index if first_timeout is None else first_timeout
            continue
        outcome.cells[index] = CellOutcome(index, reply.status, reply.ename, reply.evalue)
        if student.dead():
            return "died", index
    return ("timeout", first_timeout) if first_timeout is not None else ("ok", None)


def _judge_outputs(reply) -> list:
    from nbformat.v4 import new_output

    outputs = [new_output("stream", name="stdout", text=reply.output)] if reply.output else []
    if reply.dropped:
        outputs.append(new_output("stream", name="stderr", text=reply.dropped))
    if reply.status == "error":
        outputs.append(new_output("error", ename=reply.ename, evalue=reply.evalue, traceback=[]))
    return outputs


class _StudentCells:
    """The learner's side: cells run in the student kernel through nbclient, with timeouts."""

    def __init__(self, nb, km, kc, limits: GradeLimits) -> None:
        self.km, self.kc, self.limits = km, kc, limits
        self.replies: dict[int, dict] = {}
        self.outcomes: dict[int, CellOutcome] = {}
        self.limit = [limits.cell_timeout_s]

        def on_executed(cell, cell_index, execute_reply):
            self.replies[cell_index] = execute_reply or {}

        self.client = _capped_client_class()(nb, km=km, timeout_func=lambda cell: self.limit[0], allow_errors=True,
                                             interrupt_on_timeout=False, record_timing=False,
                                             on_cell_executed=on_executed)
        self.client.kc = kc
        self.client.output_max_bytes, self.client.output_bytes = limits.output_max_bytes, {}

    def dead(self) -> bool:
        return _sandbox_doomed(self.km)

    async def dies_within(self, timeout_s: float) -> bool:
        import asyncio

        deadline = time.monotonic() + timeout_s
        while not self.dead():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def run(self, index: int, cell, limit: float, count: list[int]) -> tuple[str, Any] | None:
        """None when the cell ended (well or not); else how the run must end, or ("timeout", i)."""
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        self.limit[0] = limit
        count[0] += 1
        try:
            await self.client.async_execute_cell(cell, index, execution_count=count[0])
        except CellTimeoutError:
            self.outcomes[index] = CellOutcome(index, "timeout")
            try:
                await self.km.interrupt_kernel()
            except Exception:  # noqa: BLE001 - the kernel went away meanwhile: it is stuck for us
                return "stuck", index
            if not await _answers_again(self.kc, self.limits.interrupt_grace_s):
                return "stuck", index
            return "timeout", index
        except DeadKernelError:
            if await self.km.is_alive():  # nbclient turns our task's cancellation into DeadKernelError
                import asyncio

                raise asyncio.CancelledError() from None
            return "died", index
        if _sandbox_doomed(self.km):  # the cell killed the sandbox: its reply can beat the kernel's death
            return "died", index
        self.outcomes[index] = _cell_outcome(index, cell, self.replies.get(index, {}))
        return None


_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)
_PF_KTHREAD = 0x200000  #: in stat's flags: a kernel thread (include/linux/sched.h)


def _sandbox_doomed(km) -> bool:
    """Whether the sandbox is dead or dying (SIGKILL pending, or already exiting).

    A cell that SIGKILLs the sandbox goes on running until the sandbox has really exited and
    the kernel gets its PR_SET_PDEATHSIG; under load that is long enough to finish the cell and
    even start the next one, so nbclient's liveness poll would blame a later cell. ``kill()``
    only returns once the signal is queued (or the target is exiting), and the reply is sent
    after that: so when the reply arrives, the sandbox's doom is already visible in ``/proc``.
    """
    process = getattr(km.provisioner, "process", None) if km.provisioner else None
    if process is None:
        return False
    if process.poll() is not None:
        return True
    try:
        data = _tree.read_stat_bytes(process.pid)
        status = _proc.status_bytes(process.pid).decode("ascii", "replace")
    except OSError:
        return process.poll() is not None
    fields = _tree.stat_fields(data)
    if fields[_tree.STATE] in _tree.DEAD_STATES or int(fields[_tree.FLAGS]) & _tree.PF_EXITING:
        return True
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("SigPnd", "ShdPnd"):
            try:
                if int(value.strip(), 16) & _SIGKILL_BIT:
                    return True
            except ValueError:
                continue
    return False


def _capped_client_class():
    from nbclient import NotebookClient
    from nbformat.v4 import new_output

    class CappedClient(NotebookClient):
        """nbclient keeping at most ``output_max_bytes`` of output per cell.

        A cell that prints without end would otherwise fill the grader's memory (in a test
        without the cap, 4 s of ``print`` took the grader to 1 GiB). Status messages still
        pass, so the end of the cell is seen; error messages pass, cut short.
        """

        output_max_bytes = OUTPUT_MAX_BYTES
        output_bytes: dict[int, int] = {}

        def process_message(self, msg, cell, cell_index):
            kind, content = msg["msg_type"], msg["content"]
            if kind in ("status", "execute_input", "clear_output"):
                return super().process_message(msg, cell, cell_index)
            if kind == "error":  # cut short, and counted like any output: errors can flood too
                content["evalue"] = str(content.get("evalue", ""))[:10_000]
                content["traceback"] = [str(line)[:2_000] for line in list(content.get("traceback", []))[-50:]]
                used = self.output_bytes.get(cell_index, 0) + _message_bytes(msg)
                self.output_bytes[cell_index] = used
                first = not any(out.get("output_type") == "error" for out in cell.outputs)
                # the first error is always kept: the cell's outcome is read from it
                return super().process_message(msg, cell, cell_index) if first or used <= self.output_max_bytes \
                    else None
            used = self.output_bytes.get(cell_index, 0) + _message_bytes(msg)
            self.output_bytes[cell_index] = used
            if used <= self.output_max_bytes:
                return super().process_message(msg, cell, cell_index)
            if used - _message_bytes(msg) <= self.output_max_bytes:  # the first message over the cap
                cell.outputs.append(new_output("stream", name="stderr", text="[labkit grade: output beyond "
                                               f"{self.output_max_bytes} bytes dropped]\n"))
            return None

    return CappedClient


def _message_bytes(msg: dict) -> int:
    content = msg.get("content", {})
    size = len(str(content.get("text", ""))) + len(str(content.get("evalue", ""))) + \
        sum(len(str(line)) for line in content.get("traceback", []) or [])
    data = content.get("data")
    if isinstance(data, dict):
        size += sum(len(str(value)) for value in data.values())
    size += len(str(content.get("state", ""))) if "comm_id" in content else 0
    return size + sum(len(buffer) for buffer in msg.get("buffers") or ())


def _cell_outcome(index: int, cell, reply: dict) -> CellOutcome:
    content = reply.get("content", {})
    errors = [out for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    if content.get("status") == "ok" and not errors:
        return CellOutcome(index, "ok")
    source = errors[0] if errors else content
    return CellOutcome(index, "error", str(source.get("ename", "Error")), str(source.get("evalue", "")))


async def _answers_again(kc, timeout_s: float) -> bool:
    """After an interrupt: whether the kernel runs the next request within ``timeout_s``.

    Requests on the shell channel are handled in order, so the reply to an empty request
    comes only once the interrupted cell has really stopped.
    """
    msg_id = kc.execute("", silent=True, store_history=False)
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await kc.shell_channel.get_msg(timeout=left)
        except Empty:
            return False
        if msg["parent_header"].get("msg_id") == msg_id:
            return True
    return False


async def _uncancellable(coroutine):
    """Await ``coroutine`` to its end even if this task is cancelled (Ctrl-C), then re-raise."""
    import asyncio

    task, cancelled = asyncio.ensure_future(coroutine), False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError()
    return task.result()


async def _stop(km, kc, groups: _cgroup.Cgroups, token: str, top: Path,
                student_group: _cgroup.Cgroups) -> tuple[int, dict]:
    """End the sandbox and everything under it; return (survivors, how the kernel ended)."""
    process = getattr(km.provisioner, "process", None) if km.provisioner else None
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the sandbox SIGKILLs every descendant, then exits
        # on its pidfd, in the event loop: back the moment it exits (a 5 ms poll before); poll() reaps
        await _wait.wait_exited_async(process.pid, KILL_TIMEOUT_S + 2)
        if process.poll() is None:
            _kill_group(process.pid)
            process.kill()
            process.wait()
    clean = process is not None and process.returncode == 0
    left = max(student_group.kill(), groups.kill()) if groups.folders else 0
    if not groups.folders or not clean:
        left = max(left, _kill_tagged(token))  # no cgroup, or the sandbox itself was killed
    if kc is not None:
        kc.stop_channels()
    try:
        await km.cleanup_resources()
    except Exception:  # noqa: BLE001 - the kernel is gone; what is left is files and sockets
        pass
    try:
        kernel_end = json.loads((top / "sandbox.json").read_text())
    except (OSError, ValueError):
        kernel_end = {}
    return left, kernel_end if isinstance(kernel_end, dict) else {}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _kill_tagged(token: str, timeout_s: float = KILL_TIMEOUT_S) -> int:
    """SIGKILL every process whose environment carries the run's token; return survivors.

    A process in the middle of ``execve`` (its new memory mapped, its arguments and environment
    not yet) shows an empty ``environ`` and ``cmdline``: the sweep goes on until no such
    process is left, else a child the kernel had just started (``Popen`` returns at that
    point) could slip through the last scan.
    """
    needle = f"{TOKEN_VAR}={token}".encode()
    deadline = time.monotonic() + timeout_s
    while True:
        found, unsure = [], False
        for pid in _tree.pids():
            if pid != os.getpid():
                try:
                    environ = _proc.environ(pid)
                    if needle in environ.split(b"\0"):
                        found.append(pid)
                    elif not environ and not unsure:
                        unsure = _mid_exec(pid)
                except OSError:
                    continue
        if (not found and not unsure) or time.monotonic() > deadline:
            return len(found)
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01 if found else 0.002)


def _mid_exec(pid: int) -> bool:
    """Whether a process with an empty environment is a live user process amid ``execve``
    (not a kernel thread, a zombie or one exiting, which show no environment either)."""
    try:
        data = _tree.read_stat_bytes(pid)
        empty = _proc.cmdline_empty(pid)
    except OSError:
        return False
    fields = _tree.stat_fields(data)
    return (empty and fields[_tree.STATE] not in _tree.DEAD_STATES
            and not int(fields[_tree.FLAGS]) & (_tree.PF_EXITING | _PF_KTHREAD))


def _notes(groups: _cgroup.Cgroups, limits: GradeLimits, left: int) -> list[str]:
    notes = []
    if groups.oom_kills():
        notes.append(f"out of memory (limit {_cgroup.mib(limits.memory_max_bytes or 0)})")
    if groups.forks_refused():
        notes.append(f"process limit ({limits.max_processes}) reached")
    if left:
        notes.append(f"{left} processes survived SIGKILL (state D)")
    return notes


def _status(how: tuple[str, Any], kernel_end: dict, notes: list[str], limits: GradeLimits, nb) -> str:
    """The run's status in words: ``ok``, ``timeout in cell 3 (add_answer)``, ``kernel died in
    cell 4 (q2_tests): killed by SIGKILL``, then notes such as ``process limit (64) reached``."""
    kind, index = how
    if kind == "start":
        return f"grader error: the kernel did not start ({index})"
    where = f"cell {index}"
    if index is not None:
        meta = nb.cells[index].get("metadata", {}).get("nbgrader", {})
        where += f" ({meta['grade_id']})" if meta.get("grade_id") else ""
    if kind == "ok":
        main = "ok"
    elif kind == "timeout":
        main = f"timeout in {where}"
    elif kind == "stuck":
        main = f"timeout in {where}: kernel killed, it ignored the interrupt"
    elif kind == "deadline":
        main = f"timeout in {where}: notebook over {limits.notebook_timeout_s:g} s"
    elif kind == "judge died":  # the learner's code killed it: it runs as the same user
        main = f"the checks' process (judge) was killed in {where}; the submission's code signalled it"
    else:
        main = f"kernel died in {where}{_death(kernel_end, notes)}"
    return "; ".join([main, *notes])


def _death(kernel_end: dict, notes: list[str]) -> str:
    if kernel_end.get("signal"):
        why = f"killed by {kernel_end['signal']}"
        if kernel_end["signal"] == "SIGKILL" and notes and notes[0].startswith("out of memory"):
            why = notes.pop(0)  # the OOM killer sent that SIGKILL
        elif kernel_end["signal"] == "SIGXCPU":
            why += " (CPU time limit)"
        return f": {why}"
    if kernel_end.get("exit_code") is not None:
        return f": exit code {kernel_end['exit_code']}"
    return ""
