"""A loopback Hugging Face Hub-protocol server for tests.

It answers the subset of the Hub HTTP API that `huggingface_hub` (LFS mode, i.e. `HF_HUB_DISABLE_XET=1`),
`datasets`, `transformers` and `peft` use to create repos, commit files and read them back: repo
create/delete, repo info, refs, branches/tags, tree and paths-info listings, preupload, the git-LFS batch
API with its upload URL, NDJSON commits, `resolve` downloads with Range support and whoami.

Built on `http.server` + `threading` (PyYAML only to parse README front matter into `cardData`), bound to
127.0.0.1, state kept in memory. Every repo has git-like history: each commit is a full snapshot with its
own sha, branches and tags point at commits. Every request is recorded (method, path, status) so tests can
assert which endpoints a library used. Tokens are only compared, never stored in the log.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files >= 10 MB in LFS whatever .gitattributes says
# What a new Hub repo's initial commit puts in .gitattributes (abridged): binary formats go to LFS.
DEFAULT_LFS_PATTERNS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lz4 *.mds *.mlmodel *.model *.msgpack "
    "*.npy *.npz *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors *.tar *.tflite "
    "*.tgz *.wasm *.xz *.zip *.zst *tfevents* *.jpg *.jpeg *.png *.webp *.gif *.tif *.tiff *.wav *.mp3"
).split()
DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_LFS_PATTERNS)


class HubError(Exception):
    """An error answered to the client: HTTP status, optional `X-Error-Code`, message."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def _now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob (what the Hub reports as `oid`/`blobId` of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class FileEntry:
    """One file in a commit snapshot. LFS files keep their bytes in the server's LFS store."""

    size: int
    git_oid: str  # sha1 of the blob (for LFS files: of the pointer file, like git)
    content: bytes | None = None  # regular files
    lfs_sha256: str | None = None  # LFS files
    pointer_size: int = 0

    @property
    def is_lfs(self) -> bool:
        return self.lfs_sha256 is not None


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    author: str
    files: dict[str, FileEntry]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestRecord:
    """One served request. `path` is URL-decoded, `query` the decoded query string."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    authenticated: bool


class HubServer:
    """In-memory Hub. `start()` binds 127.0.0.1:`port` (0 = ephemeral) and serves from a daemon thread."""

    def __init__(
        self,
        *,
        token: str = "hf_test_token",
        user: str = "test-user",
        port: int = 0,
        tree_page_size: int = 1000,
    ):
        self.host = "127.0.0.1"
        self.requested_port = port
        self.token = token  # the write token clients should send; tests only ever use a dummy
        self.user = user
        # token -> user name. A request with any other bearer token is rejected with 401.
        self.tokens = {token: user}
        self.tree_page_size = tree_page_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self._upload_tickets: dict[str, tuple[str, int]] = {}
        self._log: list[RequestRecord] = []
        self._lock = threading.RLock()
        self._counter = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> HubServer:
        handler = type("BoundHubHandler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer((self.host, self.requested_port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
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

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("hub server is not running")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    endpoint = url

    # ---------------------------------------------------------------- helpers for tests
    @property
    def log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def mark(self) -> int:
        """Position in the request log; pass it as `since=` to `requests()`."""
        with self._lock:
            return len(self._log)

    def requests(
        self, method: str | None = None, contains: str | None = None, *, since: int = 0
    ) -> list[RequestRecord]:
        """Logged requests, optionally filtered by method and a substring of the decoded path."""
        return [
            r
            for r in self.log[since:]
            if (method is None or r.method == method) and (contains is None or contains in r.path)
        ]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def new_repo_id(self, name: str = "repo", namespace: str = "pathinsight-test") -> str:
        """A repo id no other test in this session uses."""
        with self._lock:
            self._counter += 1
            return f"{namespace}/{name}-{self._counter}"

    def get_repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self._lock:
            try:
                return self.repos[(repo_type, repo_id)]
            except KeyError:
                raise KeyError(f"no {repo_type} repo {repo_id!r} on the test hub") from None

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """Path -> bytes of every file of `repo_id` at `revision` (LFS content resolved)."""
        with self._lock:
            commit = self._commit_for(self.get_repo(repo_id, repo_type), revision)
            return {path: self._content(entry) for path, entry in commit.files.items()}

    def commits(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> list[Commit]:
        """History of `revision`, newest first."""
        with self._lock:
            repo = self.get_repo(repo_id, repo_type)
            out: list[Commit] = []
            commit: Commit | None = self._commit_for(repo, revision)
            while commit is not None:
                out.append(commit)
                commit = repo.commits[commit.parent] if commit.parent else None
            return out

    # ---------------------------------------------------------------- state (callers hold the lock)
    def _content(self, entry: FileEntry) -> bytes:
        if entry.lfs_sha256 is not None:
            return self.lfs_store[entry.lfs_sha256]
        assert entry.content is not None
        return entry.content

    def _repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        # Like the Hub, a private repo is indistinguishable from a missing one without credentials.
        if repo is None or (repo.private and user is None):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit_for(self, repo: Repo, revision: str) -> Commit:
        rev = revision
        for prefix, table in (("refs/heads/", repo.branches), ("refs/tags/", repo.tags)):
            if rev.startswith(prefix) and rev[len(prefix) :] in table:
                return repo.commits[table[rev[len(prefix) :]]]
        if rev in repo.branches:
            return repo.commits[repo.branches[rev]]
        if rev in repo.tags:
            return repo.commits[repo.tags[rev]]
        if re.fullmatch(r"[0-9a-f]{7,40}", rev):
            matches = [c for oid, c in repo.commits.items() if oid.startswith(rev)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _new_commit(
        self, repo: Repo, parent: str | None, files: dict[str, FileEntry], title: str, message: str, user: str
    ) -> Commit:
        self._counter += 1
        date = _now()
        tree = hashlib.sha1()
        for path in sorted(files):
            tree.update(f"{path}\0{files[path].git_oid}\n".encode())
        # A real git commit hashes tree, parent, author, date and message; so does this one (plus a counter
        # so two identical commits in the same millisecond still differ).
        payload = f"tree {tree.hexdigest()}\nparent {parent}\nauthor {user} {date} {self._counter}\n\n{title}\n{message}"
        oid = hashlib.sha1(payload.encode()).hexdigest()
        commit = Commit(oid, parent, title, message, date, user, dict(files))
        repo.commits[oid] = commit
        return commit

    def _entry_for_bytes(self, content: bytes) -> FileEntry:
        return FileEntry(size=len(content), git_oid=git_blob_oid(content), content=content)

    def _entry_for_lfs(self, sha256: str, size: int) -> FileEntry:
        pointer = lfs_pointer(sha256, size)
        return FileEntry(
            size=size, git_oid=git_blob_oid(pointer), lfs_sha256=sha256, pointer_size=len(pointer)
        )

    def _lfs_patterns(self, commit: Commit) -> list[str]:
        entry = commit.files.get(".gitattributes")
        if entry is None:
            return []
        patterns = []
        for line in self._content(entry).decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)


def _matches(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path, p) or ("/" not in p and fnmatch.fnmatch(name, p)) for p in patterns)


def parse_card_data(readme: bytes) -> dict[str, Any] | None:
    """The YAML front matter of a README (`---` ... `---`) as a dict, like the Hub's `cardData`."""
    text = readme.decode("utf-8", errors="replace").replace("\r\n", "\n")
    match = re.match(r"^---\n(.*?)\n?---(?:\n|$)", text, flags=re.S)
    if match is None:
        return None
    data = yaml.safe_load(match.group(1))
    return data if isinstance(data, dict) else None


