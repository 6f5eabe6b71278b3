"""A small Hugging Face Hub-compatible HTTP server for tests that must not reach the network.

It implements the part of the Hub's HTTP API that ``huggingface_hub`` uses to create a repository, upload a commit
(small text files inline, weights and other binary files through Git LFS, as huggingface.co does when Xet is off)
and download it again:

    POST /api/repos/create                                   create_repo
    POST /api/validate-yaml                                  README.md metadata check inside create_commit: parsed
                                                             with huggingface_hub's own ModelCard/DatasetCard
    POST /api/{models|datasets}/{repo_id}/preupload/{rev}     upload modes: "lfs" for binary files, files matching an
                                                             LFS pattern of .gitattributes and files >= 10 MiB
    POST /[datasets/]{repo_id}.git/info/lfs/objects/batch     LFS batch API: upload and verify hrefs ("basic")
    PUT  <cdn>/lfs-upload/{sha256}                            the upload href (content checked against its sha256)
    POST /[datasets/]{repo_id}.git/info/lfs/objects/verify    the verify href
    POST /api/{models|datasets}/{repo_id}/commit/{rev}        ndjson commit of base64 files, lfsFile pointers,
                                                             deletions
    GET  /api/{models|datasets}/{repo_id}[/revision/{rev}]    model_info / repo_info (sha, siblings)
    GET  /api/{models|datasets}/{repo_id}/tree/{rev}[/{path}] list_repo_tree (used by snapshot_download)
    HEAD/GET /[datasets/]{repo_id}/resolve/{rev}/{path}       hf_hub_download: a regular file is answered directly
                                                             (ETag = git blob id, X-Repo-Commit, Range); an LFS
                                                             file with a 302 to the CDN, carrying X-Repo-Commit,
                                                             X-Linked-Etag (its sha256) and X-Linked-Size
    HEAD/GET <cdn>/lfs/{sha256}                               the CDN: LFS content (Range)

The CDN is a second listener of the same server on another port, so that it is another origin, like the real
CDN: huggingface_hub follows redirects within the Hub but reads an LFS file's metadata off the redirect itself.
huggingface_hub >= 1.0 uploads through Xet whenever ``hf_xet`` is installed, so clients of this server set
``HF_HUB_DISABLE_XET`` (``conftest.point_hub_client_at`` does).

Repositories live in memory as a list of immutable commits; a revision is a branch name or a full commit id. Errors
carry the ``X-Error-Code`` header the real Hub sends (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) so
that the client raises the same exceptions as against huggingface.co.

Usage::

    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)   # for code that reads the endpoint when it is imported
        HfApi(endpoint=hub.url).create_repo("user/model")

Besides the standard library only huggingface_hub's card parser is used (for validate-yaml); requests are served by
threads and both listeners bind to 127.0.0.1 on free ports.
"""

from __future__ import annotations

import base64
import fnmatch
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
_LFS_API = rf"/(?P<prefix>datasets/)?(?P<repo_id>{_REPO_ID})\.git/info/lfs/objects"
_SHA256 = r"(?P<oid>[0-9a-f]{64})"
# (method, path, handler, served by the CDN listener rather than the Hub's)
_ROUTES = [
    ("POST", re.compile(r"/api/repos/create"), "create_repo", False),
    ("POST", re.compile(r"/api/validate-yaml"), "validate_yaml", False),
    ("POST", re.compile(rf"{_API_REPO}/preupload/(?P<revision>[^/]+)"), "preupload", False),
    ("POST", re.compile(rf"{_API_REPO}/commit/(?P<revision>[^/]+)"), "commit", False),
    ("POST", re.compile(rf"{_LFS_API}/batch"), "lfs_batch", False),
    ("POST", re.compile(rf"{_LFS_API}/verify"), "lfs_verify", False),
    ("GET", re.compile(rf"{_API_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?"), "tree", False),
    ("GET", re.compile(rf"{_API_REPO}(?:/revision/(?P<revision>[^/]+))?"), "repo_info", False),
    ("GET", re.compile(_RESOLVE), "resolve", False),
    ("HEAD", re.compile(_RESOLVE), "resolve", False),
    ("PUT", re.compile(rf"/lfs-upload/{_SHA256}"), "lfs_upload", True),
    ("GET", re.compile(rf"/lfs/{_SHA256}"), "cdn_download", True),
    ("HEAD", re.compile(rf"/lfs/{_SHA256}"), "cdn_download", True),
]
_KIND_TO_REPO_TYPE = {"models": "model", "datasets": "dataset"}
# What huggingface.co puts into a new repository (abridged): weights and archives go to LFS by name.
_INITIAL_GITATTRIBUTES = b"".join(
    b"%s filter=lfs diff=lfs merge=lfs -text\n" % pattern
    for pattern in (b"*.safetensors", b"*.bin", b"*.pt", b"*.pth", b"*.ckpt", b"*.npy", b"*.tar.gz", b"*.zip")
)
# The Hub stores any file this large in LFS, whatever its name (huggingface_hub refuses larger regular files).
_LFS_SIZE_THRESHOLD = 10 * 2**20


