"""API load while a job runs: an open loop of dashboards polling once a second, and a closed loop.

Starts `compressor serve` (API + local executor, embedded defaults: SQLite, one uvicorn
process) on a free port with its service data in a temporary folder and the model store at
`--home`, submits one job that runs through every window (plus `--extra-jobs` queued behind
it, so `GET /v1/jobs` lists a realistic page), then measures one window per mode:

- open loop (`--mode open`): `--clients` dashboards, each polling every 1/`--rate` s on its own
  clock whether or not its last answer is back: `GET /v1/jobs/{id}` with `If-None-Match` (as a
  browser revalidates a response with an ETag), every `--list-every`th poll `GET /v1/jobs`.
  Latency counts from the scheduled send time.
- closed loop (`--mode closed`): `--clients` clients, each `GET /v1/jobs/{id}` then `GET /v1/jobs`
  back to back, no think time: the requests/s one API process serves. `--before FILE` keeps the
  same measurement of an older commit beside it.

    python bench/api_load.py [--mode both|open|closed] [--clients 200] [--duration 30] [--rate 1]
                             [--procs 2] [--runner dry-run|real] [--before FILE] [--out bench/results/api_load.json]

The job is the torch-free dry-run runner by default (`--runner real` runs a W4A16 RTN job of the
model instead), so the numbers measure the API and its database, not the compression. The
clients are asyncio tasks on a minimal HTTP/1.1 client, spread over `--procs` processes.
Errors: any answer other than 2xx/304, timeout (`--timeout`) or transport failure. Only
loopback addresses; every loop ends with its window. The server, its job process and the
clients share this machine's CPUs: the CPU model, its SIMD flags, the CPU count and the load
average are recorded, and the HTTP parser and event loop the server ran with (httptools and
uvloop come with the `service` extra; `API_LOAD_SERVER_PATH=DIR` adds DIR to the server's
Python path, e.g. their wheels unpacked, where the environment at hand lacks them)."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
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
MAX_CONNECTIONS_PER_CLIENT = 8
START_DELAY_S = 3.0
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
        self.etag: str | None = None  # of the last answer
        self.busy = False

    async def get(self, path: str, if_none_match: str | None = None) -> tuple[int, bytes]:
        return await asyncio.wait_for(self._get(path, if_none_match), self.timeout)

    async def _get(self, path: str, if_none_match: str | None) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        extra = f"If-None-Match: {if_none_match}\r\n" if if_none_match else ""
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.auth}{extra}\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        self.etag = headers.get("etag")
        if status == 304:
            body = b""  # no body, by definition
        elif "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        else:
            raise ConnectionError(f"unsupported response framing: {headers.get('transfer-encoding')}")
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


async def _open_loop_client(url: str, key: str, job_id: str, until: float, rate: float, timeout: float,
                            list_every: int, etag: bool, rng: random.Random, out: dict[str, Any]) -> None:
    """One dashboard: a request every 1/rate s on its own schedule, whether or not the last one is back.

    Latency counts from the scheduled send time, so a slow server cannot hide its queue by
    slowing the clients down (no coordinated omission). A request that finds every one of this
    client's connections busy opens another (at most MAX_CONNECTIONS_PER_CLIENT)."""
    host, port = url.removeprefix("http://").split(":")
    conns: list[RawHttpClient] = []
    last_etag: list[str | None] = [None]
    period = 1.0 / rate
    pending: set[asyncio.Task] = set()

    async def one(conn: RawHttpClient, endpoint: str, path: str, scheduled: float) -> None:
        conn.busy = True
        try:
            status, body = await conn.get(path, last_etag[0] if endpoint == "job" and etag else None)
            ok, why = status < 300 or status == 304, f"http_{status}"
            out["status_counts"][str(status)] += 1
            if ok and body:
                json.loads(body)
            if endpoint == "job" and ok:
                last_etag[0] = conn.etag or last_etag[0]
        except asyncio.TimeoutError:
            ok, why = False, "timeout"
            conn.close()
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            ok, why = False, type(e).__name__
            conn.close()
        finally:
            conn.busy = False
        _record(out, endpoint, ok, why, time.monotonic() - scheduled)

    next_at = time.monotonic() + rng.uniform(0, period)  # clients start out of phase, as real ones do
    list_tick = rng.randrange(list_every) if list_every else -1  # … and open the jobs page out of phase too
    tick = 0
    while next_at < until:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        endpoint = "list" if list_every and tick % list_every == list_tick else "job"
        path = "/v1/jobs" if endpoint == "list" else f"/v1/jobs/{job_id}"
        conn = next((c for c in conns if not c.busy), None)
        if conn is None and len(conns) < MAX_CONNECTIONS_PER_CLIENT:
            conn = RawHttpClient(host, int(port), key, timeout)
            conns.append(conn)
        if conn is None:
            _record(out, endpoint, False, "client_backlog", 0.0)
        else:
            task = asyncio.create_task(one(conn, endpoint, path, next_at))
            pending.add(task)
            task.add_done_callback(pending.discard)
        tick += 1
        next_at += period
    if pending:
        await asyncio.gather(*pending)
    for c in conns:
        c.close()


