"""The `compressor` console script: the library's commands plus the service's.

`build_parser()` starts from `compressor.cli.build_parser()` (run, models, recipes, generate)
and adds serve, keys, worker (server side) and submit, submit-import, status, wait, download,
cancel (client side). Each command sets `func`, which takes the parsed Namespace and returns an exit
code. Nothing here imports torch, and web/queue packages are imported only inside the
commands that need them. `python -m api.cli …` is the same command.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from compressor.cli import build_parser as library_parser
from compressor.cli import main as library_main

DEFAULT_URL = "http://127.0.0.1:8000"


# --------------------------------------------------------------------------- server side


def _settings(args: argparse.Namespace, **overrides: Any):  # noqa: ANN202
    from service.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if getattr(args, "database_url", None):
        values["database_url"] = args.database_url
    return Settings(**values)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app

    settings = _settings(args, executor=args.executor, local_concurrency=args.concurrency,
                         embedded_workers=False if args.no_workers else None)
    print(f"compressor API on http://{args.host}:{args.port} (executor: {settings.executor}; "
          f"database: {settings.database_url.split('@')[-1]}); dashboard at /dashboard/", file=sys.stderr)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from service.db import keys
    from service.db.database import Database

    db = Database(_settings(args).database_url)
    db.migrate()
    with db.transaction() as s:
        row, plaintext = keys.create_key(s, args.name)
    print(f"created API key {row.id} ({args.name}); it is shown once, store it now:", file=sys.stderr)
    print(plaintext)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from service.db import keys
    from service.db.database import Database

    db = Database(_settings(args).database_url)
    db.migrate()
    with db.transaction() as s:
        for row in keys.list_keys(s):
            print(f"{row.id}\t{row.name}\t{'revoked' if row.revoked_at else 'active'}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from service.db import keys
    from service.db.database import Database

    db = Database(_settings(args).database_url)
    with db.transaction() as s:
        ok = keys.revoke_key(s, args.key_id)
    print(f"revoked {args.key_id}" if ok else f"no active key {args.key_id}", file=sys.stderr)
    return 0 if ok else 1


def cmd_worker(args: argparse.Namespace) -> int:
    if args.local:
        return _local_worker(args)
    if args.queue:
        os.environ["COMPRESSOR_CELERY_QUEUE"] = args.queue
    if args.broker_url:
        os.environ["COMPRESSOR_BROKER_URL"] = args.broker_url
    if args.database_url:
        os.environ["COMPRESSOR_DATABASE_URL"] = args.database_url
    from workers.celery_app import app, settings

    app.worker_main(["worker", "--pool", "solo", "--concurrency", "1", "--queues", settings.celery_queue,
                     "--loglevel", args.log_level.upper(), "--hostname", args.hostname or "compressor@%h",
                     "--without-gossip", "--without-mingle"])
    return 0


def _local_worker(args: argparse.Namespace) -> int:
    from service.db.database import Database
    from workers.local import LocalExecutor

    settings = _settings(args, local_concurrency=args.concurrency)
    db = Database(settings.database_url)
    db.migrate()
    executor = LocalExecutor(settings, db)
    stopping = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stopping.set()
        threading.Thread(target=executor.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"local worker: {settings.local_concurrency} slot(s) on {settings.database_url.split('@')[-1]}", file=sys.stderr)
    executor.run_forever()
    return 0


# --------------------------------------------------------------------------- client side


def _client(args: argparse.Namespace):  # noqa: ANN202
    from api.client import ServiceClient

    key = args.api_key or os.environ.get("COMPRESSOR_API_KEY")
    if not key:
        raise SystemExit("an API key is needed: --api-key or COMPRESSOR_API_KEY (create one with `compressor keys create`)")
    return ServiceClient(args.url or os.environ.get("COMPRESSOR_URL", DEFAULT_URL), key)


def _assignment(text: str) -> tuple[str, Any]:
    """`key.path=value` → (path, value read as YAML: 1024, false, [wiki], 'text')."""
    import yaml

    path, sep, raw = text.partition("=")
    if not sep or not path:
        raise SystemExit(f"--set wants key.path=value, got {text!r}")
    return path, yaml.safe_load(raw)


def _set_dotted(data: dict[str, Any], assignment: str) -> None:
    path, value = _assignment(assignment)
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SystemExit(f"--set {path}: {part} is not a mapping")
    node[leaf] = value


def _recipe_body(recipe: str, assignments: list[str]) -> Any:
    """A ready-made recipe goes to the API by name (`{"base": name, "set": {…}}` with overrides), as a
    pipeline sends it, and the API checks the overrides; a recipe file is read here and sent in full."""
    from compressor.spec import load_recipe

    if not Path(recipe).exists():
        return {"base": recipe, "set": dict(_assignment(a) for a in assignments)} if assignments else recipe
    data = load_recipe(recipe).model_dump(mode="json", exclude_none=True)
    for assignment in assignments:
        _set_dotted(data, assignment)
    return data


def _print_job(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(job, indent=2))
        return
    progress = job.get("progress") or {}
    frac = f" {progress['fraction'] * 100:.0f}%" if progress.get("fraction") is not None else ""
    line = f"{job['id']}  {job['status']}  {job.get('phase') or ''}{frac}"
    if job.get("error"):
        line += f"  error: {job['error']['type']}: {job['error']['message']}"
    print(line)


def _run_client(func):  # noqa: ANN001, ANN202
    def wrapped(args: argparse.Namespace) -> int:
        from api.client import ApiError

        try:
            return func(args)
        except ApiError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except TimeoutError as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
    return wrapped


@_run_client
def cmd_submit(args: argparse.Namespace) -> int:
    spec = {"model": args.model, "recipe": _recipe_body(args.recipe, args.set or [])}
    client = _client(args)
    job = client.submit(spec, idempotency_key=args.idempotency_key)
    _print_job(job, args.json)
    if args.wait:
        job = client.wait(job["id"], timeout=args.timeout, on_change=None if args.json else lambda j: _print_job(j, False))
        return 0 if job["status"] == "succeeded" else 1
    return 0


@_run_client
def cmd_submit_import(args: argparse.Namespace) -> int:
    """Import a model into a running service's store (a job; the source must be in its allow-list)."""
    client = _client(args)
    job = client.import_model(args.source, args.name, args.revision, idempotency_key=args.idempotency_key)
    _print_job(job, args.json)
    if args.wait:
        job = client.wait(job["id"], timeout=args.timeout, on_change=None if args.json else lambda j: _print_job(j, False))
        return 0 if job["status"] == "succeeded" else 1
    return 0


