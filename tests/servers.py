"""Service processes for end-to-end tests: `compressor serve` and workers on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.service_setup import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(tmp_path: Path, home: Path, **extra: str) -> dict[str, str]:
    """Environment of a service process: model store at `home`, everything else under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPRESSOR_")}
    env.update({
        "PYTHONPATH": str(REPO), "COMPRESSOR_HOME": str(home),
        "COMPRESSOR_DATABASE_URL": f"sqlite:///{tmp_path / 'svc' / 'jobs.db'}",
        "COMPRESSOR_ARTIFACTS_DIR": str(tmp_path / "svc" / "artifacts"), "COMPRESSOR_WORK_DIR": str(tmp_path / "svc" / "work"),
        "COMPRESSOR_LEASE_S": "4", "COMPRESSOR_HEARTBEAT_S": "0.5", "COMPRESSOR_POLL_S": "0.25",
        "COMPRESSOR_EVENT_FLUSH_S": "0.25", "COMPRESSOR_MAX_ATTEMPTS": "2",
    })
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


class ServiceProcess:
    """A `compressor …` command running in the background with its output in a log file."""

    def __init__(self, env: dict[str, str], args: list[str], log: Path):
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "api.cli", *args], cwd=REPO, env=env,
                                     stdout=log.open("ab"), stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Server(ServiceProcess):
    def __init__(self, env: dict[str, str], log: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(env, ["serve", "--port", str(self.port), "--log-level", "warning", *extra], log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not come up:\n{self.output()}")
