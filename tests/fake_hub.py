"""A small stand-in for the Hugging Face Hub, served over real HTTP on 127.0.0.1.

It answers the endpoints huggingface_hub uses to download a model, with the headers it checks:
  GET  /api/models/{repo}[/revision/{rev}]      repo info (id, sha, siblings)
  GET  /api/models/{repo}/tree/{rev}[/{path}]   file listing with sizes, oids and lfs info
  HEAD /{repo}/resolve/{rev}/{path}             X-Repo-Commit, ETag, X-Linked-Etag/-Size (LFS)
  GET  /{repo}/resolve/{rev}/{path}             the bytes, honouring Range (206 + Content-Range)
Unknown repos, revisions and files get 404s carrying the X-Error-Code huggingface_hub maps to
RepositoryNotFoundError / RevisionNotFoundError / EntryNotFoundError.

Fault injection for tests: `drop_once(path, after)` makes the next GET of that file send its
headers and `after` bytes, then close the connection; `fail_always(path, status)` answers every GET
of it with an HTTP error. Every request is logged in `requests` as (method, path, Range header).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".bin", ".safetensors")  # as in the real repo's .gitattributes


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> path -> bytes
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit

    def commit_for(self, rev: str) -> str | None:
        if rev in self.refs:
            return self.refs[rev]
        return rev if rev in self.commits else None


class FakeHub:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self._drops: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # -- content -----------------------------------------------------------------------------
    def add_files(self, repo_id: str, files: dict[str, bytes], revision: str = "main") -> str:
        """Publish `files` as a new commit of repo_id and point `revision` at it; returns the commit."""
        digest = hashlib.sha1(repo_id.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
        commit = digest.hexdigest()
        repo = self.repos.setdefault(repo_id, Repo())
        repo.commits[commit] = dict(files)
        repo.refs[revision] = commit
        return commit

    def add_folder(self, repo_id: str, folder: Path, revision: str = "main") -> str:
        folder = Path(folder)
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.add_files(repo_id, files, revision)

    # -- faults ------------------------------------------------------------------------------
    def drop_once(self, path: str, after: int) -> None:
        self._drops[path] = after

    def fail_always(self, path: str, status: int = 500) -> None:
        self._failures[path] = status

    def clear_faults(self) -> None:
        self._drops.clear()
        self._failures.clear()

    def gets(self, path: str) -> list[str | None]:
        """The Range headers of every GET of a file (None: whole file)."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith("/" + path) and "/resolve/" in p]

    # -- server ------------------------------------------------------------------------------
    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


def closed_port_url() -> str:
    """An endpoint where nothing listens: connections are refused at once (no network)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's connection pool expects
    hub: FakeHub

    def log_message(self, *args):  # quiet test output
        pass

    # -- helpers -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)) if "Content-Length" not in (headers or {}) else headers["Content-Length"])
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, code: str, message: str, head: bool = False) -> None:
        self._send(404, json.dumps({"error": message}).encode(),
                   {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}, head=head)

    def _split_repo(self, parts: list[str]) -> tuple[str, list[str]]:
        return "/".join(parts[:2]), parts[2:]

    # -- routing -----------------------------------------------------------------------------
    def do_HEAD(self):
        self._route(head=True)

    def do_GET(self):
        self._route(head=False)

    def _route(self, head: bool) -> None:
        url = urlsplit(self.path)
        with self.hub._lock:
            self.hub.requests.append((self.command, url.path, self.headers.get("Range")))
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rest = self._split_repo(parts[2:])
            return self._api(repo_id, rest, head)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id = "/".join(parts[:2])
            return self._resolve(repo_id, parts[3], "/".join(parts[4:]), head)
        self._error("RepoNotFound", "Not found", head)

    def _lookup(self, repo_id: str, rev: str, head: bool):
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error("RepoNotFound", "Repository not found", head)
            return None, None
        commit = repo.commit_for(rev)
        if commit is None:
            self._error("RevisionNotFound", f"Invalid rev id: {rev}", head)
            return None, None
        return commit, repo.commits[commit]

    # -- /api ----------------------------------------------------------------------------------
    def _api(self, repo_id: str, rest: list[str], head: bool) -> None:
        if not rest or rest[0] == "revision":
            rev = rest[1] if len(rest) > 1 else "main"
            commit, files = self._lookup(repo_id, rev, head)
            if commit is None:
                return
            return self._json({
                "id": repo_id, "modelId": repo_id, "sha": commit, "private": False, "gated": False,
                "disabled": False, "tags": [], "downloads": 0, "likes": 0, "library_name": "diffusers",
                "siblings": [{"rfilename": p} for p in sorted(files)],
            })
        if rest[0] == "tree" and len(rest) >= 2:
            commit, files = self._lookup(repo_id, rest[1], head)
            if commit is None:
                return
            prefix = "/".join(rest[2:]).strip("/")
            recursive = "recursive=true" in (urlsplit(self.path).query or "").lower()
            return self._json(self._tree(files, prefix, recursive))
        self._error("RepoNotFound", "Not found", head)

    @staticmethod
    def _tree(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict]:
        base = prefix + "/" if prefix else ""
        entries, folders = [], set()
        for path, data in sorted(files.items()):
            if not path.startswith(base):
                continue
            rest = path[len(base):]
            # Every folder on the way to the file (only the first level unless recursive).
            bits = rest.split("/")[:-1]
            for i in range(1, len(bits) + 1):
                if recursive or i == 1:
                    folders.add(base + "/".join(bits[:i]))
            if "/" in rest and not recursive:
                continue
            entry = {"type": "file", "oid": git_blob_sha(data), "size": len(data), "path": path}
            if path.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        dirs = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f} for f in sorted(folders)]
        return dirs + entries

    # -- /resolve --------------------------------------------------------------------------------
    def _resolve(self, repo_id: str, rev: str, path: str, head: bool) -> None:
        commit, files = self._lookup(repo_id, rev, head)
        if commit is None:
            return
        if path not in files:
            return self._error("EntryNotFound", f"{path} does not exist on {rev}", head)
        data = files[path]
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if path.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = f'"{git_blob_sha(data)}"'
        if head:
            return self._send(200, data, {**headers, "Content-Length": str(len(data))}, head=True)
        status = self.hub._failures.get(path)
        if status:
            return self._send(status, b"server error", {"X-Repo-Commit": commit})
        start, code = 0, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng[6:].partition("-")
            start = int(first)
            end = int(last) + 1 if last else len(data)
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            data, code = data[start:end], 206
        with self.hub._lock:
            drop = self.hub._drops.pop(path, None)
        if drop is None:
            return self._send(code, data, headers)
        # Promise the whole body, send part of it, hang up: a connection lost mid-file.
        self.send_response(code)
        for k, v in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data[:drop])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
