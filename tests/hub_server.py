"""A local, stdlib-only stand-in for the part of the Hugging Face Hub API that uploads use.

Enough for ``create_repo`` + ``upload_folder`` (and so ``Trainer.push_to_hub``) from huggingface_hub 2.x, and as
strict as the Hub where tl_hf could get it wrong:

* ``POST /api/repos/create`` -- creates (or finds) a repo; answers ``{"url": ..., "name": ...}``
* ``POST /api/validate-yaml`` -- the README metadata check below (the client asks before a commit)
* ``POST /api/{type}s/{repo}/preupload/{rev}`` -- ``uploadMode: "lfs"`` for files of 10 MB or more (as the Hub
  decides), ``"regular"`` (contents inline, base64) for the rest
* ``POST /{repo}.git/info/lfs/objects/batch`` -- LFS batch API: an upload and a verify action per object;
  ``PUT /_lfs/{oid}`` takes the bytes (their sha256 must be the oid), ``POST /_lfs/{oid}/verify`` checks them
* ``POST /api/{type}s/{repo}/commit/{rev}`` -- NDJSON; ``file`` lines carry base64 content, ``lfsFile`` lines an oid
  that must have been uploaded. A ``README.md`` whose metadata the Hub would refuse is rejected (400): YAML that does
  not parse, ``base_model`` / ``datasets`` entries that are not repo ids, a ``model-index`` that
  huggingface_hub's ``model_index_to_eval_results`` cannot read or with non-numeric values.
* ``GET /api/{type}s/{repo}[/revision/{rev}]`` -- repo info (sha, siblings)
* ``GET /api/whoami-v2`` -- a fake user ``tester``
* anything else (e.g. ``GET /api/agent-harnesses``) -- 404 with a JSON error

Tokens: ``LocalHub(tokens={"hf_...": "write", "hf_...": "read"})`` accepts only those (401 for any other or none,
403 for a read token on a write); without ``tokens`` any ``Bearer`` token is accepted, but writes need one.

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
_LFS_BATCH = re.compile(r"^/(?:(datasets|spaces)/)?(.+)\.git/info/lfs/objects/batch$")
_LFS_OBJECT = re.compile(r"^/_lfs/([0-9a-f]{64})(/verify)?$")
LFS_THRESHOLD = 10 * 2**20  # the Hub stores files of 10 MB or more through LFS


def metadata_errors(readme: bytes) -> list[str]:
    """Why the Hub would refuse this README's metadata (empty: it is fine), read with huggingface_hub's parsers."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        card = ModelCard(readme.decode("utf-8"), ignore_metadata_errors=False)
    except Exception as exc:  # noqa: BLE001
        return [f"Invalid metadata in README.md: {exc}"]
    meta = card.data.to_dict()
    errors = []
    for key in ("base_model", "datasets"):
        values = meta.get(key)
        for v in [values] if isinstance(values, str) else list(values or []):
            try:
                validate_repo_id(v)
            except (HFValidationError, TypeError) as exc:
                errors.append(f"\"{key}\" must be repo ids: {v!r} ({exc})")
    if meta.get("model-index") is not None:
        try:
            _, results = model_index_to_eval_results(meta["model-index"])
        except Exception as exc:  # noqa: BLE001
            return errors + [f"\"model-index\" is invalid: {exc}"]
        for r in results:
            if isinstance(r.metric_value, bool) or not isinstance(r.metric_value, (int, float)):
                errors.append(f"\"model-index\" metric {r.metric_type!r}: value must be a number")
    return errors


