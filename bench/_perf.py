"""Sampling the server with Linux ``perf`` (optional): where its CPU goes below Python.

``perf record -F <rate> -g -p <pid>`` samples only threads that are on a CPU, so samples / rate
is CPU time, split here by thread and by where the sampled instruction was: the interpreter
(libpython), its cyclic garbage collector, SQLite, msgspec, libc, or the kernel by system call
(pwrite64 and fdatasync are SQLite writing its WAL). libpython is built without frame pointers,
so the Python caller of a C function is not known here: ``bench._pyspy`` gives that side.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._measure import interrupt, launch

TOP = 15
# CPython 3.11's cyclic GC: collection proper and the tp_traverse visits it makes
GC_SYMBOLS = frozenset(
    {
        "gc_collect_main", "gc_collect_with_callback", "visit_decref", "visit_reachable",
        "subtract_refs", "update_refs", "move_unreachable", "deduce_unreachable",
        "move_legacy_finalizers", "handle_weakrefs", "PyObject_IS_GC", "dict_traverse",
        "list_traverse", "tupletraverse", "subtype_traverse", "func_traverse", "type_traverse",
        "cell_traverse", "set_traverse", "gc_collect_generations",
    }
)  # fmt: skip
_FRAME = re.compile(r"\s*[0-9a-f]+ (.*) \((.*)\)$")


def perf() -> str | None:
    return shutil.which("perf")


class Recording:
    """``perf record -g`` of one process until ``stop()``."""

    def __init__(self, pid: int, out: Path, rate: int, cpu: int | None) -> None:
        exe = perf()
        if exe is None:
            raise RuntimeError("perf is not installed")
        self.out = out
        self.rate = rate
        command = [exe, "record", "-F", str(rate), "-g", "-p", str(pid), "-o", str(out)]
        self._process = launch(command, cpu)

    def stop(self) -> None:
        interrupt(self._process)


@dataclass(frozen=True)
class Sample:
    tid: int
    frames: tuple[tuple[str, str], ...]  # (symbol, library), innermost first


def read_samples(path: Path) -> list[Sample]:
    exe = perf()
    if exe is None or not path.exists():
        return []
    done = subprocess.run(
        [exe, "script", "-i", str(path), "-F", "tid,ip,sym,dso"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    samples: list[Sample] = []
    tid: int | None = None
    frames: list[tuple[str, str]] = []
    for text in [*done.stdout.splitlines(), ""]:
        if not text.strip():
            if tid is not None:
                samples.append(Sample(tid, tuple(frames)))
            tid, frames = None, []
        elif text.strip().isdigit():  # a sample's header: its thread id (padded)
            tid = int(text)
        elif (match := _FRAME.match(text.rstrip())) is not None:
            frames.append((match.group(1), match.group(2).rsplit("/", 1)[-1]))
    return samples


def category(frames: tuple[tuple[str, str], ...]) -> str:
    """Where a sample's CPU went, by its innermost frame (and system call, in the kernel)."""
    if not frames:
        return "unknown"
    symbol, library = frames[0]
    if library == "[kernel.kallsyms]":
        for name, _ in frames:
            if name.startswith("__x64_sys_"):
                return "kernel " + name.removeprefix("__x64_sys_")
        if any("page_fault" in name for name, _ in frames):
            return "kernel page faults"
        return "kernel other"
    if symbol in GC_SYMBOLS:
        return "python cyclic GC"
    for marker, name in (
        ("libsqlite3", "sqlite"),
        ("_sqlite3", "python sqlite3 module"),
        ("libpython", "python interpreter"),
        ("msgspec", "msgspec"),
        ("_core.cpython", "msgspec"),
        ("loop.cpython", "uvloop"),
        ("parser.cpython", "httptools"),
        ("libc.so", "libc (memcpy, malloc, locks)"),
    ):
        if marker in library:
            return name
    return library


def summarise(
    samples: list[Sample], rate: int, names: dict[int, str], events: int
) -> dict[str, Any]:
    """Per thread: CPU seconds and per event, shares by category and top symbols."""
    by_thread: dict[str, list[Sample]] = {}
    for sample in samples:
        by_thread.setdefault(names.get(sample.tid, f"thread {sample.tid}"), []).append(sample)

    def per_event(count: int) -> float:
        return round(count / rate / max(events, 1) * 1e6, 2)

    threads: dict[str, Any] = {}
    for thread, found in sorted(by_thread.items(), key=lambda item: -len(item[1])):
        total = len(found)
        kinds = Counter(category(s.frames) for s in found)
        symbols = Counter(
            f"{s.frames[0][0]} ({s.frames[0][1]})" if s.frames else "unknown" for s in found
        )
        threads[thread] = {
            "cpu_seconds": round(total / rate, 2),
            "cpu_us_per_event": per_event(total),
            "categories": [
                {"category": k, "share": round(v / total, 4), "us_per_event": per_event(v)}
                for k, v in kinds.most_common()
            ],
            "top_symbols": [
                {"symbol": k, "share": round(v / total, 4), "us_per_event": per_event(v)}
                for k, v in symbols.most_common(TOP)
            ],
        }
    everything = Counter(category(s.frames) for s in samples)
    count = max(len(samples), 1)
    return {
        "tool": "perf record -g",
        "rate_hz": rate,
        "events": events,
        "samples": len(samples),
        "categories": [
            {"category": k, "share": round(v / count, 4), "us_per_event": per_event(v)}
            for k, v in everything.most_common()
        ],
        "threads": threads,
    }
