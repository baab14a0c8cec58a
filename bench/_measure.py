"""Measuring helpers: percentiles, per-thread CPU from /proc, Prometheus text, the machine."""

from __future__ import annotations

import hashlib
import math
import os
import platform
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """count, mean, p50, p90, p99, p99.9 and max of durations in seconds, in milliseconds."""
    if not seconds:
        return {"count": 0}
    ordered = sorted(seconds)

    def at(q: float) -> float:
        rank = q * (len(ordered) - 1)
        low, high = math.floor(rank), math.ceil(rank)
        value = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
        return round(value * 1000, 3)

    return {
        "count": len(ordered),
        "mean_ms": round(sum(ordered) / len(ordered) * 1000, 3),
        "p50_ms": at(0.5),
        "p90_ms": at(0.9),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) so far of each thread of a process."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        fields = stat.rpartition(")")[2].split()
        found[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return found


def cpu_between(
    before: dict[int, float],
    after: dict[int, float],
    *,
    pid: int,
    names: dict[int, str],
    wall: float,
    events: int,
) -> dict[str, Any]:
    """The server's CPU use over a window: total and by thread name, per second and per event."""
    per_thread: dict[str, float] = {}
    for tid, seconds in after.items():
        used = seconds - before.get(tid, 0.0)
        if used <= 0:
            continue
        name = names.get(tid) or ("MainThread" if tid == pid else f"thread {tid}")
        per_thread[name] = per_thread.get(name, 0.0) + used
    total = sum(per_thread.values())

    def shape(seconds: float) -> dict[str, float]:
        return {
            "cpu_seconds": round(seconds, 3),
            "utilisation": round(seconds / wall, 3) if wall > 0 else 0.0,
            "us_per_event": round(seconds / events * 1e6, 2) if events else 0.0,
        }

    return {
        **shape(total),
        "threads": {
            name: shape(seconds)
            for name, seconds in sorted(per_thread.items(), key=lambda item: -item[1])
        },
    }


def cpu_times() -> dict[str, list[int]]:
    """Per-CPU jiffies from /proc/stat: user nice system idle iowait irq softirq steal ..."""
    found: dict[str, list[int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name != "cpu":
            found[name] = [int(v) for v in rest.split()]
    return found


def cpu_usage(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, Any]:
    """Busy, iowait and steal shares of each CPU over a window (steal: a noisy neighbour)."""
    found: dict[str, Any] = {}
    for name, now in after.items():
        then = before.get(name)
        if then is None:
            continue
        delta = [b - a for a, b in zip(then, now, strict=False)]
        total = sum(delta[:8]) or 1
        idle, iowait, steal = delta[3], delta[4], delta[7] if len(delta) > 7 else 0
        found[name] = {
            "busy": round((total - idle - iowait - steal) / total, 3),
            "iowait": round(iowait / total, 3),
            "steal": round(steal / total, 3),
        }
    return found


def source_state(root: Path) -> dict[str, Any]:
    """Which code was measured: the commit and a digest of uncommitted changes (read-only git)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout if done.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "relevo").splitlines()]
    diff = git("diff", "HEAD", "--", "relevo").encode()
    for name in sorted(changed):
        path = root / name
        if path.is_file() and name not in diff.decode(errors="replace"):
            diff += path.read_bytes()  # untracked files count too
    commit = git("rev-parse", "HEAD").strip() or None
    if commit is None:
        return {"commit": None, "path": str(root), "note": "not a git checkout"}
    return {
        "commit": commit,
        "relevo_changed_files": sorted(changed),
        "relevo_diff_sha256": hashlib.sha256(diff).hexdigest()[:16] if changed else None,
    }


def parse_metrics(text: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text exposition (name -> value)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "{" in line:
            continue
        name, _, value = line.partition(" ")
        try:
            found[name] = float(value)
        except ValueError:
            continue
    return found


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def filesystem_of(path: Path) -> str:
    """The type of the file system holding ``path`` (fsync on tmpfs is free: say so)."""
    best, kind = "", "unknown"
    resolved = str(path.resolve())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and resolved.startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def launch(command: list[str], cpu: int | None) -> subprocess.Popen[bytes]:
    """Start a profiler, on ``cpu`` if given (away from the server it records)."""
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def interrupt(process: subprocess.Popen[bytes]) -> None:
    """Stop a profiler with SIGINT (on which py-spy and perf write their files), or kill it."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