@_run_client
def cmd_status(args: argparse.Namespace) -> int:
    _print_job(_client(args).job(args.job_id), args.json)
    return 0


@_run_client
def cmd_wait(args: argparse.Namespace) -> int:
    job = _client(args).wait(args.job_id, timeout=args.timeout, interval=args.interval,
                             on_change=None if args.json else lambda j: _print_job(j, False))
    if args.json:
        _print_job(job, True)
    return 0 if job["status"] == "succeeded" else 1


@_run_client
def cmd_download(args: argparse.Namespace) -> int:
    out = Path(args.out or args.job_id)
    for path in _client(args).download(args.job_id, out, names=args.name or None):
        print(path)
    return 0


@_run_client
def cmd_cancel(args: argparse.Namespace) -> int:
    _print_job(_client(args).cancel(args.job_id), args.json)
    return 0


# --------------------------------------------------------------------------- parsers


def add_service_commands(subparsers: argparse._SubParsersAction) -> None:
    def with_db(p: argparse.ArgumentParser) -> None:
        p.add_argument("--database-url",
                       help="SQLAlchemy URL (default: COMPRESSOR_DATABASE_URL, else SQLite under COMPRESSOR_HOME)")

    def with_client(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help=f"API base URL (default: COMPRESSOR_URL, else {DEFAULT_URL})")
        p.add_argument("--api-key", help="API key (default: COMPRESSOR_API_KEY)")
        p.add_argument("--json", action="store_true", help="print the job as JSON")

    p = subparsers.add_parser("serve", help="run the API and the local executor (embedded defaults)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--executor", choices=["local", "celery"], help="default: COMPRESSOR_EXECUTOR, else local")
    p.add_argument("--concurrency", type=int, help="jobs the local executor runs at once (default 1)")
    p.add_argument("--no-workers", action="store_true", help="do not run local workers in this process")
    p.add_argument("--log-level", default="info")
    with_db(p)
    p.set_defaults(func=cmd_serve)

    keys = subparsers.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser("create", help="create an API key and print it (once)")
    p.add_argument("--name", default="default", help="who the key is for")
    with_db(p)
    p.set_defaults(func=cmd_keys_create)
    p = keys.add_parser("list", help="list API keys (ids and names, never the keys)")
    with_db(p)
    p.set_defaults(func=cmd_keys_list)
    p = keys.add_parser("revoke", help="revoke an API key by id")
    p.add_argument("key_id")
    with_db(p)
    p.set_defaults(func=cmd_keys_revoke)

    p = subparsers.add_parser("worker", help="run a Celery worker (one job at a time), or a local worker with --local")
    p.add_argument("--local", action="store_true", help="claim jobs from the database directly (local executor)")
    p.add_argument("--concurrency", type=int, help="--local only: jobs at once")
    p.add_argument("--queue", help="Celery queue (default: COMPRESSOR_CELERY_QUEUE, else compressor)")
    p.add_argument("--broker-url", help="default: COMPRESSOR_BROKER_URL, else redis://127.0.0.1:6379/0")
    p.add_argument("--hostname", help="Celery node name")
    p.add_argument("--log-level", default="info")
    with_db(p)
    p.set_defaults(func=cmd_worker)

    p = subparsers.add_parser("submit", help="submit a job to a running service")
    p.add_argument("--model", required=True, help="a model name in the service's store")
    p.add_argument("--recipe", required=True, help="a ready-made recipe name (w4a16-rtn) or a YAML/JSON file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field, e.g. eval.max_tokens=1024")
    p.add_argument("--idempotency-key", help="retrying with the same key returns the same job")
    p.add_argument("--wait", action="store_true", help="wait until the job ends; exit 0 only if it succeeded")
    p.add_argument("--timeout", type=float, default=24 * 3600)
    with_client(p)
    p.set_defaults(func=cmd_submit)

    p = subparsers.add_parser("submit-import", help="import a model into a running service's store (as a job)")
    p.add_argument("source", help="a folder or .gguf under an allowed root, hf://org/model, s3://bucket/prefix")
    p.add_argument("--name", help="store name (default: from the source)")
    p.add_argument("--revision", help="hf:// only")
    p.add_argument("--idempotency-key", help="retrying with the same key returns the same job")
    p.add_argument("--wait", action="store_true", help="wait until the import ends; exit 0 only if it succeeded")
    p.add_argument("--timeout", type=float, default=24 * 3600)
    with_client(p)
    p.set_defaults(func=cmd_submit_import)

    for name, func, text in (("status", cmd_status, "show a job"), ("cancel", cmd_cancel, "cancel a job")):
        p = subparsers.add_parser(name, help=text)
        p.add_argument("job_id")
        with_client(p)
        p.set_defaults(func=func)

    p = subparsers.add_parser("wait", help="wait until a job ends; exit 0 only if it succeeded")
    p.add_argument("job_id")
    p.add_argument("--timeout", type=float, default=24 * 3600)
    p.add_argument("--interval", type=float, default=1.0)
    with_client(p)
    p.set_defaults(func=cmd_wait)

    p = subparsers.add_parser("download", help="download a job's artifacts, checking each SHA-256")
    p.add_argument("job_id")
    p.add_argument("--out", help="folder to write into (default: ./<job id>)")
    p.add_argument("--name", action="append", help="only this artifact (repeatable)")
    with_client(p)
    p.set_defaults(func=cmd_download)


def build_parser() -> argparse.ArgumentParser:
    parser = library_parser()
    parser.description = __doc__.split("\n\n")[0]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    add_service_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return library_main(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