def lfs_pointer(data: bytes) -> bytes:
    """The git LFS pointer file that git stores in place of ``data``."""
    return b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (
        hashlib.sha256(data).hexdigest().encode(),
        len(data),
    )


def _lfs_patterns(gitattributes: Optional[bytes]) -> list:
    patterns = []
    for line in (gitattributes or b"").decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) > 1 and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def _goes_to_lfs(path: str, size: int, sample: bytes, patterns: list) -> bool:
    """The Hub's rule: an LFS pattern of .gitattributes, a binary file (a NUL byte in its first 512 bytes), or a
    large one. Empty files stay regular (an empty S3 upload fails)."""
    if size == 0:
        return False
    name = path.rsplit("/", 1)[-1]
    by_name = any(fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(name, pattern) for pattern in patterns)
    return by_name or b"\0" in sample or size >= _LFS_SIZE_THRESHOLD


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file's content: what the Hub sends as the ETag of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Commit:
    oid: str
    message: str
    files: dict  # path in repo -> bytes (the content, also for LFS files)
    created_at: str
    lfs: frozenset = frozenset()  # paths stored in LFS: git holds their pointer file

    def git_blob(self, path: str) -> bytes:
        """What git stores for ``path``: the content, or the LFS pointer."""
        data = self.files[path]
        return lfs_pointer(data) if path in self.lfs else data


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

    def add_commit(self, branch: str, message: str, files: dict, lfs: frozenset = frozenset()) -> Commit:
        parent = self.branches.get(branch, "")
        digest = hashlib.sha1(parent.encode())
        digest.update(message.encode())
        blobs = {path: lfs_pointer(data) if path in lfs else data for path, data in files.items()}
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_oid(blobs[path])}\n".encode())
        commit = Commit(
            oid=digest.hexdigest(),
            message=message,
            files=dict(files),
            created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            lfs=frozenset(path for path in lfs if path in files),
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
        cdn_url (`str`): the CDN listener, where LFS uploads and downloads go.
        repos (`dict`): ``(repo_type, repo_id) -> Repository``.
        lfs_objects (`dict`): sha256 -> content, every LFS object uploaded (and checked against its sha256).
        requests (`list[tuple[str, str]]`): every ``(method, path)`` served by either listener, for asserting what a
            client did (CDN paths start with ``/lfs``).
    """

    def __init__(self, namespace: str = "test-user"):
        self.namespace = namespace
        self.repos: dict = {}
        self.lfs_objects: dict = {}
        self.requests: list = []
        self.lock = threading.Lock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._cdn: Optional[ThreadingHTTPServer] = None
        self._threads: list = []

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("HubServer is not running: call start() or use it as a context manager.")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        if self._cdn is None:
            raise RuntimeError("HubServer is not running: call start() or use it as a context manager.")
        host, port = self._cdn.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        listeners = []
        for name, is_cdn in (("hub-server", False), ("hub-cdn", True)):
            handler = type("BoundHubHandler", (_HubRequestHandler,), {"hub": self, "is_cdn": is_cdn})
            httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            httpd.daemon_threads = True
            thread = threading.Thread(target=httpd.serve_forever, name=name, daemon=True)
            thread.start()
            listeners.append(httpd)
            self._threads.append(thread)
        self._httpd, self._cdn = listeners
        return self

    def stop(self) -> None:
        for httpd in (self._httpd, self._cdn):
            if httpd is not None:
                httpd.shutdown()
                httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._httpd, self._cdn, self._threads = None, None, []

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
        """Parses the card as the Hub does: YAML metadata that must be a mapping, and for a model a ``model-index``
        that huggingface_hub can turn into eval results. A bad card is a 400 with the errors listed."""
        from huggingface_hub import DatasetCard, ModelCard

        card_class = DatasetCard if body.get("repoType") == "dataset" else ModelCard
        try:
            card_class(body["content"], ignore_metadata_errors=False)
        except Exception as error:  # any parse failure is the user's card, reported like the Hub's 400
            return 400, {"errors": [{"message": f"{type(error).__name__}: {error}"}], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    def preupload(self, body: dict, kind: str, repo_id: str, revision: str, **_) -> tuple:
        repo = self._repo(_KIND_TO_REPO_TYPE[kind], repo_id)
        head = repo.resolve(revision)
        files = head.files if head is not None else {}
        patterns = _lfs_patterns(files.get(".gitattributes"))
        answers = []
        for entry in body["files"]:
            path = entry["path"]
            lfs = _goes_to_lfs(path, int(entry["size"]), base64.b64decode(entry.get("sample", "")), patterns)
            existing = files.get(path)
            # The client skips a file whose oid equals its own: sha256 for LFS, the git blob id for regular files.
            remote_oid = None
            if existing is not None:
                remote_oid = hashlib.sha256(existing).hexdigest() if lfs else git_blob_oid(existing)
            answers.append(
                {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": remote_oid}
            )
        return 200, {"files": answers, "commitOid": head.oid if head is not None else None}

    def lfs_batch(self, body: dict, repo_id: str, prefix: Optional[str] = None, **_) -> tuple:
        """The git LFS batch API (upload): an upload and a verify href for each object the store lacks."""
        self._repo("dataset" if prefix else "model", repo_id)
        if body.get("operation") != "upload":
            raise HubError(400, f"This test Hub's LFS batch API serves uploads, got {body.get('operation')!r}")
        if "basic" not in body.get("transfers", ["basic"]):
            raise HubError(400, f"No common transfer adapter: the client offers {body.get('transfers')}, not 'basic'")
        lfs_api = f"{self.url}/{prefix or ''}{repo_id}.git/info/lfs/objects"
        objects = []
        for item in body["objects"]:
            oid, size = item["oid"], int(item["size"])
            answer = {"oid": oid, "size": size, "authenticated": True}
            if self.lfs_objects.get(oid) is None or len(self.lfs_objects[oid]) != size:
                answer["actions"] = {
                    "upload": {"href": f"{self.cdn_url}/lfs-upload/{oid}?size={size}", "header": {}},
                    "verify": {"href": f"{lfs_api}/verify", "header": {}},
                }
            objects.append(answer)
        return 200, {"transfer": "basic", "objects": objects}

    def lfs_upload(self, body: bytes, oid: str, query: dict, **_) -> tuple:
        if hashlib.sha256(body).hexdigest() != oid or len(body) != int(query.get("size", [len(body)])[0]):
            raise HubError(400, f"Uploaded content does not match sha256 {oid} and size {query.get('size')}")
        self.lfs_objects[oid] = bytes(body)
        return 200, b""

    def lfs_verify(self, body: dict, repo_id: str, **_) -> tuple:
        stored = self.lfs_objects.get(body["oid"])
        if stored is None or len(stored) != int(body["size"]):
            raise HubError(404, f"LFS object {body['oid']} ({body['size']} bytes) was not uploaded")
        return 200, {"message": "verified"}

    def cdn_download(self, oid: str, **_) -> tuple:
        data = self.lfs_objects.get(oid)
        if data is None:
            raise HubError(404, f"No LFS object {oid}")
        return 200, data, {"ETag": f'"{oid}"'}

    def commit(self, body: bytes, kind: str, repo_id: str, revision: str, query: dict, **_) -> tuple:
        repo = self._repo(_KIND_TO_REPO_TYPE[kind], repo_id)
        if "create_pr" in query:
            raise HubError(400, "This test Hub does not implement pull requests (create_pr)")
        if revision not in repo.branches:
            raise HubError(404, f"Branch {revision} not found", "RevisionNotFound")
        head = repo.resolve(revision)
        files, lfs = dict(head.files), set(head.lfs)
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
                lfs.discard(value["path"])
            elif key == "lfsFile":
                data = self.lfs_objects.get(value["oid"]) if value.get("algo") == "sha256" else None
                if data is None or len(data) != int(value["size"]):
                    # the real Hub's refusal of a pointer to content it never received
                    raise HubError(422, f"LFS pointer of {value['path']} points to an object that was not uploaded")
                files[value["path"]] = data
                lfs.add(value["path"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"Cannot delete {value['path']}: no such file", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {path: data for path, data in files.items() if not path.startswith(folder)}
            else:
                raise HubError(400, f"This test Hub does not implement {key!r} operations (copies)")
        new_commit = repo.add_commit(revision, message, files, frozenset(lfs))
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
                data, blob = commit.files[file_path], commit.git_blob(file_path)
                entry = {"type": "file", "oid": git_blob_oid(blob), "size": len(data), "path": file_path}
                if file_path in commit.lfs:
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(blob)}
                entries.append(entry)
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
        headers = {"ETag": f'"{git_blob_oid(commit.git_blob(path))}"', "X-Repo-Commit": commit.oid}
        if path in commit.lfs:
            # As huggingface.co: a redirect to the CDN, with the file's own etag (its sha256) and size on it.
            sha256 = hashlib.sha256(data).hexdigest()
            headers.update(
                {"Location": f"{self.cdn_url}/lfs/{sha256}", "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data))}
            )
            return 302, b"", headers
        return 200, data, headers


class _HubRequestHandler(BaseHTTPRequestHandler):
    hub: HubServer  # set on the bound subclass
    is_cdn: bool  # set on the bound subclass: which listener this is
    protocol_version = "HTTP/1.1"  # keep-alive: httpx reuses connections

    def log_message(self, format: str, *args) -> None:  # the test output stays quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

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
        body = self._read_body() if method in ("POST", "PUT") else b""
        with self.hub.lock:
            self.hub.requests.append((method, split.path))
        for route_method, pattern, name, on_cdn in _ROUTES:
            match = pattern.fullmatch(path) if route_method == method and on_cdn == self.is_cdn else None
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