async def _run_open_loop(url: str, key: str, job_id: str, n: int, duration: float, timeout: float, rate: float,
                         list_every: int, etag: bool, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"latency": {"job": [], "list": []}, "errors": Counter(), "error_latency": [],
                           "status_counts": Counter()}
    rng = random.Random(seed)
    until = time.monotonic() + duration
    await asyncio.gather(*(_open_loop_client(url, key, job_id, until, rate, timeout, list_every, etag, rng, out)
                           for _ in range(n)))
    out["errors"], out["status_counts"] = dict(out["errors"]), dict(out["status_counts"])
    return out


def _client_process(args: tuple) -> dict[str, Any]:
    url, key, job_id, n, duration, timeout, start_at, kind, open_loop = args
    time.sleep(max(0.0, start_at - time.time()))  # every process starts its window together
    cpu0 = time.process_time()
    if open_loop is None:
        out = asyncio.run(_run_clients(url, key, job_id, n, duration, timeout, kind))
    else:
        out = asyncio.run(_run_open_loop(url, key, job_id, n, duration, timeout, **open_loop))
    out["cpu_s"] = time.process_time() - cpu0
    return out


# --------------------------------------------------------------------------- the server


def _service_env(home: Path, data: Path, runner: str, layer_s: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPRESSOR_")}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("API_LOAD_SERVER_PATH")])]),
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"), "COMPRESSOR_HOME": str(home),
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


def _machine() -> dict[str, Any]:
    """CPU model, SIMD flags and threads of this machine (the numbers mean little without them)."""
    model, flags = platform.processor() or "unknown", []
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), model)
        flags = next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), [])
    except OSError:
        pass
    per_core = None
    try:
        info = dict(ln.split(":", 1) for ln in Path("/proc/cpuinfo").read_text().splitlines()[:30] if ":" in ln)
        per_core = int(info["siblings\t"].strip()) // int(info["cpu cores\t"].strip())
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        pass
    simd = [f for f in flags if f.startswith(("sse", "ssse", "avx", "amx", "fma", "f16c", "bmi", "sha_ni", "aes", "vnni"))]
    return {"cpu_model": model, "isa_flags": simd, "logical_cpus": os.cpu_count(), "threads_per_core": per_core,
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}