def validate_card_data(data: dict[str, Any], repo_type: str) -> list[str]:
    """The checks the Hub applies to `configs:` of a dataset card (abridged)."""
    errors: list[str] = []
    configs = data.get("configs")
    if repo_type != "dataset" or configs is None:
        return errors
    if not isinstance(configs, list):
        return ['"configs" must be a list']
    names, defaults = [], 0
    for i, cfg in enumerate(configs):
        if not isinstance(cfg, dict) or not isinstance(cfg.get("config_name"), str):
            errors.append(f'"configs[{i}].config_name" is required and must be a string')
            continue
        names.append(cfg["config_name"])
        defaults += bool(cfg.get("default"))
        files = cfg.get("data_files")
        items = files if isinstance(files, list) else [files]
        for item in items:
            ok = isinstance(item, str) or (
                isinstance(item, dict)
                and isinstance(item.get("split"), str)
                and isinstance(item.get("path"), str | list)
            )
            if files is not None and not ok:
                errors.append(
                    f'"configs[{i}].data_files" must be a path, a list of paths or of {{split, path}}'
                )
                break
    if len(set(names)) != len(names):
        errors.append('"configs" has duplicate config_name values')
    if defaults > 1:
        errors.append('"configs" has more than one config with "default: true"')
    return errors


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API = r"^/api/(?P<kind>models|datasets|spaces)/" + _REPO
# (method, pattern over the *raw* path, handler). More specific patterns come first.
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), h)
    for m, p, h in [
        ("GET", r"^/api/whoami-v2$", "whoami"),
        ("POST", r"^/api/repos/create$", "create_repo"),
        ("DELETE", r"^/api/repos/delete$", "delete_repo"),
        ("POST", r"^/api/validate-yaml$", "validate_yaml"),
        ("GET", _API + r"/refs$", "refs"),
        ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$", "tree"),
        ("POST", _API + r"/paths-info/(?P<rev>[^/]+)$", "paths_info"),
        ("POST", _API + r"/preupload/(?P<rev>[^/]+)$", "preupload"),
        ("POST", _API + r"/commit/(?P<rev>[^/]+)$", "commit"),
        ("GET", _API + r"/commits/(?P<rev>[^/]+)$", "list_commits"),
        ("POST", _API + r"/branch/(?P<branch>[^/]+)$", "create_branch"),
        ("DELETE", _API + r"/branch/(?P<branch>[^/]+)$", "delete_branch"),
        ("POST", _API + r"/tag/(?P<rev>[^/]+)$", "create_tag"),
        ("DELETE", _API + r"/tag/(?P<tag>[^/]+)$", "delete_tag"),
        ("PUT", _API + r"/settings$", "settings"),
        ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?$", "repo_info"),
        ("GET", r"^/api/(?P<kind>models|datasets|spaces)/[^/]+(?:/.*)?$", "repo_not_found"),
        (
            "POST",
            r"^/(?:(?P<prefix>datasets|spaces)/)?" + _REPO + r"\.git/info/lfs/objects/batch$",
            "lfs_batch",
        ),
        ("PUT", r"^/__lfs/upload/(?P<oid>[0-9a-f]{64})$", "lfs_upload"),
        (
            "GET",
            r"^/(?:(?P<prefix>datasets|spaces)/)?" + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$",
            "resolve",
        ),
        (
            "HEAD",
            r"^/(?:(?P<prefix>datasets|spaces)/)?" + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$",
            "resolve",
        ),
        ("GET", r"^/(?:(?:datasets|spaces)/)?[^/]+/resolve/.*$", "repo_not_found"),
        ("HEAD", r"^/(?:(?:datasets|spaces)/)?[^/]+/resolve/.*$", "repo_not_found"),
    ]
]


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"  # keep-alive: httpx reuses connections
    server_version = "PathInsightTestHub/1.0"

    # -------------------------------------------------------------- plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class' name
        pass  # requests go to the hub's structured log instead of stderr

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        self.raw_path = split.path
        self.query = parse_qs(split.query, keep_blank_values=True)
        self.body = self._read_body()
        self.user: str | None = None
        self.recorded = False
        try:
            self.user = self._authenticate()
            for method, pattern, name in ROUTES:
                match = pattern.match(self.raw_path)
                if match and method == self.command:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    getattr(self, "h_" + name)(**params)
                    break
            else:
                raise HubError(404, f"no route for {self.command} {self.raw_path} on the test hub")
        except HubError as err:
            self._send_error(err)
        except Exception as exc:  # a server bug: answer 500 so the client fails loudly, and keep serving
            if self.recorded:
                raise  # the response was already (partly) sent: nothing sane left to answer
            self._send_error(HubError(500, f"test hub internal error: {exc!r}"))

    def _record(self, status: int) -> None:
        # Recorded *before* the response goes out, so a test that got its answer always sees the entry.
        self.recorded = True
        self.hub._record(
            RequestRecord(self.command, unquote(self.raw_path), self.query, status, self.user is not None)
        )

    def _authenticate(self) -> str | None:
        header = self.headers.get("Authorization")
        if not header:
            return None
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        user = self.hub.tokens.get(token)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _require_user(self) -> str:
        if self.user is None:
            raise HubError(401, "You must be authenticated to do this (send Authorization: Bearer <token>)")
        return self.user

    def _send(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        content_length: int | None = None,
    ) -> int:
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        return status

    def _json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> int:
        return self._send(status, json.dumps(data).encode(), headers=headers)

    def _send_error(self, err: HubError) -> int:
        headers = dict(err.headers)
        # Header values must be latin-1: escape anything else (paths may be unicode).
        headers["X-Error-Message"] = (
            err.message.splitlines()[0][:300].encode("ascii", "backslashreplace").decode()
        )
        if err.code:
            headers["X-Error-Code"] = err.code
        return self._json({"error": err.message}, err.status, headers)

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as exc:
            raise HubError(400, f"invalid JSON body: {exc}") from None

    def _flag(self, name: str) -> bool:
        return self.query.get(name, ["false"])[-1].lower() in ("1", "true")

    def _base_url(self) -> str:
        return self.hub.url

    # -------------------------------------------------------------- JSON shapes
    def _file_json(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict[str, Any]:
        entry = commit.files[path]
        out: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
        if entry.lfs_sha256 is not None:
            out["lfs"] = {"oid": entry.lfs_sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        if expand:
            out["lastCommit"] = self._last_commit_json(repo, commit, lambda c: c.files.get(path) == entry)
        return out

    def _dir_json(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict[str, Any]:
        def subtree(c: Commit) -> list[tuple[str, str]]:
            return sorted((p, e.git_oid) for p, e in c.files.items() if p.startswith(path + "/"))

        mine = subtree(commit)
        oid = hashlib.sha1(json.dumps(mine).encode()).hexdigest()
        out: dict[str, Any] = {"type": "directory", "oid": oid, "size": 0, "path": path}
        if expand:
            out["lastCommit"] = self._last_commit_json(repo, commit, lambda c: subtree(c) == mine)
        return out

    @staticmethod
    def _last_commit_json(repo: Repo, commit: Commit, unchanged: Any) -> dict[str, str]:
        # Walk back while the entry is unchanged: the oldest such commit is the one that last touched it.
        last = commit
        while last.parent is not None and unchanged(repo.commits[last.parent]):
            last = repo.commits[last.parent]
        return {"id": last.oid, "title": last.title, "date": last.date}

    @staticmethod
    def _dirs(commit: Commit) -> set[str]:
        dirs = set()
        for path in commit.files:
            parts = path.split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return dirs

    def _repo_url(self, repo: Repo) -> str:
        return f"{self._base_url()}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    # -------------------------------------------------------------- account & repos
    def h_whoami(self) -> int:
        user = self._require_user()
        return self._json(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "email": None,
                "isPro": False,
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "test-token", "role": "write"},
                },
            }
        )

    def h_create_repo(self) -> int:
        user = self._require_user()
        payload = self._json_body()
        name, org = payload.get("name"), payload.get("organization") or user
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIX or not isinstance(name, str) or not NAME_RE.match(name):
            raise HubError(400, f"invalid repo name or type: {name!r} ({repo_type})")
        if not NAME_RE.match(org) or "--" in name or name.endswith((".git", ".")):
            raise HubError(400, f"invalid repo id: {org}/{name}")
        repo_id = f"{org}/{name}"
        private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
        with self.hub._lock:
            if (repo_type, repo_id) in self.hub.repos:
                url = f"{self._base_url()}/{URL_PREFIX[repo_type]}{repo_id}"
                return self._json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
            repo = Repo(repo_type, repo_id, private, _now())
            # Like the Hub: a new repo starts with one commit holding the default .gitattributes.
            files = {".gitattributes": self.hub._entry_for_bytes(DEFAULT_GITATTRIBUTES.encode())}
            commit = self.hub._new_commit(repo, None, files, "initial commit", "", user)
            repo.branches["main"] = commit.oid
            self.hub.repos[(repo_type, repo_id)] = repo
        return self._json({"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def h_delete_repo(self) -> int:
        self._require_user()
        payload = self._json_body()
        name, org = payload.get("name"), payload.get("organization") or self.user
        repo_type = payload.get("type") or "model"
        with self.hub._lock:
            if self.hub.repos.pop((repo_type, f"{org}/{name}"), None) is None:
                raise HubError(404, f"Repository {org}/{name} not found", "RepoNotFound")
        return self._json({})

    def h_settings(self, kind: str, repo: str) -> int:
        self._require_user()
        payload = self._json_body()
        with self.hub._lock:
            r = self.hub._repo(KINDS[kind], repo, self.user)
            if "private" in payload:
                r.private = bool(payload["private"])
            if "visibility" in payload:
                r.private = payload["visibility"] != "public"
        return self._json({})

    def h_validate_yaml(self) -> int:
        payload = self._json_body()
        content = payload.get("content", "")
        try:
            data = parse_card_data(content.encode())
        except yaml.YAMLError as exc:
            return self._json({"errors": [{"message": f"Invalid YAML: {exc}"}], "warnings": []}, 400)
        if data is None:
            return self._json(
                {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}
            )
        errors = validate_card_data(data, payload.get("repoType") or "model")
        return self._json(
            {"errors": [{"message": e} for e in errors], "warnings": []}, 400 if errors else 200
        )

    def h_repo_not_found(self, kind: str | None = None) -> int:
        raise HubError(404, f"Repository not found: {unquote(self.raw_path)}", "RepoNotFound")

    def h_repo_info(self, kind: str, repo: str, rev: str = "main") -> int:
        with self.hub._lock:
            r = self.hub._repo(KINDS[kind], repo, self.user)
            commit = self.hub._commit_for(r, rev)
            blobs = self._flag("blobs")
            siblings = []
            for path in sorted(commit.files):
                entry = commit.files[path]
                sib: dict[str, Any] = {"rfilename": path}
                if blobs:
                    sib.update(size=entry.size, blobId=entry.git_oid)
                    if entry.lfs_sha256 is not None:
                        sib["lfs"] = {
                            "sha256": entry.lfs_sha256,
                            "size": entry.size,
                            "pointerSize": entry.pointer_size,
                        }
                siblings.append(sib)
            card = None
            if "README.md" in commit.files:
                try:
                    card = parse_card_data(self.hub._content(commit.files["README.md"]))
                except yaml.YAMLError:
                    card = None
            namespace = repo.split("/")[0]
            info: dict[str, Any] = {
                "_id": hashlib.sha1(f"{r.repo_type}/{repo}".encode()).hexdigest()[:24],
                "id": repo,
                "author": namespace,
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": r.created_at,
                "private": r.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": list((card or {}).get("tags") or []),
                "siblings": siblings,
                "usedStorage": sum(e.size for e in commit.files.values()),
            }
            if card is not None:
                info["cardData"] = card
            if r.repo_type == "model":
                info["modelId"] = repo
                if card and card.get("library_name"):
                    info["library_name"] = card["library_name"]
                if card and card.get("pipeline_tag"):
                    info["pipeline_tag"] = card["pipeline_tag"]
            expand = self.query.get("expand") or self.query.get("expand[]")
            if expand:
                info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        return self._json(info)

    # -------------------------------------------------------------- refs, branches, tags, history
    def h_refs(self, kind: str, repo: str) -> int:
        with self.hub._lock:
            r = self.hub._repo(KINDS[kind], repo, self.user)
            data: dict[str, Any] = {
                "branches": [
                    {"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in r.branches.items()
                ],
                "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in r.tags.items()],
                "converts": [],
            }
            if self._flag("include_prs"):
                data["pullRequests"] = []
        return self._json(data)

    def h_create_branch(self, kind: str, repo: str, branch: str) -> int:
        self._require_user()
        payload = self._json_body()
        with self.hub._lock:
            r = self.hub._repo(KINDS[kind], repo, self.user)
            if branch in r.branches:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            start = self.hub._commit_for(r, payload.get("startingPoint") or "main")
            r.branches[branch] = start.oid
        return self._json({})

    def h_delete_branch(self, kind: str, repo: str, branch: str) -> int:
        self._require_user()
        with self.hub._lock:
            r = self.hub._repo(KINDS[kind], repo, self.user)
            if branch == "main":
                raise HubError(403, "the main branch cannot be deleted")
            if r.branches.pop(branch, None) is None:
                raise HubError(404, f"branch {branch} not found", "RevisionNotFound")
        return self._json({})

    def h_create_tag(self, kind: str, repo: str, rev: str) -> int:
        self._require_user()
        payload = self._json_body()
        tag = payload.get("tag")
        with self.hub._lock:
            r = self.hub._repo(KINDS[kind], repo, self.user)
            if not isinstance(tag, str) or not tag:
                raise HubError(400, "missing tag name")
            if tag in r.tags:
                raise HubError(409, f"Tag {tag} already exists")
            r.tags[tag] = self.hub._commit_for(r, rev).oid
        return self._json({})

    def h_delete_tag(self, kind: str, repo: str, tag: str) -> int:
        self._require_user()
        with self.hub._lock:
            r = self.hub._repo(KINDS[kind], repo, self.user)
            if r.tags.pop(tag, None) is None:
                raise HubError(404, f"Tag {tag} not found", "RevisionNotFound")
        return self._json({})

    def h_list_commits(self, kind: str, repo: str, rev: str) -> int:
        with self.hub._lock:
            r = self.hub._repo(KINDS[kind], repo, self.user)
            commit: Commit | None = self.hub._commit_for(r, rev)
            items = []
            while commit is not None:
                items.append(
                    {
                        "id": commit.oid,
                        "title": commit.title,
                        "message": commit.message,
                        "authors": [{"user": commit.author}],
                        "date": commit.date,
                    }
                )
                commit = r.commits[commit.parent] if commit.parent else None
        return self._json(items)

    # -------------------------------------------------------------- listings
    def h_tree(self, kind: str, repo: str, rev: str, path: str = "") -> int:
        path = path.strip("/")
        recursive, expand = self._flag("recursive"), self._flag("expand")
        with self.hub._lock:
            r = self.hub._repo(KINDS[kind], repo, self.user)
            commit = self.hub._commit_for(r, rev)
            dirs = self._dirs(commit)
            if path and path not in dirs:
                if path in commit.files:
                    raise HubError(404, f"{path} is a file, not a directory", "EntryNotFound")
                raise HubError(404, f"Entry {path} not found at {rev}", "EntryNotFound")
            prefix = path + "/" if path else ""

            def wanted(p: str) -> bool:
                return p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])

            names = [("directory", d) for d in dirs if wanted(d)] + [
                ("file", f) for f in commit.files if wanted(f)
            ]
            names.sort(key=lambda item: item[1])
            page_size = max(1, min(self.hub.tree_page_size, int(self.query.get("limit", ["1000"])[-1])))
            start = (
                int(base64.urlsafe_b64decode(self.query["cursor"][-1]).decode())
                if "cursor" in self.query
                else 0
            )
            page = names[start : start + page_size]
            items = [
                self._dir_json(r, commit, p, expand)
                if t == "directory"
                else self._file_json(r, commit, p, expand)
                for t, p in page
            ]
        headers = {}
        if start + page_size < len(names):
            cursor = base64.urlsafe_b64encode(str(start + page_size).encode()).decode()
            query = {k: v[-1] for k, v in self.query.items() if k != "cursor"} | {"cursor": cursor}
            headers["Link"] = f'<{self._base_url()}{self.raw_path}?{urlencode(query)}>; rel="next"'
        return self._json(items, headers=headers)

    def h_paths_info(self, kind: str, repo: str, rev: str) -> int:
        if "json" in self.headers.get("Content-Type", ""):
            payload = self._json_body()
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(self.body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[-1].lower() in ("1", "true")
        with self.hub._lock:
            r = self.hub._repo(KINDS[kind], repo, self.user)
            commit = self.hub._commit_for(r, rev)
            dirs = self._dirs(commit)
            items = []
            for p in dict.fromkeys(p.strip("/") for p in (paths if isinstance(paths, list) else [paths])):
                if p in commit.files:
                    items.append(self._file_json(r, commit, p, expand))
                elif p in dirs:
                    items.append(self._dir_json(r, commit, p, expand))
        return self._json(items)

    # -------------------------------------------------------------- uploads
    def h_preupload(self, kind: str, repo: str, rev: str) -> int:
        self._require_user()
        payload = self._json_body()
        if self._flag("create_pr"):
            raise HubError(400, "pull requests are not supported by the test hub")
        with self.hub._lock:
            r = self.hub._repo(KINDS[kind], repo, self.user)
            commit = self.hub._commit_for(r, rev)
            patterns = self.hub._lfs_patterns(commit)
            ignore = [
                line.strip()
                for line in (payload.get("gitIgnore") or "").splitlines()
                if line.strip() and not line.startswith("#")
            ]
            out = []
            for item in payload.get("files", []):
                path, size = item["path"], int(item["size"])
                sample = base64.b64decode(item.get("sample", ""))
                lfs = size >= LFS_THRESHOLD or b"\0" in sample or _matches(path, patterns)
                info: dict[str, Any] = {
                    "path": path,
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": _matches(path, ignore),
                }
                existing = commit.files.get(path)
                if existing is not None:
                    # Lets the client skip unchanged files: sha256 for LFS files, git blob sha1 otherwise.
                    info["oid"] = existing.lfs_sha256 if existing.is_lfs else existing.git_oid
                out.append(info)
        return self._json({"files": out, "commitOid": commit.oid})

    def h_lfs_batch(self, repo: str, prefix: str = "") -> int:
        self._require_user()
        payload = self._json_body()
        repo_type = {"": "model", "datasets": "dataset", "spaces": "space"}[prefix]
        if payload.get("operation") != "upload":
            raise HubError(400, "the test hub only serves LFS uploads (downloads go through /resolve)")
        objects = []
        with self.hub._lock:
            self.hub._repo(repo_type, repo, self.user)
            for obj in payload.get("objects", []):
                oid, size = str(obj.get("oid")), int(obj.get("size", -1))
                if not re.fullmatch(r"[0-9a-f]{64}", oid) or size < 0:
                    objects.append(
                        {"oid": oid, "size": size, "error": {"code": 422, "message": "invalid object"}}
                    )
                    continue
                item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                stored = self.hub.lfs_store.get(oid)
                if stored is None or len(stored) != size:
                    # A single-use upload URL, like the pre-signed S3 URL the Hub hands out.
                    ticket = secrets.token_hex(16)
                    self.hub._upload_tickets[ticket] = (oid, size)
                    href = f"{self._base_url()}/__lfs/upload/{oid}?{urlencode({'ticket': ticket})}"
                    item["actions"] = {"upload": {"href": href, "expires_at": "2099-01-01T00:00:00Z"}}
                objects.append(item)
        body = json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode()
        return self._send(200, body, content_type="application/vnd.git-lfs+json")

    def h_lfs_upload(self, oid: str) -> int:
        ticket = self.query.get("ticket", [""])[-1]
        with self.hub._lock:
            expected = self.hub._upload_tickets.pop(ticket, None)
        if expected is None or expected[0] != oid:
            raise HubError(403, "invalid or used upload ticket")
        if len(self.body) != expected[1] or hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not match oid {oid} / size {expected[1]}")
        with self.hub._lock:
            self.hub.lfs_store[oid] = self.body
        return self._send(200, b"", content_type="text/plain", headers={"ETag": f'"{oid[:32]}"'})

    def h_commit(self, kind: str, repo: str, rev: str) -> int:
        user = self._require_user()
        if self._flag("create_pr"):
            raise HubError(400, "pull requests are not supported by the test hub")
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise HubError(400, f"commit payload is not valid NDJSON: {exc}") from None
        header = next((ln["value"] for ln in lines if ln.get("key") == "header"), None)
        if not isinstance(header, dict) or not header.get("summary"):
            raise HubError(400, "commit payload needs a header with a summary")
        with self.hub._lock:
            r = self.hub._repo(KINDS[kind], repo, self.user)
            if rev not in r.branches:
                raise HubError(
                    404, f"Invalid rev id: {rev} (commits go to an existing branch)", "RevisionNotFound"
                )
            head = r.commits[r.branches[rev]]
            if header.get("parentCommit") and header["parentCommit"] != head.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for op in lines:
                key, value = op.get("key"), op.get("value") or {}
                if key == "header":
                    continue
                path = _check_path(value.get("path", ""), folder=key == "deletedFolder")
                if key == "file":
                    raw = value.get("content", "")
                    content = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                    files[path] = self.hub._entry_for_bytes(content)
                elif key == "lfsFile":
                    blob = self.hub.lfs_store.get(value.get("oid", ""))
                    if blob is None or ("size" in value and int(value["size"]) != len(blob)):
                        raise HubError(
                            400, f"LFS object for {path} was not uploaded (oid {value.get('oid')})"
                        )
                    files[path] = self.hub._entry_for_lfs(value["oid"], len(blob))
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    doomed = [p for p in files if p.startswith(path.rstrip("/") + "/")]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            commit = self.hub._new_commit(
                r, head.oid, files, header["summary"], header.get("description", ""), user
            )
            r.branches[rev] = commit.oid
            url = f"{self._repo_url(r)}/commit/{commit.oid}"
        return self._json({"success": True, "commitOid": commit.oid, "commitUrl": url, "hookOutput": ""})

    # -------------------------------------------------------------- downloads
    def h_resolve(self, repo: str, rev: str, path: str, prefix: str = "") -> int:
        repo_type = {"": "model", "datasets": "dataset", "spaces": "space"}[prefix]
        with self.hub._lock:
            r = self.hub._repo(repo_type, repo, self.user)
            commit = self.hub._commit_for(r, rev)
            entry = commit.files.get(path)
            if entry is None:
                raise HubError(
                    404, f"Entry not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": commit.oid}
                )
            content = self.hub._content(entry)
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if entry.lfs_sha256 is not None:
            headers.update(
                {
                    "ETag": f'"{entry.lfs_sha256}"',
                    "X-Linked-Etag": f'"{entry.lfs_sha256}"',
                    "X-Linked-Size": str(entry.size),
                }
            )
        else:
            headers["ETag"] = f'"{entry.git_oid}"'
        total = len(content)
        range_header = self.headers.get("Range")
        if range_header:
            span = _parse_range(range_header, total)
            if span is None:
                headers["Content-Range"] = f"bytes */{total}"
                return self._send(416, b"", content_type="text/plain", headers=headers)
            first, last = span
            headers["Content-Range"] = f"bytes {first}-{last}/{total}"
            return self._send(
                206, content[first : last + 1], content_type="application/octet-stream", headers=headers
            )
        return self._send(200, content, content_type="application/octet-stream", headers=headers)


def _check_path(path: str, *, folder: bool = False) -> str:
    clean = path.rstrip("/") if folder else path
    parts = clean.split("/")
    if not clean or clean.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise HubError(400, f"invalid path in repo: {path!r}")
    return clean


def _parse_range(header: str, total: int) -> tuple[int, int] | None:
    """First span of a `bytes=` Range header as inclusive (first, last), or None if unsatisfiable."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*(?:,.*)?", header)
    if match is None:
        return None
    start, end = match.groups()
    if start == "":
        if end == "":
            return None
        first, last = max(0, total - int(end)), total - 1
    else:
        first, last = int(start), min(int(end) if end else total - 1, total - 1)
    if first >= total or first > last:
        return None
    return first, last


__all__ = ["HubServer", "RequestRecord", "HubError", "parse_card_data", "git_blob_oid"]