class LocalHub:
    """``with LocalHub() as hub: ...`` or ``hub.start()`` / ``hub.stop()``; ``hub.url`` is the endpoint."""

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.tokens = tokens  # token -> "read" | "write"; None: any bearer token
        self.lfs: dict[str, bytes] = {}  # oid (sha256) -> bytes uploaded through the LFS path
        self.lfs_uploads: list[str] = []  # paths committed as lfsFile
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

    def _denied(self, write: bool) -> bool:
        """Answer 401 / 403 (and return True) when the request's token may not do this."""
        auth = self.headers.get("Authorization") or ""
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        tokens = self.server_hub.tokens
        if tokens is None:
            if write and not token:
                self._send(401, {"error": "Invalid credentials in Authorization header"})
                return True
            return False
        if token not in tokens:
            self._send(401, {"error": "Invalid credentials in Authorization header"})
            return True
        if write and tokens[token] != "write":
            self._send(403, {"error": "You don't have the rights to write to this repo (read-only token)"})
            return True
        return False

    @staticmethod
    def _repo_id(kind: str, name: str) -> str:
        return name if kind == "models" else f"{kind}/{name}"

    # -- routes ---------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        path = self._record()
        hub = self.server_hub
        if path == "/api/whoami-v2":
            if self._denied(write=False):
                return None
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
        if path == "/api/validate-yaml":
            req = json.loads(body or b"{}")
            content = req.get("content", "")
            errors = metadata_errors(content.encode()) if content.lstrip().startswith("---") else []
            return self._send(200 if not errors else 400, {"errors": [{"message": e} for e in errors],
                                                           "warnings": []})
        if self._denied(write=True):
            return None
        if path == "/api/repos/create":
            return self._create(body)
        m = _LFS_BATCH.match(path)
        if m:
            return self._lfs_batch(body)
        m = _LFS_OBJECT.match(path)
        if m and m.group(2):
            req = json.loads(body or b"{}")
            data = hub.lfs.get(m.group(1))
            if data is None or len(data) != req.get("size"):
                return self._send(404, {"error": f"LFS object {m.group(1)} was not uploaded (or has another size)"})
            return self._send(200, {"success": True})
        m = _UPLOAD.match(path)
        if m:
            kind, name, action = m.group(1), m.group(2), m.group(3)
            repo = self._repo_id(kind, name)
            if repo not in hub.repos:
                return self._send(404, {"error": f"Repository {repo} not found"})
            if action == "preupload":
                req = json.loads(body or b"{}")
                files = [{"path": f["path"], "uploadMode": "lfs" if int(f.get("size", 0)) >= LFS_THRESHOLD
                          else "regular", "shouldIgnore": False, "oid": None} for f in req.get("files", [])]
                return self._send(200, {"files": files, "commitOid": hub.sha(repo)})
            return self._commit(kind, name, repo, body)
        return self._not_found(path)

    def _create(self, body: bytes) -> None:
        hub = self.server_hub
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

    def _lfs_batch(self, body: bytes) -> None:
        req = json.loads(body or b"{}")
        if req.get("operation") != "upload":
            return self._send(400, {"error": "local hub: only LFS uploads are implemented"})
        url = self.server_hub.url
        objects = [{"oid": o["oid"], "size": int(o["size"]), "authenticated": True,
                    "actions": {"upload": {"href": f"{url}/_lfs/{o['oid']}"},
                                "verify": {"href": f"{url}/_lfs/{o['oid']}/verify"}}}
                   for o in req.get("objects", [])]
        return self._send(200, {"transfer": "basic", "objects": objects})

    def _commit(self, kind: str, name: str, repo: str, body: bytes) -> None:
        hub = self.server_hub
        received: dict[str, bytes] = {}
        lfs_paths: list[str] = []
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
            elif key == "lfsFile":
                data = hub.lfs.get(value.get("oid"))
                if data is None:
                    return self._send(400, {"error": f"LFS object for {value.get('path')} was never uploaded"})
                received[value["path"]] = data
                lfs_paths.append(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                return self._send(400, {"error": f"local hub: unsupported commit operation {key!r}"})
        if "README.md" in received:
            errors = metadata_errors(received["README.md"])
            if errors:
                return self._send(400, {"error": "; ".join(errors)})
        oid = hashlib.sha1(body).hexdigest()
        with hub.lock:
            files = hub.repos[repo]
            for p in deleted:
                for q in [q for q in files if q == p or q.startswith(p.rstrip("/") + "/")]:
                    del files[q]
            files.update(received)
            hub.lfs_uploads += lfs_paths
            hub.commits[repo].append({"oid": oid, "summary": header.get("summary"), "files": sorted(received)})
        prefix = "" if kind == "models" else f"{kind}/"
        return self._send(200, {"commitUrl": f"{hub.url}/{prefix}{name}/commit/{oid}", "commitOid": oid,
                                "pullRequestUrl": None, "success": True})

    def do_PUT(self) -> None:  # noqa: N802
        path = self._record()
        body = self._body()
        m = _LFS_OBJECT.match(path)
        if not m or m.group(2):
            return self._not_found(path)
        if hashlib.sha256(body).hexdigest() != m.group(1):
            return self._send(400, {"error": "LFS upload: the content's sha256 is not the object id"})
        with self.server_hub.lock:
            self.server_hub.lfs[m.group(1)] = body
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None

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