def _window(args: argparse.Namespace, url: str, key: str, job_id: str, server_pid: int,
            open_loop: dict[str, Any] | None) -> dict[str, Any]:
    """One measurement window: the clients, split over processes, against the running server."""
    procs = args.procs if open_loop is None else args.open_procs
    per_proc = [args.clients // procs + (i < args.clients % procs) for i in range(procs)]
    load_before, cpu_before = os.getloadavg(), _cpu_seconds(server_pid)
    threads = _threads(server_pid)
    start_at = time.time() + START_DELAY_S  # time for the client processes to spawn
    t0 = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        jobs = [(url, key, job_id, n, args.duration, args.timeout, start_at, args.client,
                 None if open_loop is None else {**open_loop, "seed": i}) for i, n in enumerate(per_proc)]
        parts = pool.map(_client_process, jobs)
    wall = time.monotonic() - t0 - START_DELAY_S
    server_cpu = _cpu_seconds(server_pid) - cpu_before
    latency = {ep: [x for p in parts for x in p["latency"][ep]] for ep in ("job", "list")}
    both = latency["job"] + latency["list"]
    errors: Counter = Counter()
    statuses: Counter = Counter()
    for p in parts:
        errors.update(p["errors"])
        statuses.update(p.get("status_counts", {}))
    n_err = sum(errors.values())
    total = len(both) + n_err
    result = {
        "clients": args.clients, "client_processes": procs, "duration_s": args.duration, "wall_s": round(wall, 2),
        "requests": total, "ok": len(both), "errors": n_err, "errors_by_kind": dict(errors),
        "error_rate": round(n_err / max(1, total), 5), "throughput_rps": round(total / wall, 1),
        **_summary(both),
        "by_endpoint": {"GET /v1/jobs/{id}": {"requests": len(latency["job"]), **_summary(latency["job"])},
                        "GET /v1/jobs": {"requests": len(latency["list"]), **_summary(latency["list"])}},
        # CPU the API process itself spent in the window: a cost per request that the other
        # processes on a shared machine distort less than the latencies
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, total), 2),
        "server_threads": threads,
        "client_cpu_s": round(sum(p["cpu_s"] for p in parts), 2),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
    }
    if open_loop is not None:
        result["status_counts"] = dict(statuses)
    return result


