"""Who this server process is, and whether another one on the same host still lives.

Every answer records the process generating it (`Message.generated_by`), and every process
holds a lease (`ServerProcess`, renewed by its heartbeat). A process on another host is
taken for gone only when its lease lapses. One on this host can be asked directly: if its
pid no longer exists, it crashed or was killed, and its answers need not wait for the
lease. "This host" must also mean "this pid namespace" (containers share a host name and
a kernel but not their pids), so the name carries a key of the kernel's boot and the pid
namespace, and a pid is only looked up for names with this process's key.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from pathlib import Path


def _namespace_key() -> str:
    """The kernel's boot and this process's pid namespace, as 8 hex digits; "" where
    they cannot be read (no /proc): then no pid is ever looked up."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return hashlib.sha256(f"{boot}/{namespace}".encode()).hexdigest()[:8]


NAMESPACE_KEY = _namespace_key()

# This process's name on its lease and its answers: host, pid, a random part (unique
# across restarts and hosts) and the namespace key.
PROCESS_ID = f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}:{NAMESPACE_KEY}"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def crashed_here(process_id: str) -> bool:
    """Whether `process_id` names a process of this host and pid namespace whose pid is
    gone. A pid that was reused since counts as alive: the lease decides then."""
    host, _, rest = process_id.partition(":")
    pid, _, rest = rest.partition(":")
    _, _, key = rest.partition(":")
    if not NAMESPACE_KEY or key != NAMESPACE_KEY or process_id == PROCESS_ID:
        return False
    if host != PROCESS_ID.partition(":")[0] or not pid.isdecimal() or len(pid) > 10:
        return False
    return not _pid_exists(int(pid))
