"""The grader's side of the judge (``_judge.py``): which cell runs where, and the calls between them.

Cells are split by role (:func:`cell_roles`): the learner's answer cells run in the student
kernel only; the set-up cells before the first answer run in both (the answers need their
imports, the checks their helpers); every other code cell (glue, tests, clean-up) runs in the
judge only; "Check my work" (a widget for learners) runs nowhere. After each answer cell, the
names the *solution's* answer defines (:func:`defined_names`; not its imports) are brought
into the judge (``_wire.py``): what the tests use, and nothing else of the learner's, so a
name the learner's cell also binds (``os``, ``checks``) never replaces the judge's own. While a judge cell runs, it may call into the student
kernel; :class:`JudgeLink` answers those calls by executing in the student kernel, within the
cell's time.
"""

from __future__ import annotations

import ast
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from labkit.course._wire import STUDENT_CODE

#: the set-up cell's grade_id, and the one cell that runs nowhere under the grader
SKIPPED = {"check_my_work"}


def cell_roles(nb) -> dict[int, str]:
    """``{index: "answer" | "both" | "judge" | "skip"}`` for every non-empty code cell."""
    roles, seen_answer = {}, False
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not str(cell.source).strip():
            continue
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            roles[index], seen_answer = "answer", True
        elif meta.get("grade_id") in SKIPPED:
            roles[index] = "skip"
        elif not seen_answer and not meta.get("grade"):
            roles[index] = "both"
        else:
            roles[index] = "judge"
    return roles


def freezes(cell) -> bool:
    """Whether the learner's processes are frozen while this cell runs in the judge (the default).

    A check that watches something the answer left running (a throttle, ``cpulimit``, a
    watchdog) says ``"labkit": {"freeze_student": false}`` in its cell metadata: the learner's
    processes then run during that cell, and its evidence must rest on what they cannot forge
    (``/proc``, the kernel's own accounting), not on files they could write.
    """
    return bool(cell.get("metadata", {}).get("labkit", {}).get("freeze_student", True))


def defined_names(*sources: str, imports: bool = True) -> list[str]:
    """Top-level names the sources bind (assignments, defs, classes and, with ``imports``,
    imported modules), in order."""
    found: list[str] = []
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if not imports and isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in _bound(node):
                if name not in found and not name.startswith("__"):
                    found.append(name)
    return found


