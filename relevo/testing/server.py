"""Run ``relevo serve`` as a real process, for end-to-end tests and benchmarks.

with RelevoServer(tmp_path) as server:
    write_key = server.create_key("write")
    httpx.post(server.url + "/v1/track", ...)
    server.kill()      # SIGKILL, like a crash
    server.start()     # same files, same port
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RelevoServer:
    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        cpu: int | str | None = None,
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store_url = f"sqlite:///{directory / 'relevo.db'}"
        self._cpu = cpu
        self._env = {
            **os.environ,
            "RELEVO_STORE_URL": self.store_url,
            "RELEVO_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self._process: subprocess.Popen[bytes] | None = None
        self._log = directory / "server.log"

    def _command(self, *args: str) -> list[str]:
        command = [sys.executable, "-m", "relevo", *args]
        if self._cpu is not None:
            command = ["taskset", "-c", str(self._cpu), *command]
        return command

    def create_key(self, kind: str, source: str | None = None) -> str:
        """Create a key with the CLI (as an operator would) and return its secret."""
        args = ["keys", "create", "--kind", kind] + (["--source", source] if source else [])
        done = subprocess.run(
            [sys.executable, "-m", "relevo", *args],
            env=self._env,
            cwd=self.directory,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip().splitlines()[-1]

    def start(self, timeout: float = 20.0) -> None:
        # the child inherits the descriptor; the parent's copy is closed right after the spawn
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                self._command("serve", "--port", str(self.port)),
                env=self._env,
                cwd=self.directory,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"relevo serve exited early:\n{self._log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"relevo serve not ready in {timeout}s:\n{self._log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, as in a crash."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
            self._process = None

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def __enter__(self) -> RelevoServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
