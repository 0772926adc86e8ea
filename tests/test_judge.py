"""The judge and what crosses to it: plain data by value, the rest by reference, nothing that runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit.course import _judge
from labkit.course._isolation import Isolation, hidden_folders
from labkit.course._relay import cell_roles, defined_names
from labkit.course._wire import Remote, StudentError, decode, rebuild_exception


def test_the_names_an_answer_defines_are_found_without_its_imports():
    source = "import os, re as regex\nfrom pathlib import Path\nX = 1\na, (b, c) = 1, (2, 3)\n" \
             "def stop(pid):\n    inner = 2\nclass Panel:\n    pass\nfor i in range(3):\n    pass\n"
    assert defined_names(source, imports=False) == ["X", "a", "b", "c", "stop", "Panel", "i"]
    assert defined_names(source)[:3] == ["os", "regex", "Path"]
    assert defined_names("def broken(:") == []


def test_answers_run_in_the_student_kernel_setup_in_both_and_the_rest_in_the_judge():
    def code(grade_id, **meta):
        return nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {"grade_id": grade_id, **meta}})

    nb = nbformat.v4.new_notebook(cells=[code("setup"), nbformat.v4.new_markdown_cell("text"),
                                         code("ex1_answer", solution=True), code("ex1_run"),
                                         code("ex1_tests", grade=True, points=1), code("check_my_work"),
                                         code("cleanup"), nbformat.v4.new_code_cell("   ")])
    assert cell_roles(nb) == {0: "both", 2: "answer", 3: "judge", 4: "judge", 5: "skip", 6: "judge"}


def test_decoding_gives_plain_data_and_references_and_refuses_anything_else():
    remote = lambda token, name, is_callable: (token, name, is_callable)  # noqa: E731
    data = {"__d": [["path", {"__p": "/tmp/x"}], ["pair", {"__t": [1, "a"]}], ["raw", {"__b": "aGk="}],
                    ["fn", {"__r": "0", "call": True, "name": "stop"}], ["list", [None, True, 2.5]]]}
    assert decode(data, remote) == {"path": Path("/tmp/x"), "pair": (1, "a"), "raw": b"hi",
                                    "fn": ("0", "stop", True), "list": [None, True, 2.5]}
    for bad in ({"__class__": "os.system"}, {}, {"x": 1}):
        with pytest.raises(ValueError):
            decode(bad, remote)
    nested: list = []
    for _ in range(60):
        nested = [nested]
    with pytest.raises(ValueError, match="deeply"):
        decode(nested, remote)


def test_a_learners_exception_is_rebuilt_as_a_builtin_or_a_plain_student_error():
    assert type(rebuild_exception("ValueError", "refusing")) is ValueError
    assert type(rebuild_exception("TimeoutError", "late")) is TimeoutError
    for name in ("CheckFailed", "SystemExit", "KeyboardInterrupt", "__import__('os')", "BaseException"):
        error = rebuild_exception(name, "x")
        assert isinstance(error, StudentError) and name in str(error)


def test_a_remote_object_is_read_only_and_never_pickled():
    calls = []

    class Channel:
        def call(self, token, attr, args):
            calls.append((token, attr, args))
            if attr == "missing":
                raise AttributeError(attr)
            return 42

    obj = Remote(Channel(), "3", "panel", False)
    assert obj.pid == 42 and obj(1, x=2) == 42 and not hasattr(obj, "missing")
    assert calls[:2] == [("3", "pid", None), ("3", "", ((1,), {"x": 2}))]
    with pytest.raises(AttributeError):
        obj.pid = 7
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(obj)


def test_a_judge_cell_reports_errors_timeouts_and_cuts_its_output():
    namespace: dict = {}
    assert _judge.run_cell(namespace, "x = 1\nprint('hi')", 0, 5)["output"] == "hi\n"
    failed = _judge.run_cell(namespace, "assert x == 2, 'x is 1'", 1, 5)
    assert (failed["status"], failed["ename"], failed["evalue"]) == ("error", "AssertionError", "x is 1")
    slow = _judge.run_cell(namespace, "while True:\n    try:\n        pass\n    except Exception:\n        pass", 2, 0.3)
    assert slow["status"] == "timeout"  # an ``except Exception`` in the cell cannot swallow it
    loud = _judge.run_cell(namespace, "print('y' * 5000)", 3, 5, output_max=1000)
    assert len(loud["output"]) == 1000 and "beyond 1000 bytes dropped" in loud["dropped"]


def test_the_judge_starts_non_dumpable_and_ends_with_its_connection(tmp_path):
    ours, theirs = socket.socketpair()
    judge = subprocess.Popen([sys.executable, "-I", "-m", "labkit.course._judge", str(theirs.fileno())],
                             pass_fds=[theirs.fileno()], cwd=tmp_path)
    theirs.close()
    try:
        reader = ours.makefile("rb")
        hello = json.loads(reader.readline())
        assert hello["op"] == "ready" and hello["no_dump"] is True and hello["pid"] == judge.pid
        ours.sendall(b'{"op": "run", "index": 0, "source": "print(6 * 7)", "timeout_s": 5}\n')
        assert json.loads(reader.readline())["output"] == "42\n"
        with open(f"/proc/{judge.pid}/status") as status:
            assert "TracerPid:\t0" in status.read()
        reader.close()
        ours.close()  # the end of the connection: the judge exits
        assert judge.wait(timeout=10) == 0
    finally:
        if judge.poll() is None:
            judge.kill()
            judge.wait()


def test_folders_that_hold_labkit_or_the_run_stay_visible_and_are_named(tmp_path):
    for name in ("solutions", "graded", "repo/labkit", "submitted/a"):
        (tmp_path / name).mkdir(parents=True)
    hide, kept = hidden_folders([tmp_path / "solutions", tmp_path / "graded", tmp_path / "repo",
                                 tmp_path / "submitted", tmp_path / "submitted" / "a", tmp_path / "missing"],
                                keep=[tmp_path / "repo" / "labkit"])
    assert hide == [str(tmp_path / "graded"), str(tmp_path / "solutions"), str(tmp_path / "submitted")]
    assert kept == [str(tmp_path / "repo")]


def test_the_protections_are_described_for_the_gradebook():
    assert Isolation(missing=("sandbox user and namespaces (not root)",)).describe() == \
        "judge; missing: sandbox user and namespaces (not root)"
    full = Isolation(999, 995, "labkit-grader", ("/x",)).describe()
    assert full.startswith("judge; user labkit-grader (uid 999); pid+mount namespaces") and "missing" not in full