def _threads(pid: int) -> int:
    import psutil

    return psutil.Process(pid).num_threads()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["open", "closed", "both"], default="both",
                    help="open: each client polls at --rate on its own clock; closed: back to back, no think time")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per window (one per mode)")
    ap.add_argument("--rate", type=float, default=1.0, help="open loop: requests per second per client")
    ap.add_argument("--list-every", type=int, default=10,
                    help="open loop: every Nth poll of a client is GET /v1/jobs (the jobs page), the rest GET /v1/jobs/{id}")
    ap.add_argument("--no-etag", dest="etag", action="store_false",
                    help="open loop: do not send If-None-Match (a browser does, for a response with an ETag)")
    ap.add_argument("--procs", type=int, default=2, help="closed loop: client processes (the clients are split among them)")
    ap.add_argument("--open-procs", type=int, default=1,
                    help="open loop: client processes (one is plenty for 200 req/s, and leaves the CPUs to the server)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout; a timeout is an error")
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw",
                    help="closed loop: raw, a minimal keep-alive HTTP/1.1 client on asyncio (cheap); httpx: httpx.AsyncClient")
    ap.add_argument("--runner", choices=["dry-run", "real"], default="dry-run")
    ap.add_argument("--extra-jobs", type=int, default=20, help="queued jobs behind the running one")
    ap.add_argument("--home", type=Path, default=Path(os.environ.get("COMPRESSOR_HOME", REPO / ".cache/test-home")))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=FILE",
                    help="keep another closed-loop result beside this run's, e.g. before=old.json (this script's "
                         "output on an older commit, or this commit in another environment); repeatable")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/api_load.json")
    args = ap.parse_args()
    modes = ["open", "closed"] if args.mode == "both" else [args.mode]

    # the dry-run job has 6 layers: make it outlast every window (plus start-up) by a margin
    layer_s = (len(modes) * (args.duration + 5) + 30) / 6
    windows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="api-load-") as tmp:
        data = Path(tmp)
        env = _service_env(args.home.resolve(), data, args.runner, layer_s)
        key = _cli(env, "keys", "create", "--name", "api-load")
        port = _free_port()
        url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
        server = _start_server(env, port, data / "serve.log")
        server_http = _http_impl(env)
        try:
            recipe = RTN if args.runner == "real" else {"name": "api-load", "eval": {"max_tokens": 1024, "kl": False}}
            spec = {"model": args.model, "recipe": recipe}
            r = httpx.post(f"{url}/v1/jobs", json=spec, headers=headers, timeout=30)
            r.raise_for_status()
            job_id = r.json()["id"]
            _wait_status(url, headers, job_id, ("running",), 120)
            extra = [httpx.post(f"{url}/v1/jobs", json=spec, headers=headers, timeout=30).json()["id"]
                     for _ in range(args.extra_jobs)]
            for mode in modes:
                events_before = len(httpx.get(f"{url}/v1/jobs/{job_id}/events", params={"limit": 1000},
                                              headers=headers).json()["data"])
                open_loop = ({"rate": args.rate, "list_every": args.list_every, "etag": args.etag}
                             if mode == "open" else None)
                window = _window(args, url, key, job_id, server.pid, open_loop)
                job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=30).json()
                events_after = len(httpx.get(f"{url}/v1/jobs/{job_id}/events", params={"limit": 1000},
                                             headers=headers).json()["data"])
                window["server_http"] = server_http
                window["job"] = {"status_after_window": job["status"], "phase": job["phase"],
                                 "progress": job["progress"], "events_during_window": events_after - events_before,
                                 "extra_queued_jobs": len(extra)}
                windows[mode] = window
            for other in extra:
                httpx.post(f"{url}/v1/jobs/{other}/cancel", headers=headers, timeout=30)
            httpx.post(f"{url}/v1/jobs/{job_id}/cancel", headers=headers, timeout=30)
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
            log_tail = (data / "serve.log").read_text(errors="replace")[-2000:]

    result: dict[str, Any] = {
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
        "runner": args.runner,
        "server": f"compressor serve: one uvicorn process ({server_http}), local executor (1 slot), SQLite (WAL); "
                  "a job running through every window",
        "machine": _machine(),
    }
    if "open" in windows:
        w = windows["open"]
        result["open_loop"] = {
            "what": f"{args.clients} dashboards, each polling once every {1 / args.rate:g} s on its own clock "
                    f"(GET /v1/jobs/{{id}}{' with If-None-Match' if args.etag else ''}; every {args.list_every}th "
                    "poll GET /v1/jobs); latency from the scheduled send time",
            "offered_rps": round(args.clients * args.rate, 1), **w,
            "target": "p99 < 100 ms and 0 errors", "meets_target": w["p99_ms"] < 100 and w["errors"] == 0,
        }
    if "closed" in windows:
        closed: dict[str, Any] = {
            "what": f"{args.clients} clients, each GET /v1/jobs/{{id}} then GET /v1/jobs back to back (no think time); "
                    "one API process, so throughput_rps is requests/s per API process",
            "after": windows["closed"]}
        for item in args.compare:
            name, _, path = item.partition("=")
            other = json.loads(Path(path).read_text())
            closed[name] = other.get("closed_loop", {}).get("after", other)  # a whole result file, or a window
        result["closed_loop"] = closed
    errors = sum(w["errors"] for w in windows.values())
    result["server_log_tail"] = log_tail if errors else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({mode: {k: w[k] for k in ("requests", "errors", "throughput_rps", "p50_ms", "p99_ms")}
                      for mode, w in windows.items()}))


def _http_impl(env: dict[str, str]) -> str:
    """The HTTP parser and event loop uvicorn picks in the server's environment (httptools and uvloop when installed)."""
    code = ("import importlib.util as u; print('+'.join(['httptools' if u.find_spec('httptools') else 'h11', "
            "'uvloop' if u.find_spec('uvloop') else 'asyncio']))")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60).stdout.strip()


if __name__ == "__main__":
    main()
