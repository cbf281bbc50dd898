"""A local HTTP server that speaks as much of the Hugging Face hub's protocol as huggingface_hub
needs to list a repo and download its files: `GET /api/models/{repo}[/revision/{rev}]` (with
file sizes and LFS sha256s) and `HEAD`/`GET /{repo}/resolve/{commit}/{file}` (commit, ETag, size).

It serves folders from disk: `HubServer({"org/model": folder})`. The real hub is not reachable
from the tests; this lets `hf://` imports run through huggingface_hub's own client code.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self, repos: dict[str, Path], branches: tuple[str, ...] = ("main",),
                 gates: dict[str, threading.Event] | None = None):
        """`gates`: file name → event; a GET of that file waits until the event is set (a slow download)."""
        self.repos, self.branches, self.gates = repos, branches, gates or {}
        self.requests: list[str] = []
        handler = type("Handler", (_Handler,), {"hub": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def info(self, repo: str) -> dict:
        folder = self.repos[repo]
        siblings = []
        for p in sorted(folder.iterdir()):
            data = p.read_bytes()
            entry = {"rfilename": p.name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
            if p.suffix in (".safetensors", ".bin"):
                entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(entry)
        return {"_id": repo, "id": repo, "modelId": repo, "sha": COMMIT, "private": False, "gated": False,
                "disabled": False, "tags": [], "siblings": siblings}


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer

    def log_message(self, *_args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _not_found(self, kind: str, head: bool) -> None:
        self._send(404, json.dumps({"error": f"{kind} not found"}).encode(),
                   {"Content-Type": "application/json", "X-Error-Code": kind}, head)

    def _route(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append(f"{self.command} {path}")
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            repo = "/".join(parts[2:4])
            if repo not in self.hub.repos:
                return self._not_found("RepoNotFound", head)
            if len(parts) > 4 and (parts[4] != "revision" or "/".join(parts[5:]) not in (*self.hub.branches, COMMIT)):
                return self._not_found("RevisionNotFound", head)
            return self._send(200, json.dumps(self.hub.info(repo)).encode(), {"Content-Type": "application/json"}, head)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            folder = self.hub.repos.get(repo)
            if folder is None:
                return self._not_found("RepoNotFound", head)
            if revision not in (*self.hub.branches, COMMIT):
                return self._not_found("RevisionNotFound", head)
            file = folder / name
            if "/" in name or not file.is_file():
                return self._not_found("EntryNotFound", head)
            if not head and name in self.hub.gates:
                self.hub.gates[name].wait(120)
            data = file.read_bytes()
            etag = hashlib.sha256(data).hexdigest() if file.suffix == ".safetensors" else hashlib.sha1(data).hexdigest()
            return self._send(200, data, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"',
                                          "Content-Type": "application/octet-stream"}, head)
        return self._not_found("Unknown", head)

    def do_GET(self) -> None:  # noqa: N802
        self._route(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)
