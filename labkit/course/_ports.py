"""TCP ports for the kernels of one grader: free, distinct, and outside the ephemeral range.

jupyter_client picks a kernel's five ports by binding port 0 and closing the socket; the kernel
binds them a moment later. In between, the kernel's own ports come from the range the kernel
(Linux) also hands out as *source* ports of outgoing connections (``ip_local_port_range``,
32768-60999 by default), and a grader with many kernels makes many such connections: one of them
can take the port first. The kernel then dies with "Address already in use" (seen with
``--jobs 16`` on 2 cores: one kernel in 84). Ports below that range are never given to outgoing
connections, so only a listener could take one, and this module hands each port to one kernel of
this process at a time.
"""

from __future__ import annotations

import random
import socket
import threading

LOWEST = 10000  #: below: well-known and registered services' ports
_taken: set[int] = set()
_lock = threading.Lock()


def ephemeral_range() -> tuple[int, int]:
    """(first, last) source port Linux gives outgoing connections; (32768, 60999) when unknown."""
    from labkit._linux import proc

    try:
        return proc.ip_local_port_range()
    except (OSError, ValueError):
        return 32768, 60999


def reserve(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` ports free on ``host`` now, below the ephemeral range and not reserved yet.

    Returns [] where the range leaves no room below it (then jupyter_client picks, as before).
    Give them back with :func:`release` once the kernel has ended.
    """
    first, _ = ephemeral_range()
    if first - LOWEST < 100 * count:
        return []
    chosen: list[int] = []
    with _lock:
        for _ in range(1000):
            if len(chosen) == count:
                break
            port = random.randrange(LOWEST, first)
            if port in _taken or port in chosen or not _free(host, port):
                continue
            chosen.append(port)
        if len(chosen) < count:
            return []
        _taken.update(chosen)
    return chosen


def release(ports: list[int]) -> None:
    """Hand ``ports`` back (the kernel that had them has ended)."""
    with _lock:
        _taken.difference_update(ports)


def _free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
