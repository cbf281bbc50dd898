"""API load: many concurrent clients polling the job endpoints while a job runs.

Starts `compressor serve` (API + local executor, embedded defaults: SQLite, one uvicorn
process) on a free port with its service data in a temporary folder and the model store at
`--home`, submits one job that runs for the whole window (plus `--extra-jobs` queued behind
it, so `GET /v1/jobs` lists a realistic page), then runs `--clients` concurrent clients for
`--duration` seconds. Each client loops: `GET /v1/jobs/{id}`, then `GET /v1/jobs`. The job is
the torch-free dry-run runner by default (`--runner real` runs a W4A16 RTN job of the model
instead), so the numbers measure the API and its database, not the compression.

    python bench/api_load.py [--clients 200] [--duration 30] [--procs 2] [--runner dry-run|real]
                             [--home .cache/test-home] [--out bench/results/api_load.json]

The clients are asyncio tasks on httpx, spread over `--procs` processes; latency is measured
per request on the client (so it includes client-side scheduling on a loaded machine).
Errors: any non-2xx answer, timeout (`--timeout`) or transport failure. The server, its job
process and the clients share this machine's CPUs: `cpu_count` and `loadavg` are recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
RTN = {"name": "w4a16-rtn", "eval": {"max_tokens": 1024, "kl": False, "datasets": ["wiki"]},
       "stages": [{"quantize": {"weights": {"bits": 4, "strategy": "group", "group_size": 64, "method": "rtn"}}}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _summary(latencies: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in latencies]
    return {"p50_ms": round(_percentile(ms, 50), 2), "p90_ms": round(_percentile(ms, 90), 2),
            "p99_ms": round(_percentile(ms, 99), 2), "max_ms": round(max(ms), 2) if ms else float("nan"),
            "mean_ms": round(statistics.fmean(ms), 2) if ms else float("nan")}


# --------------------------------------------------------------------------- clients


class RawHttpClient:
    """One keep-alive HTTP/1.1 connection on asyncio streams: GET with Content-Length bodies only.

    A fraction of httpx's CPU per request, so on a small shared machine the clients leave the
    CPU to the server under test (the clients' CPU is reported as `client_cpu_s`)."""

    def __init__(self, host: str, port: int, key: str, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.auth = f"Authorization: Bearer {key}\r\nHost: {host}:{port}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        return await asyncio.wait_for(self._get(path), self.timeout)

    async def _get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.auth}\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        if "content-length" not in headers:
            raise ConnectionError(f"unsupported response framing: {headers.get('transfer-encoding')}")
        body = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _record(out: dict[str, Any], endpoint: str, ok: bool, why: str, dt: float) -> None:
    """One request's outcome: its latency under its endpoint, or an error counted by kind."""
    if ok:
        out["latency"][endpoint].append(dt)
    else:
        out["errors"][why] += 1
        out["error_latency"].append(dt)


async def _raw_client_loop(url: str, key: str, job_id: str, until: float, timeout: float, out: dict[str, Any]) -> None:
    host, port = url.removeprefix("http://").split(":")
    client = RawHttpClient(host, int(port), key, timeout)
    paths = {"job": f"/v1/jobs/{job_id}", "list": "/v1/jobs"}
    try:
        while time.monotonic() < until:
            for endpoint, path in paths.items():
                t0 = time.perf_counter()
                try:
                    status, body = await client.get(path)
                    ok, why = status < 300, f"http_{status}"
                    if ok:
                        json.loads(body)
                except asyncio.TimeoutError:
                    ok, why = False, "timeout"
                    client.close()
                except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                    ok, why = False, type(e).__name__
                    client.close()
                _record(out, endpoint, ok, why, time.perf_counter() - t0)
    finally:
        client.close()


async def _client_loop(client: httpx.AsyncClient, job_id: str, until: float, out: dict[str, Any]) -> None:
    paths = {"job": f"/v1/jobs/{job_id}", "list": "/v1/jobs"}
    while time.monotonic() < until:
        for endpoint, path in paths.items():
            t0 = time.perf_counter()
            try:
                r = await client.get(path)
                ok, why = r.status_code < 300, f"http_{r.status_code}"
                if ok:
                    r.json()
            except httpx.TimeoutException:
                ok, why = False, "timeout"
            except httpx.HTTPError as e:
                ok, why = False, type(e).__name__
            _record(out, endpoint, ok, why, time.perf_counter() - t0)


async def _run_clients(url: str, key: str, job_id: str, n: int, duration: float, timeout: float,
                       kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {"latency": {"job": [], "list": []}, "errors": Counter(), "error_latency": []}
    if kind == "raw":
        until = time.monotonic() + duration
        await asyncio.gather(*(_raw_client_loop(url, key, job_id, until, timeout, out) for _ in range(n)))
        out["errors"] = dict(out["errors"])
        return out
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=timeout) as client:
        until = time.monotonic() + duration
        await asyncio.gather(*(_client_loop(client, job_id, until, out) for _ in range(n)))
    out["errors"] = dict(out["errors"])
    return out


def _client_process(args: tuple[str, str, str, int, float, float, float, str]) -> dict[str, Any]:
    url, key, job_id, n, duration, timeout, start_at, kind = args
    time.sleep(max(0.0, start_at - time.time()))  # every process starts its window together
    cpu0 = time.process_time()
    out = asyncio.run(_run_clients(url, key, job_id, n, duration, timeout, kind))
    out["cpu_s"] = time.process_time() - cpu0
    return out


# --------------------------------------------------------------------------- the server


def _service_env(home: Path, data: Path, runner: str, layer_s: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPRESSOR_")}
    env.update({
        "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"), "COMPRESSOR_HOME": str(home),
        "COMPRESSOR_DATABASE_URL": f"sqlite:///{data / 'jobs.db'}", "COMPRESSOR_ARTIFACTS_DIR": str(data / "artifacts"),
        "COMPRESSOR_WORK_DIR": str(data / "work"),
        "COMPRESSOR_JOB_RUNNER": "dry-run" if runner == "dry-run" else "pipeline",
        "COMPRESSOR_DRY_RUN_LAYER_S": str(layer_s),
    })
    return env


def _cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip()


def _start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port),
                             "--log-level", "warning"], cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not come up:\n{log.read_text()[-3000:]}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (not its children: the job process is apart)."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _wait_status(url: str, headers: dict[str, str], job_id: str, statuses: tuple[str, ...], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=10).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.5)
    raise RuntimeError(f"job {job_id} not in {statuses} after {timeout}s: {job['status']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--procs", type=int, default=2, help="client processes (the clients are split among them)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout; a timeout is an error")
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw",
                    help="raw: a minimal keep-alive HTTP/1.1 client on asyncio (cheap); httpx: httpx.AsyncClient")
    ap.add_argument("--runner", choices=["dry-run", "real"], default="dry-run")
    ap.add_argument("--extra-jobs", type=int, default=20, help="queued jobs behind the running one")
    ap.add_argument("--home", type=Path, default=Path(os.environ.get("COMPRESSOR_HOME", REPO / ".cache/test-home")))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/api_load.json")
    args = ap.parse_args()

    # the dry-run job has 6 layers: make it outlast the window (plus start-up) by a margin
    layer_s = (args.duration + 30) / 6
    with tempfile.TemporaryDirectory(prefix="api-load-") as tmp:
        data = Path(tmp)
        env = _service_env(args.home.resolve(), data, args.runner, layer_s)
        key = _cli(env, "keys", "create", "--name", "api-load")
        port = _free_port()
        url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
        server = _start_server(env, port, data / "serve.log")
        try:
            recipe = RTN if args.runner == "real" else {"name": "api-load", "eval": {"max_tokens": 1024, "kl": False}}
            spec = {"model": args.model, "recipe": recipe}
            r = httpx.post(f"{url}/v1/jobs", json=spec, headers=headers, timeout=30)
            r.raise_for_status()
            job_id = r.json()["id"]
            _wait_status(url, headers, job_id, ("running",), 120)
            extra = [httpx.post(f"{url}/v1/jobs", json=spec, headers=headers, timeout=30).json()["id"]
                     for _ in range(args.extra_jobs)]
            events_before = len(httpx.get(f"{url}/v1/jobs/{job_id}/events", params={"limit": 1000}, headers=headers).json()["data"])
            load_before = os.getloadavg()
            server_cpu_before = _cpu_seconds(server.pid)

            per_proc = [args.clients // args.procs + (i < args.clients % args.procs) for i in range(args.procs)]
            start_at = time.time() + 1.0
            t0 = time.monotonic()
            with multiprocessing.get_context("spawn").Pool(args.procs) as pool:
                parts = pool.map(_client_process, [(url, key, job_id, n, args.duration, args.timeout, start_at,
                                                    args.client) for n in per_proc])
            wall = time.monotonic() - t0 - 1.0
            load_after = os.getloadavg()
            server_cpu = _cpu_seconds(server.pid) - server_cpu_before

            job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=30).json()
            events_after = len(httpx.get(f"{url}/v1/jobs/{job_id}/events", params={"limit": 1000}, headers=headers).json()["data"])
            for other in extra:
                httpx.post(f"{url}/v1/jobs/{other}/cancel", headers=headers, timeout=30)
            if args.runner == "dry-run" or job["status"] == "running":
                httpx.post(f"{url}/v1/jobs/{job_id}/cancel", headers=headers, timeout=30)
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
            log_tail = (data / "serve.log").read_text(errors="replace")[-2000:]

    latency = {ep: [x for p in parts for x in p["latency"][ep]] for ep in ("job", "list")}
    both = latency["job"] + latency["list"]
    errors: Counter = Counter()
    for p in parts:
        errors.update(p["errors"])
    n_err = sum(errors.values())
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
        "clients": args.clients, "client_processes": args.procs, "client": args.client, "duration_s": args.duration,
        "wall_s": round(wall, 2), "runner": args.runner,
        "requests": len(both) + n_err, "ok": len(both), "errors": n_err, "errors_by_kind": dict(errors),
        "error_rate": round(n_err / max(1, len(both) + n_err), 5),
        "throughput_rps": round((len(both) + n_err) / wall, 1),
        **_summary(both),
        "by_endpoint": {"GET /v1/jobs/{id}": {"requests": len(latency["job"]), **_summary(latency["job"])},
                        "GET /v1/jobs": {"requests": len(latency["list"]), **_summary(latency["list"])}},
        "job": {"status_after_window": job["status"], "phase": job["phase"], "progress": job["progress"],
                "events_during_window": events_after - events_before, "extra_queued_jobs": len(extra)},
        "server": "compressor serve: one uvicorn process, local executor (1 slot), SQLite (WAL)",
        # CPU the API process itself spent in the window: a cost per request that the other
        # processes on a shared machine distort less than the latencies
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, len(both) + n_err), 2),
        "client_cpu_s": round(sum(p["cpu_s"] for p in parts), 2),
        "server_log_tail": log_tail if n_err else "",
        "machine": {"cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
                    "python": platform.python_version(), "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("requests", "errors", "throughput_rps", "p50_ms", "p99_ms")}))


if __name__ == "__main__":
    main()
