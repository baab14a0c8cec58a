"""Sampling the server with py-spy (optional): thread names, a recording, and its summary.

py-spy is not a dependency of Relevo (``pip install py-spy``). The recording keeps only samples
of the thread holding the GIL (``--gil``): Python code runs only with the GIL, so samples / rate
is the time spent running Python (and C called with the GIL held, like msgspec or the cyclic
GC), attributed to Python functions and lines. SQLite, fsync and socket I/O release the GIL and
do not appear here; ``bench._perf`` sees them. Without ``--gil`` py-spy also counts threads that
are runnable but waiting for the one shared core, which overstates a thread's time by 2-3x when
all of the server is pinned to one core. Samples are taken without pausing the server
(``--nonblocking``) by a py-spy pinned to the load generator's core.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._measure import interrupt, launch

TOP = 25


def py_spy() -> str | None:
    """The py-spy executable next to this Python, else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def thread_names(pid: int) -> dict[int, str]:
    """OS thread id -> Python thread name, from one ``py-spy dump`` ({} without py-spy)."""
    exe = py_spy()
    if exe is None:
        return {}
    done = subprocess.run(
        [exe, "dump", "--pid", str(pid), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        return {}
    threads: list[dict[str, Any]] = json.loads(done.stdout)
    return {int(t["os_thread_id"]): str(t["thread_name"]) for t in threads if t.get("os_thread_id")}


class Recording:
    """``py-spy record --gil --format raw`` of one process until ``stop()``."""

    def __init__(self, pid: int, out: Path, rate: int, cpu: int | None) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("--profile needs py-spy: pip install py-spy")
        self.out = out
        self.rate = rate
        command = [
            exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--gil",
            "--threads", "--nonblocking", "--duration", "600", "--output", str(out),
        ]  # fmt: skip
        self._process = launch(command, cpu)

    def stop(self) -> None:
        interrupt(self._process)


@dataclass(frozen=True)
class Stack:
    thread: str
    frames: tuple[str, ...]  # outermost first, 'function (file)'
    line: str  # the innermost frame with its line: 'function (file:line)'
    samples: int


def read_stacks(path: Path, names: dict[int, str]) -> list[Stack]:
    """Parse py-spy's raw (collapsed) output: ``thread;frame;...;frame count`` per line."""
    stacks = []
    for text in path.read_text().splitlines():
        head, _, count = text.rpartition(" ")
        if not head or not count.isdigit():
            continue
        frames = head.split(";")
        # 'thread (12345): MainThread': the OS thread id, then the Python thread's name
        head_id, _, head_name = frames[0].partition("): ")
        os_id = head_id.rpartition("(")[2]
        thread = names.get(int(os_id), head_name) if os_id.isdigit() else frames[0]
        calls = frames[1:]
        stacks.append(
            Stack(
                thread,
                tuple(_function(f) for f in calls),
                _short(calls[-1]) if calls else "",
                int(count),
            )
        )
    return stacks


def _function(frame: str) -> str:
    """'EmbeddedLog._run (relevo/stream/embedded.py:158)' -> 'EmbeddedLog._run (embedded.py)'."""
    name, _, where = frame.partition(" (")
    module = where.rsplit(":", 1)[0].rsplit("/", 1)[-1].rstrip(")")
    return f"{name} ({module})" if module else name


def _short(frame: str) -> str:
    """'f (relevo/stream/embedded.py:158)' -> 'f (embedded.py:158)'."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def summarise(stacks: Iterable[Stack], rate: int, events: int, wall: float) -> dict[str, Any]:
    """Per thread: GIL time (share of the window and per event) and the top functions by
    inclusive samples, by self samples and by self samples per source line."""
    by_thread: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = {}
    own: dict[str, Counter[str]] = {}
    lines: dict[str, Counter[str]] = {}
    for stack in stacks:
        by_thread[stack.thread] += stack.samples
        for frame in set(stack.frames):
            inclusive.setdefault(stack.thread, Counter())[frame] += stack.samples
        if stack.frames:
            own.setdefault(stack.thread, Counter())[stack.frames[-1]] += stack.samples
            lines.setdefault(stack.thread, Counter())[stack.line] += stack.samples

    def per_event(samples: int) -> float:
        return round(samples / rate / max(events, 1) * 1e6, 2)

    def rows(counter: Counter[str], thread: str) -> list[dict[str, Any]]:
        total = by_thread[thread] or 1
        return [
            {"function": name, "share": round(count / total, 4), "us_per_event": per_event(count)}
            for name, count in counter.most_common(TOP)
        ]

    total = sum(by_thread.values())
    return {
        "tool": "py-spy --gil",
        "rate_hz": rate,
        "events": events,
        "samples": total,
        "gil_busy": round(total / rate / wall, 3) if wall > 0 else 0.0,
        "threads": {
            thread: {
                "gil_seconds": round(count / rate, 2),
                "gil_us_per_event": per_event(count),
                "inclusive": rows(inclusive.get(thread, Counter()), thread),
                "self": rows(own.get(thread, Counter()), thread),
                "self_lines": rows(lines.get(thread, Counter()), thread),
            }
            for thread, count in by_thread.most_common()
        },
    }
