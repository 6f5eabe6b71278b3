"""A small Hugging Face Hub-compatible HTTP server for tests that must not reach the network.

It implements the part of the Hub's HTTP API that ``huggingface_hub`` uses to create a repository, upload a commit of
regular (non-LFS, non-Xet) files and download them again:

    POST /api/repos/create                                   create_repo
    POST /api/validate-yaml                                  README.md metadata check inside create_commit
    POST /api/{models|datasets}/{repo_id}/preupload/{rev}     upload modes: always "regular"
    POST /api/{models|datasets}/{repo_id}/commit/{rev}        ndjson commit of base64 files and deletions
    GET  /api/{models|datasets}/{repo_id}[/revision/{rev}]    model_info / repo_info (sha, siblings)
    GET  /api/{models|datasets}/{repo_id}/tree/{rev}[/{path}] list_repo_tree (used by snapshot_download)
    HEAD/GET /[datasets/]{repo_id}/resolve/{rev}/{path}       hf_hub_download (ETag, X-Repo-Commit, Range)

Repositories live in memory as a list of immutable commits; a revision is a branch name or a full commit id. Errors
carry the ``X-Error-Code`` header the real Hub sends (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) so
that the client raises the same exceptions as against huggingface.co.

Usage::

    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)   # for code that reads the endpoint when it is imported
        HfApi(endpoint=hub.url).create_repo("user/model")

Only the standard library is used; requests are served by threads and the server binds to 127.0.0.1 on a free port.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit

_REPO_ID = r"[A-Za-z0-9][\w.\-]*/[\w.\-]+"
_API_REPO = rf"/api/(?P<kind>models|datasets)/(?P<repo_id>{_REPO_ID})"
_RESOLVE = rf"/(?P<prefix>datasets/)?(?P<repo_id>{_REPO_ID})/resolve/(?P<revision>[^/]+)/(?P<path>.+)"
_ROUTES = [
    ("POST", re.compile(r"/api/repos/create"), "create_repo"),
    ("POST", re.compile(r"/api/validate-yaml"), "validate_yaml"),
    ("POST", re.compile(rf"{_API_REPO}/preupload/(?P<revision>[^/]+)"), "preupload"),
    ("POST", re.compile(rf"{_API_REPO}/commit/(?P<revision>[^/]+)"), "commit"),
    ("GET", re.compile(rf"{_API_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?"), "tree"),
    ("GET", re.compile(rf"{_API_REPO}(?:/revision/(?P<revision>[^/]+))?"), "repo_info"),
    ("GET", re.compile(_RESOLVE), "resolve"),
    ("HEAD", re.compile(_RESOLVE), "resolve"),
]
_KIND_TO_REPO_TYPE = {"models": "model", "datasets": "dataset"}
_INITIAL_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file's content: what the Hub sends as the ETag of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Commit:
    oid: str
    message: str
    files: dict  # path in repo -> bytes
    created_at: str


@dataclass
class Repository:
    repo_id: str
    repo_type: str
    private: bool
    commits: list = field(default_factory=list)
    branches: dict = field(default_factory=dict)  # branch name -> commit oid

    def resolve(self, revision: str) -> Optional[Commit]:
        oid = self.branches.get(revision, revision)
        return next((commit for commit in self.commits if commit.oid == oid), None)

    def add_commit(self, branch: str, message: str, files: dict) -> Commit:
        parent = self.branches.get(branch, "")
        digest = hashlib.sha1(parent.encode())
        digest.update(message.encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_oid(files[path])}\n".encode())
        commit = Commit(
            oid=digest.hexdigest(),
            message=message,
            files=dict(files),
            created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        )
        self.commits.append(commit)
        self.branches[branch] = commit.oid
        return commit


class HubError(Exception):
    """An HTTP error answer, with the ``X-Error-Code`` the real Hub would send."""

    def __init__(self, status: int, message: str, error_code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.headers = headers or {}


class HubServer:
    """In-memory Hub on ``http://127.0.0.1:<free port>``, served from a daemon thread.

    Args:
        namespace (`str`, defaults to `"test-user"`): the user that owns repositories created without a namespace.

    Attributes:
        url (`str`): the endpoint to give ``HF_ENDPOINT`` or ``HfApi(endpoint=...)``.
        repos (`dict`): ``(repo_type, repo_id) -> Repository``.
        requests (`list[tuple[str, str]]`): every ``(method, path)`` served, for asserting what a client did.
    """

    def __init__(self, namespace: str = "test-user"):
        self.namespace = namespace
        self.repos: dict = {}
        self.requests: list = []
        self.lock = threading.Lock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("HubServer is not running: call start() or use it as a context manager.")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        handler = type("BoundHubHandler", (_HubRequestHandler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ----------------------------------------------------------------- state helpers
    def _repo(self, repo_type: str, repo_id: str) -> Repository:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repository, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.url}/{prefix}{repo_id}"

    # ----------------------------------------------------------------- endpoints
    def create_repo(self, body: dict, **_) -> tuple:
        repo_type = body.get("type") or "model"
        if repo_type not in ("model", "dataset"):
            raise HubError(400, f"This test Hub serves model and dataset repositories, not {repo_type!r}")
        repo_id = f"{body.get('organization') or self.namespace}/{body['name']}"
        url = self._repo_url(repo_type, repo_id)
        if (repo_type, repo_id) in self.repos:
            return 409, {"error": "You already created this repo", "url": url}
        repo = Repository(repo_id, repo_type, private=body.get("visibility") == "private")
        repo.add_commit("main", "initial commit", {".gitattributes": _INITIAL_GITATTRIBUTES})
        self.repos[(repo_type, repo_id)] = repo
        return 200, {"url": url, "name": repo_id, "id": repo_id}

    def validate_yaml(self, body: dict, **_) -> tuple:
        return 200, {"errors": [], "warnings": []}

    def preupload(self, body: dict, kind: str, repo_id: str, revision: str, **_) -> tuple:
        repo = self._repo(_KIND_TO_REPO_TYPE[kind], repo_id)
        head = repo.resolve(revision)
        files = head.files if head is not None else {}
        answers = []
        for entry in body["files"]:
            existing = files.get(entry["path"])
            answers.append(
                {
                    "path": entry["path"],
                    # Regular git blobs only: the client then sends the bytes inside the commit itself.
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_oid(existing) if existing is not None else None,
                }
            )
        return 200, {"files": answers, "commitOid": head.oid if head is not None else None}

    def commit(self, body: bytes, kind: str, repo_id: str, revision: str, query: dict, **_) -> tuple:
        repo = self._repo(_KIND_TO_REPO_TYPE[kind], repo_id)
        if "create_pr" in query:
            raise HubError(400, "This test Hub does not implement pull requests (create_pr)")
        if revision not in repo.branches:
            raise HubError(404, f"Branch {revision} not found", "RevisionNotFound")
        files = dict(repo.resolve(revision).files)
        message = ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value["summary"]
                parent = value.get("parentCommit")
                if parent is not None and not repo.branches[revision].startswith(parent):
                    raise HubError(412, f"Parent commit {parent} is not the head of {revision}")
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r} for {value['path']}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"Cannot delete {value['path']}: no such file", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {path: data for path, data in files.items() if not path.startswith(folder)}
            else:
                # lfsFile / copies would need an LFS store; the preupload answer never asks for them.
                raise HubError(400, f"This test Hub accepts regular files only, got a {key!r} operation")
        new_commit = repo.add_commit(revision, message, files)
        return 200, {
            "success": True,
            "commitOid": new_commit.oid,
            "commitUrl": f"{self._repo_url(repo.repo_type, repo_id)}/commit/{new_commit.oid}",
            "hookOutput": "",
            "pullRequestUrl": None,
        }

    def repo_info(self, kind: str, repo_id: str, revision: Optional[str] = None, **_) -> tuple:
        repo = self._repo(_KIND_TO_REPO_TYPE[kind], repo_id)
        commit = self._commit(repo, revision or "main")
        return 200, {
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.created_at,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }

    def tree(self, kind: str, repo_id: str, revision: str, query: dict, path: Optional[str] = None, **_) -> tuple:
        repo = self._repo(_KIND_TO_REPO_TYPE[kind], repo_id)
        commit = self._commit(repo, revision)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = (path.strip("/") + "/") if path else ""
        entries, folders = [], set()
        for file_path in sorted(commit.files):
            if not file_path.startswith(prefix):
                continue
            rest = file_path[len(prefix):]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                data = commit.files[file_path]
                entries.append({"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": file_path})
        if prefix and not entries and not folders:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        for folder in sorted(folders):
            entries.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0, "path": folder})
        return 200, entries

    def resolve(self, repo_id: str, revision: str, path: str, prefix: Optional[str] = None, **_) -> tuple:
        repo = self._repo("dataset" if prefix else "model", repo_id)
        commit = self._commit(repo, revision)
        data = commit.files.get(path)
        if data is None:
            raise HubError(404, f"Entry {path} not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {"ETag": f'"{git_blob_oid(data)}"', "X-Repo-Commit": commit.oid}
        return 200, data, headers


class _HubRequestHandler(BaseHTTPRequestHandler):
    hub: HubServer  # set on the bound subclass
    protocol_version = "HTTP/1.1"  # keep-alive: httpx reuses connections

    def log_message(self, format: str, *args) -> None:  # the test output stays quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()  # the CRLF after each chunk
                if size == 0:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path, query = unquote(split.path), parse_qs(split.query)
        body = self._read_body() if method == "POST" else b""
        with self.hub.lock:
            self.hub.requests.append((method, split.path))
        for route_method, pattern, name in _ROUTES:
            match = pattern.fullmatch(path) if route_method == method else None
            if match is None:
                continue
            params = {key: value for key, value in match.groupdict().items() if value is not None}
            try:
                payload = body
                if name != "commit" and method == "POST":
                    payload = json.loads(body or b"{}")
                with self.hub.lock:
                    answer = getattr(self.hub, name)(body=payload, query=query, **params)
            except HubError as error:
                self._send_error(error)
                return
            except (KeyError, ValueError) as error:  # malformed request
                self._send_error(HubError(400, f"Bad request: {error!r}"))
                return
            self._send(method, *answer)
            return
        self._send_error(HubError(404, f"The test Hub does not implement {method} {split.path}"))

    def _send(self, method: str, status: int, content, headers: Optional[dict] = None) -> None:
        headers = dict(headers or {})
        if isinstance(content, (bytes, bytearray)):
            data = bytes(content)
            headers.setdefault("Content-Type", "application/octet-stream")
            byte_range = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if byte_range is not None and status == 200:
                # Resumed downloads ask for the tail of a file.
                start = int(byte_range.group(1))
                end = int(byte_range.group(2)) if byte_range.group(2) else len(data) - 1
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data, status = data[start : end + 1], 206
        else:
            data = json.dumps(content).encode()
            headers["Content-Type"] = "application/json"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _send_error(self, error: HubError) -> None:
        headers = dict(error.headers)
        headers["X-Error-Message"] = str(error)
        if error.error_code is not None:
            headers["X-Error-Code"] = error.error_code
        self._send(self.command, error.status, {"error": str(error)}, headers)
