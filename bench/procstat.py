"""CPU time, memory, threads and open files of a process, read from Linux's /proc.

Why /proc and not psutil: it is all the benchmark needs, and it adds no dependency.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of all threads of the process so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces; the fields after it do not.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time all cores spent running something (user, nice, system, irq, softirq) since boot."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    return (user + nice + system + irq + softirq) / _CLOCK_TICKS


def memory_mb(pid: int, key: str) -> float:
    """A line of /proc/<pid>/status in MB: "VmRSS" (resident now) or "VmHWM" (resident at peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) / 1024  # the kernel reports kB
    raise KeyError(f"{key} not in /proc/{pid}/status")


def thread_count(pid: int) -> int:
    """OS threads of the process (/proc/<pid>/task)."""
    return len(os.listdir(f"/proc/{pid}/task"))


def open_files(pid: int) -> list[str]:
    """What each open file descriptor of the process points at: a path, "socket:[…]", …"""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed since the listing
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return targets
