"""A local, stdlib-only stand-in for the part of the Hugging Face Hub API that uploads use.

Enough for ``create_repo`` + ``upload_folder`` (and so ``Trainer.push_to_hub``) from huggingface_hub 2.x:

* ``POST /api/repos/create`` -- creates (or finds) a repo; answers ``{"url": ..., "name": ...}``
* ``POST /api/validate-yaml`` -- always valid
* ``POST /api/{type}s/{repo}/preupload/{rev}`` -- every file ``uploadMode: "regular"``, so contents arrive inline
* ``POST /api/{type}s/{repo}/commit/{rev}`` -- NDJSON; ``file`` lines carry base64 content, which is recorded
* ``GET /api/{type}s/{repo}[/revision/{rev}]`` -- repo info (sha, siblings)
* ``GET /api/whoami-v2`` -- a fake user ``tester``
* anything else (e.g. ``GET /api/agent-harnesses``) -- 404 with a JSON error

Received files are kept in memory per repo (``server.repos[repo_id][path] = bytes``) and every request is logged in
``server.requests`` as ``(method, path, authorization header or None)``. The server binds 127.0.0.1 on a free port.
Run it standalone (``python tests/hub_server.py [--dump DIR]``) to push to it by hand.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

__all__ = ["LocalHub"]

USER = "tester"
_REPO_TYPES = "models|datasets|spaces"
_UPLOAD = re.compile(rf"^/api/({_REPO_TYPES})/(.+)/(preupload|commit)/([^/]+)$")
_INFO = re.compile(rf"^/api/({_REPO_TYPES})/(.+?)(?:/revision/([^/]+))?$")


class LocalHub:
    """``with LocalHub() as hub: ...`` or ``hub.start()`` / ``hub.stop()``; ``hub.url`` is the endpoint."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, list[dict]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> "LocalHub":
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- state ----------------------------------------------------------------------------------------------------
    def create(self, repo_id: str) -> bool:
        with self.lock:
            if repo_id in self.repos:
                return False
            self.repos[repo_id] = {}
            self.commits[repo_id] = []
            return True

    def sha(self, repo_id: str) -> str:
        with self.lock:
            commits = self.commits.get(repo_id) or []
            return commits[-1]["oid"] if commits else "0" * 40


class _Handler(BaseHTTPRequestHandler):
    server_hub: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    # -- helpers --------------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            return self.rfile.read(n)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send(self, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:
            self.send_header("X-Error-Message", str(payload.get("error", "")) if isinstance(payload, dict) else "")
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> str:
        path = unquote(urlsplit(self.path).path)
        with self.server_hub.lock:
            self.server_hub.requests.append((self.command, path, self.headers.get("Authorization")))
        return path

    def _not_found(self, path: str) -> None:
        with self.server_hub.lock:
            self.server_hub.unhandled.append((self.command, path))
        self._send(404, {"error": f"local hub: {self.command} {path} is not implemented"})

    @staticmethod
    def _repo_id(kind: str, name: str) -> str:
        return name if kind == "models" else f"{kind}/{name}"

    # -- routes ---------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        path = self._record()
        hub = self.server_hub
        if path == "/api/whoami-v2":
            return self._send(200, {"type": "user", "name": USER, "fullname": USER, "orgs": [],
                                    "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
        m = _INFO.match(path)
        if m:
            repo = self._repo_id(m.group(1), m.group(2))
            if repo not in hub.repos:
                return self._send(404, {"error": f"Repository {repo} not found"})
            with hub.lock:
                siblings = [{"rfilename": p} for p in sorted(hub.repos[repo])]
            return self._send(200, {"id": m.group(2), "modelId": m.group(2), "sha": hub.sha(repo), "private": False,
                                    "siblings": siblings, "tags": [], "downloads": 0, "likes": 0})
        return self._not_found(path)

    def do_HEAD(self) -> None:  # noqa: N802
        path = self._record()
        self._not_found(path)

    def do_POST(self) -> None:  # noqa: N802
        path = self._record()
        body = self._body()
        hub = self.server_hub
        if path == "/api/repos/create":
            req = json.loads(body or b"{}")
            name, org = req.get("name"), req.get("organization") or USER
            kind = req.get("type") or "model"
            repo = f"{org}/{name}"
            key = repo if kind == "model" else f"{kind}s/{repo}"
            created = hub.create(key)
            prefix = "" if kind == "model" else f"{kind}s/"
            if not created:
                return self._send(409, {"error": "You already created this model repo", "url": f"{hub.url}/{repo}"})
            return self._send(200, {"url": f"{hub.url}/{prefix}{repo}", "name": repo, "id": repo})
        if path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        m = _UPLOAD.match(path)
        if m:
            kind, name, action = m.group(1), m.group(2), m.group(3)
            repo = self._repo_id(kind, name)
            if repo not in hub.repos:
                return self._send(404, {"error": f"Repository {repo} not found"})
            if action == "preupload":
                req = json.loads(body or b"{}")
                files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                         for f in req.get("files", [])]
                return self._send(200, {"files": files, "commitOid": hub.sha(repo)})
            received: dict[str, bytes] = {}
            deleted: list[str] = []
            header: dict = {}
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item.get("key"), item.get("value", {})
                if key == "header":
                    header = value
                elif key == "file":
                    content = value.get("content", "")
                    received[value["path"]] = base64.b64decode(content) if value.get("encoding") == "base64" \
                        else content.encode()
                elif key in ("deletedFile", "deletedFolder"):
                    deleted.append(value["path"])
                else:  # lfsFile / copies are never asked for (preupload answers "regular")
                    return self._send(400, {"error": f"local hub: unsupported commit operation {key!r}"})
            oid = hashlib.sha1(body).hexdigest()
            with hub.lock:
                files = hub.repos[repo]
                for p in deleted:
                    for q in [q for q in files if q == p or q.startswith(p.rstrip("/") + "/")]:
                        del files[q]
                files.update(received)
                hub.commits[repo].append({"oid": oid, "summary": header.get("summary"), "files": sorted(received)})
            prefix = "" if kind == "models" else f"{kind}/"
            return self._send(200, {"commitUrl": f"{hub.url}/{prefix}{name}/commit/{oid}", "commitOid": oid,
                                    "pullRequestUrl": None, "success": True})
        return self._not_found(path)

    def do_PUT(self) -> None:  # noqa: N802
        path = self._record()
        self._body()
        self._not_found(path)

    def do_DELETE(self) -> None:  # noqa: N802
        path = self._record()
        self._body()
        self._not_found(path)


if __name__ == "__main__":  # pragma: no cover - manual use
    import argparse
    import os
    import time

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dump", help="on Ctrl-C, write the received files under this folder")
    ns = ap.parse_args()
    hub = LocalHub().start()
    print(f"HF_ENDPOINT={hub.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
        if ns.dump:
            for repo, files in hub.repos.items():
                for p, data in files.items():
                    dest = os.path.join(ns.dump, repo, p)
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with open(dest, "wb") as f:
                        f.write(data)