def _bound(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [alias.asname or alias.name.split(".")[0] for alias in node.names if alias.name != "*"]
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    elif isinstance(node, (ast.For, ast.AsyncFor)):
        targets = [node.target]
    elif isinstance(node, (ast.With, ast.AsyncWith)):
        targets = [item.optional_vars for item in node.items if item.optional_vars is not None]
    names = []
    for target in targets:
        names += [leaf.id for leaf in ast.walk(target) if isinstance(leaf, ast.Name)]
    return names


@dataclass
class JudgeReply:
    status: str  #: "ok", "error", "timeout", "stuck" (the judge did not answer), "gone" (it died)
    ename: str = ""
    evalue: str = ""
    output: str = ""
    dropped: str = ""  #: the notice that output beyond the cap was dropped


class JudgeLink:
    """The connection to one submission's judge, and the student kernel it calls into."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, km, kc,
                 interrupt_grace_s: float, standins: "StandIns | None" = None,
                 freeze: Callable[[bool], bool] | None = None, output_max: int = 2**20) -> None:
        self.reader, self.writer, self.km, self.kc = reader, writer, km, kc
        self.freeze = freeze  #: freezes the learner's processes while the judge works alone
        self.output_max = output_max
        self.interrupt_grace_s = interrupt_grace_s
        self.standins = standins
        self.info: dict[str, Any] = {}
        self.calls = 0
        self.gone = False  #: the judge closed the connection: it died
        self.freeze_failures = 0  #: freezes or thaws the kernel did not confirm

    async def hello(self, timeout_s: float) -> dict[str, Any]:
        self.info = await self._receive(timeout_s) or {}
        if self.info.get("op") != "ready":
            raise RuntimeError(f"the judge did not start: {self.info}")
        return self.info

    async def install_student_code(self, timeout_s: float) -> None:
        await self._student(STUDENT_CODE, None, timeout_s)

    async def _send(self, message: dict) -> None:
        """Raises ConnectionError when the judge is gone (it died with the sandbox)."""
        if self.writer.is_closing():
            raise ConnectionResetError("the judge is gone")
        self.writer.write(json.dumps(message).encode() + b"\n")
        await self.writer.drain()

    async def _receive(self, timeout_s: float) -> dict | None:
        """The judge's next message; None on timeout, end of connection (``self.gone``) or garbage."""
        try:
            line = await asyncio.wait_for(self.reader.readline(), max(timeout_s, 0.01))
            self.gone = self.gone or not line
            message = json.loads(line) if line else None
        except (asyncio.TimeoutError, ValueError, ConnectionError, asyncio.LimitOverrunError):
            return None
        return message if isinstance(message, dict) else None

    async def run(self, index: int, source: str, timeout_s: float, freeze: bool = True) -> JudgeReply:
        """Run one cell in the judge, answering its calls into the student kernel. ``freeze``:
        the learner's processes are frozen but during those calls (see :func:`freezes`)."""
        self._frozen(freeze)
        try:
            return await self._run(index, source, timeout_s, freeze)
        except ConnectionError:
            return JudgeReply("gone")
        finally:
            self._frozen(False)

    def _frozen(self, frozen: bool) -> None:
        if self.freeze is not None and not self.freeze(frozen):
            self.freeze_failures += 1

    async def _run(self, index: int, source: str, timeout_s: float, freeze: bool = True) -> JudgeReply:
        deadline = time.monotonic() + timeout_s
        await self._send({"op": "run", "index": index, "source": source, "timeout_s": timeout_s,
                          "output_max": self.output_max})
        while True:
            # the judge times its own cell; a little more here for its reply to arrive
            message = await self._receive(deadline + 2.0 - time.monotonic())
            if message is None:
                return JudgeReply("gone" if self.gone else "stuck")
            op = message.get("op")
            if op == "done":
                return JudgeReply(message["status"], message.get("ename", ""), message.get("evalue", ""),
                                  message.get("output", ""), message.get("dropped", ""))
            if op in ("call", "guarded"):
                self.calls += 1
                self._frozen(False)  # the learner's code runs only inside the call
                try:
                    reply = await self._answer(message, deadline)
                finally:
                    self._frozen(freeze)
                await self._send({"op": "result", "id": message.get("id"), **reply})

    async def bind(self, names: list[str], timeout_s: float) -> bool:
        """Bring the names an answer defined into the judge (absent ones are left out); False
        when the judge or the kernel is gone."""
        try:
            await self._bind(names, timeout_s)
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def _bind(self, names: list[str], timeout_s: float) -> None:
        found = {}
        for name in names:
            ok, value = await self._student(f"__labkit__['last'] = __labkit__['get']({name!r})",
                                            "__labkit__['last']", timeout_s)
            if ok:
                found[name] = value
        await self._send({"op": "bind", "names": found})
        await self._receive(timeout_s)

    async def _answer(self, message: dict, deadline: float) -> dict:
        token, left = str(message.get("token")), deadline - time.monotonic()
        if message["op"] == "guarded" and self.standins is not None and message.get("target") == 1:
            return await self.standins.call_against_init(self, token, message, left)
        if message["op"] == "guarded":
            code = f"__labkit__['last'] = __labkit__['guarded']({token!r}, {message['payload']!r})"
        else:
            code = (f"__labkit__['last'] = __labkit__['call']({token!r}, {str(message.get('attr') or '')!r}, "
                    f"{message.get('payload')!r})")
        ok, value = await self._student(code, "__labkit__['last']", left)
        if ok:
            return {"value": value}
        return {"error": value}

    async def _student(self, code: str, expression: str | None, timeout_s: float) -> tuple[bool, Any]:
        """Execute ``code`` in the student kernel; (True, the expression's value as JSON data) or
        (False, [ename, evalue])."""
        from queue import Empty

        expressions = {"r": expression} if expression else {}
        if not await self.km.is_alive():
            return False, ["RuntimeError", "the student kernel is dead"]
        msg_id = self.kc.execute(code, silent=True, store_history=False, user_expressions=expressions,
                                 allow_stdin=False)
        deadline = time.monotonic() + max(timeout_s, 0.01)
        interrupted = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if interrupted:
                    return False, ["TimeoutError", "the learner's code did not answer (kernel stuck)"]
                interrupted = True
                try:
                    await self.km.interrupt_kernel()
                except Exception:  # noqa: BLE001 - a dead kernel answers nothing either
                    return False, ["TimeoutError", "the learner's code ran out of time"]
                deadline = time.monotonic() + self.interrupt_grace_s
                continue
            try:
                reply = await self.kc.shell_channel.get_msg(timeout=left)
            except Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        content = reply.get("content", {})
        if interrupted:
            return False, ["TimeoutError", "the learner's code ran out of time (interrupted)"]
        if content.get("status") != "ok":
            return False, [str(content.get("ename", "Error")), str(content.get("evalue", ""))[:10_000]]
        if not expression:
            return True, None
        result = content.get("user_expressions", {}).get("r", {})
        if result.get("status") != "ok":
            return False, [str(result.get("ename", "Error")), str(result.get("evalue", ""))[:10_000]]
        try:  # literals only: whatever the learner made of the value, nothing of it runs here
            text = ast.literal_eval(result["data"]["text/plain"])
            return True, json.loads(text) if isinstance(text, str) else None
        except (KeyError, ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            return False, ["ValueError", "the learner's value could not be read"]

    def close(self) -> None:
        """End the connection (the judge exits when it reads the end); never awaits, so a
        cancelled run (Ctrl-C) still goes on to its clean-up."""
        self.writer.close()


class StandIns:
    """pid 1 of the sandbox's PID namespace is the grader's recording init: a learner's function
    asked to stop pid 1 is called for real, and the signals init received are the evidence."""

    def __init__(self, record: Path) -> None:
        self.record = record

    def received(self) -> list[dict]:
        try:
            lines = self.record.read_text().splitlines()
        except OSError:
            return []
        found = []
        for line in lines:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    async def call_against_init(self, link: JudgeLink, token: str, message: dict, left: float) -> dict:
        # the judge sent the call ready-made: the grader never unpickles what comes from the sandbox
        before = len(self.received())
        payload = str(message.get("payload_init", ""))
        timeout_s = min(float(message.get("timeout_s") or 10.0), left)
        ok, value = await link._student(f"__labkit__['last'] = __labkit__['call']({token!r}, '', {payload!r})",
                                        "__labkit__['last']", timeout_s)
        await asyncio.sleep(0.05)  # a signal sent just before the reply is recorded by now
        signals = [[1, entry["signal"]] for entry in self.received()[before:]]
        if ok:
            return {"value": [None, "", signals, _shown(value)[:500], True]}
        ename, evalue = value
        return {"value": [ename, evalue, signals, "", True]}



def _shown(data: Any) -> str:
    """A returned value as the learner would see it (the wire form decoded; references by name)."""
    from labkit.course._wire import decode

    try:
        return repr(decode(data, lambda token, name, is_callable: _Named(name)))
    except ValueError:
        return "(unreadable)"


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"
