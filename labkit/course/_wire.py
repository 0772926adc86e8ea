"""What crosses between the student kernel and the judge: plain data, by value; the rest by reference.

Under ``labkit grade`` the learner's answer cells run in the student kernel (untrusted) and the
instructor's tests in the judge (trusted; ``_judge.py``). A name an answer defines reaches the
judge as:

- plain data (None, bool, int, float, str, bytes, list, tuple, dict with str keys, paths),
  copied: decoded here from JSON only, never unpickled, so nothing the learner sends can run
  code in the judge;
- anything else (a function, a panel, a Popen) as a :class:`Remote`: calling it, or reading an
  attribute, runs in the student kernel and brings back data again.

Arguments go the other way pickled (trusted to untrusted is safe). The code the student kernel
runs for this is :data:`STUDENT_CODE`; a learner who tampers with it only corrupts their own
answers' values, which are theirs to send anyway.
"""

from __future__ import annotations

import base64
import builtins
import json
import pathlib
from typing import Any, Callable

MAX_DEPTH = 50
#: run once in the student kernel, silently, before the first answer cell
STUDENT_CODE = r'''
def __labkit_install__():
    import base64, json, pathlib, pickle
    refs = {}

    def enc(value, depth=0):
        if depth > 50:
            raise ValueError("data nested too deeply")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, pathlib.PurePath):
            return {"__p": str(value)}
        if isinstance(value, (bytes, bytearray)):
            return {"__b": base64.b64encode(bytes(value)).decode()}
        if isinstance(value, list):
            return [enc(item, depth + 1) for item in value]
        if isinstance(value, tuple):
            return {"__t": [enc(item, depth + 1) for item in value]}
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return {"__d": [[key, enc(item, depth + 1)] for key, item in value.items()]}
        token = str(len(refs))
        refs[token] = value
        return {"__r": token, "call": callable(value), "name": str(getattr(value, "__name__", type(value).__name__))}

    def resolve(value):
        if isinstance(value, tuple) and len(value) == 2 and value[0] == "__labkit_ref__":
            return refs[value[1]]
        return value

    def get(name):
        return json.dumps(enc(globals()[name]))

    def call(token, attr, payload):
        target = refs[token]
        if attr:
            return json.dumps(enc(getattr(target, attr)))
        args, kwargs = pickle.loads(base64.b64decode(payload))
        args = [resolve(arg) for arg in args]
        kwargs = {key: resolve(arg) for key, arg in kwargs.items()}
        return json.dumps(enc(target(*args, **kwargs)))

    def guarded(token, payload):
        from labkit.course.standin import call_guarded
        target, args, kwargs = pickle.loads(base64.b64decode(payload))
        done = call_guarded(refs[token], target, *args, **kwargs)
        return json.dumps([done.raised, done.message, [list(item) for item in done.signals], done.returned,
                           done.blocked])

    return {"get": get, "call": call, "guarded": guarded, "last": None}


__labkit__ = __labkit_install__()
del __labkit_install__
'''


class StudentError(Exception):
    """An exception of a type the judge does not share with the student kernel; the message
    holds its class name and text."""


class Remote:
    """An object that lives in the student kernel: calls and attribute reads run there."""

    def __init__(self, channel: Any, token: str, name: str, is_callable: bool) -> None:
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_token", token)
        object.__setattr__(self, "__name__", name)
        object.__setattr__(self, "_callable", is_callable)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._channel.call(self._token, "", (args, kwargs))

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return self._channel.call(self._token, attr, None)

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError("the learner's objects are read-only for the checks")

    def __repr__(self) -> str:
        return f"<{self.__name__} in the student kernel>"

    def __labkit_call_guarded__(self, target: int | str, *args: Any, timeout_s: float = 10.0, **kwargs: Any):
        """Refusal checks (``labkit.course.standin``): the grader decides how to stand in."""
        return self._channel.guarded(self._token, target, args, kwargs, timeout_s)

    def __reduce__(self):  # passed back as an argument: the student side resolves the reference
        raise TypeError("a Remote is sent by reference, not pickled")


def encode_args(args: tuple, kwargs: dict) -> tuple:
    """Arguments for the student kernel: Remote objects become references."""
    def swap(value: Any) -> Any:
        return ("__labkit_ref__", value._token) if isinstance(value, Remote) else value
    return [swap(arg) for arg in args], {key: swap(value) for key, value in kwargs.items()}


def decode(data: Any, remote: Callable[[str, str, bool], object], depth: int = 0) -> Any:
    """Rebuild a value the student kernel encoded (JSON only); references become what
    ``remote(token, name, is_callable)`` makes of them (a :class:`Remote` in the judge)."""
    if depth > MAX_DEPTH:
        raise ValueError("data nested too deeply")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(item, remote, depth + 1) for item in data]
    if isinstance(data, dict) and len(data) >= 1:
        if "__p" in data:
            return pathlib.Path(str(data["__p"]))
        if "__b" in data:
            return base64.b64decode(str(data["__b"]))
        if "__t" in data and isinstance(data["__t"], list):
            return tuple(decode(item, remote, depth + 1) for item in data["__t"])
        if "__d" in data and isinstance(data["__d"], list):
            return {str(key): decode(item, remote, depth + 1) for key, item in data["__d"]}
        if "__r" in data:
            return remote(str(data["__r"]), str(data.get("name", "object")), bool(data.get("call")))
    raise ValueError(f"not a value the student kernel sends: {str(data)[:100]}")


def rebuild_exception(ename: str, evalue: str) -> BaseException:
    """The student's exception as the judge raises it: a builtin class of that name, or
    :class:`StudentError`. Never a class the learner defined (nothing of theirs runs here)."""
    kind = getattr(builtins, ename, None) if ename.isidentifier() else None
    if isinstance(kind, type) and issubclass(kind, Exception) and kind.__module__ == "builtins":
        try:
            return kind(evalue)
        except Exception:  # noqa: BLE001 - a builtin with a different constructor
            pass
    return StudentError(f"{ename}: {evalue}" if evalue else ename)


def dumps(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"
