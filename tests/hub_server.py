"""In-memory, standard-library-only stand-in for the Hugging Face Hub HTTP API, for tests.

The real ``huggingface_hub`` client (2.x, httpx2 based) and ``transformers`` talk to it when
``HF_ENDPOINT`` points at :attr:`HubServer.url` and Xet is disabled (``HF_HUB_DISABLE_XET=1``).
The endpoints and JSON shapes below were taken from the installed client's source
(``hf_api.py``, ``_commit_api.py``, ``lfs.py``, ``file_download.py``, ``_snapshot_download.py``).
``tests/conftest_hub.py`` has the ``hub_server`` fixture that starts it and points the client at it.

Covered (model, dataset and space repos, ids of the form ``namespace/name``):

* ``GET  /api/whoami-v2``
* ``POST /api/repos/create`` (409 when the repo exists, so ``exist_ok=True`` works),
  ``DELETE /api/repos/delete``
* ``GET  /api/{type}s/{repo}`` and ``/api/{type}s/{repo}/revision/{rev}`` (repo info: ``sha``,
  ``siblings``, ``private``...; ``?blobs=true`` adds sizes, blob ids and LFS info)
* ``GET  /api/{type}s/{repo}/tree/{rev}[/{path}]`` (``recursive``), ``POST .../paths-info/{rev}``
* ``GET  /api/{type}s/{repo}/refs``, ``GET .../commits/{rev}``
* ``POST`` / ``DELETE /api/{type}s/{repo}/branch/{branch}`` (``startingPoint``; 409 if it exists)
* ``POST /api/validate-yaml`` (only checks that a ``---`` front matter block is closed)
* ``POST /api/{type}s/{repo}/preupload/{rev}``: files larger than ``lfs_threshold`` bytes (or
  matching ``lfs_patterns``) get ``uploadMode: "lfs"``, the others ``"regular"``
* ``POST /{repo}.git/info/lfs/objects/batch`` (upload operation, ``basic`` transfer, plus the
  HF ``multipart`` transfer when ``multipart_chunk_size`` is set). The upload, part, completion
  and verify URLs point back at this server under ``/_lfs/{ticket}``: like presigned storage
  URLs they need no Authorization header, the ticket is the credential. Objects already stored
  for the repo come back without ``actions``, so the client skips their upload.
* ``POST /api/{type}s/{repo}/commit/{rev}`` (NDJSON: ``header``, ``file`` with base64 content,
  ``lfsFile`` referring to an uploaded object, ``deletedFile``, ``deletedFolder``;
  ``parentCommit`` is checked, 412 if it is not the branch head). Every accepted commit gets a
  fresh 40-hex id, even when its content is identical to the previous one.
* ``GET`` / ``HEAD /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` (git blob
  id), ``Content-Length``, and for LFS files ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``;
  single ``Range: bytes=a-b`` requests (the client uses them to resume downloads). A missing
  file is a 404 with ``X-Error-Code: EntryNotFound`` (the client's ``EntryNotFoundError``), a
  missing revision ``RevisionNotFound``, a missing or hidden repo ``RepoNotFound``.
* ``GET  /api/agent-harnesses`` (empty registry; the client fetches it for its user agent)
* Tokens: ``Authorization: Bearer <token>`` checked against the tokens given to the server.
  A token that is not known is a 401 on every request (as on the real Hub). Writes need a
  token (401 without one), a write token (403 for a read-only one) and a namespace that is the
  user's or one of their orgs (403 otherwise). Public repos are readable anonymously; private
  ones only by their namespace's user or org members (401 anonymous, 404 otherwise, both with
  ``X-Error-Code: RepoNotFound``, as the Hub hides private repos).
* Fault injection: :meth:`HubServer.fail_next` (answer a status N times),
  :meth:`HubServer.drop_next` (close the connection without answering, N times).
* Seeding without HTTP: :meth:`HubServer.create_repo`, :meth:`HubServer.commit_files`,
  :meth:`HubServer.add_token`.
* Inspection: :meth:`HubServer.files`, :meth:`HubServer.commits`, :meth:`HubServer.branches`,
  :attr:`HubServer.requests` / :attr:`HubServer.request_log`, :attr:`HubServer.errors`.

Not covered (such requests get a 501 JSON error, which the client does not retry): Xet storage
(the client must run with ``HF_HUB_DISABLE_XET=1``), gated or disabled repos, pull requests and
``refs/pr/*`` (``create_pr=True`` is refused with 400), tags, repo settings and visibility
changes, moving/duplicating repos, ``CommitOperationCopy`` of LFS files across repos, Spaces
runtime, collections, discussions, inference, jobs, buckets, search and listing of repos,
pagination (every listing fits in one page), ``.gitignore`` handling in preupload
(``shouldIgnore`` is always false), ``cardData`` and other card-derived fields in repo info,
canonical single-segment repo ids (``gpt2``), LFS downloads through the batch API, OAuth. A new
repo starts with one empty commit (the real Hub adds a ``.gitattributes`` file), so
:meth:`HubServer.files` shows exactly what was uploaded. By default the preupload answer does
not report the remote blob ids of existing files, so re-uploading an unchanged folder makes a
new commit; with ``report_remote_oids=True`` it reports them and the client skips unchanged
files (and makes no commit at all when nothing changed), as against the real Hub.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import re
import secrets
import socket
import threading
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# Default tokens for tests: alice (member of "org") with a write and a read-only token, bob with a
# write token. Token values are fake; they only mean something to this server.
DEFAULT_TOKENS: dict[str, dict[str, Any]] = {
    "hf_good": {"name": "alice", "orgs": ["org"], "write": True},
    "hf_read": {"name": "alice", "orgs": ["org"], "write": False},
    "hf_bob": {"name": "bob", "orgs": [], "write": True},
}

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
# Bounds on what one request may carry, so a misbehaving client cannot make the server loop or
# allocate without limit.
_MAX_HEADER_LINE = 64 * 1024
_MAX_CHUNKS = 1_000_000


def _now() -> str:
    """Current time in the one format the client's ``parse_datetime`` accepts."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_oid(data: bytes) -> str:
    """Git object id of a blob, which is what the Hub reports as a regular file's ``oid``/ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An HTTP error answer: status, message for the JSON body, optional ``X-Error-Code``."""

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = dict(headers or {})


@dataclass
class _Blob:
    data: bytes
    lfs: bool
    sha256: str = ""
    oid: str = ""  # git blob id: of the content for regular files, of the pointer for LFS files
    pointer_size: int = 0

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        if self.lfs:
            pointer = _LFS_POINTER.format(oid=self.sha256, size=len(self.data)).encode()
            self.oid = _git_blob_oid(pointer)
            self.pointer_size = len(pointer)
        else:
            self.oid = _git_blob_oid(self.data)


@dataclass
class _Commit:
    oid: str
    parent: str | None
    title: str
    description: str
    author: str
    date: str
    tree: dict[str, _Blob]
    written: dict[str, _Blob]
    deleted: list[str]


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]


@dataclass
class _Rule:
    substring: str
    method: str | None
    times: int
    status: int = 0


@dataclass
class _Ticket:
    repo_key: tuple[str, str]
    oid: str
    size: int
    parts: dict[int, bytes] = field(default_factory=dict)


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    user: dict[str, Any] | None


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json(data: Any, status: int = 200, headers: dict | None = None) -> _Response:
    return _Response(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})


class _ThreadingServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck handler never keeps the test process alive
    # Many short connections from parallel client threads (snapshot_download uses 8).
    request_queue_size = 64

    def __init__(self, hub: HubServer, address: tuple[str, int]):
        self.hub = hub
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so that httpx2 keeps connections alive; every answer carries a Content-Length.
    protocol_version = "HTTP/1.1"
    # Socket timeout: an idle keep-alive connection or a stalled upload ends after this long.
    timeout = 30
    server: _ThreadingServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle plus the
        # client's delayed ACK add ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.hub._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub._track(self.connection, add=False)

    def _handle(self) -> None:
        self.server.hub._dispatch(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: the request log is kept in HubServer.request_log (never with header values).
        pass


class HubServer:
    """In-memory Hub stand-in on ``127.0.0.1``, served from a daemon thread.

    Args:
        tokens: ``{token: {"name": user, "orgs": [org, ...], "write": bool}}``; defaults to
            :data:`DEFAULT_TOKENS`.
        lfs_threshold: files strictly larger than this many bytes are uploaded through LFS.
        lfs_patterns: fnmatch patterns of paths that always go through LFS (e.g. ``"*.safetensors"``).
        multipart_chunk_size: if set, LFS objects larger than this are uploaded with the HF
            multipart transfer in parts of this size; otherwise with a single PUT.
        report_remote_oids: report existing files' blob ids in the preupload answer, as the real
            Hub does, so the client skips unchanged files.
        max_body_bytes: requests with a larger body get a 413.
        port: port to bind on 127.0.0.1; 0 picks a free one.
    """

    def __init__(
        self,
        tokens: dict[str, dict[str, Any]] | None = None,
        *,
        lfs_threshold: int = 10 * 1024,
        lfs_patterns: tuple[str, ...] = (),
        multipart_chunk_size: int | None = None,
        report_remote_oids: bool = False,
        max_body_bytes: int = 512 * 1024 * 1024,
        port: int = 0,
    ) -> None:
        self.tokens: dict[str, dict[str, Any]] = {
            k: dict(v) for k, v in (DEFAULT_TOKENS if tokens is None else tokens).items()
        }
        self.lfs_threshold = lfs_threshold
        self.lfs_patterns = tuple(lfs_patterns)
        self.multipart_chunk_size = multipart_chunk_size
        self.report_remote_oids = report_remote_oids
        self.max_body_bytes = max_body_bytes
        self._port = port
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._tickets: dict[str, _Ticket] = {}
        self._fail_rules: list[_Rule] = []
        self._drop_rules: list[_Rule] = []
        self._log: list[dict[str, Any]] = []
        self._errors: list[str] = []
        self._connections: set[socket.socket] = set()
        self._counter = itertools.count(1)
        self._httpd: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> HubServer:
        """Bind 127.0.0.1 (port 0 = ephemeral) and serve from a daemon thread. Returns self."""
        if self._httpd is not None:
            raise RuntimeError("HubServer already started")
        self._httpd = _ThreadingServer(self, ("127.0.0.1", self._port))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-stand-in", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close open connections and the listening socket; idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()  # returns once serve_forever has left its loop
        # Keep-alive connections would otherwise keep handler threads blocked on a read until
        # their socket timeout: shut them so every handler thread ends now.
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._httpd is None:
            raise RuntimeError("HubServer not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """Base URL to use as ``HF_ENDPOINT``, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ test-side API

    def add_token(self, token: str, name: str, orgs: list[str] | tuple[str, ...] = (), write: bool = True) -> None:
        """Register (or replace) a token for user ``name``."""
        with self._lock:
            self.tokens[token] = {"name": name, "orgs": list(orgs), "write": write}

    def fail_next(self, path_substring: str, status: int = 500, times: int = 1, method: str | None = None) -> None:
        """Answer ``status`` (JSON error body) to the next ``times`` requests whose path contains
        ``path_substring`` (and whose method is ``method``, if given); then behave normally.
        The request body is read first, so the connection stays usable."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._fail_rules.append(_Rule(path_substring, method.upper() if method else None, times, status))

    def drop_next(self, path_substring: str, times: int = 1, method: str | None = None) -> None:
        """For the next ``times`` matching requests, read the headers and about half of the body,
        then close the connection without answering (a connection lost mid-request)."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._drop_rules.append(_Rule(path_substring, method.upper() if method else None, times))

    def clear_faults(self) -> None:
        """Forget the pending :meth:`fail_next` / :meth:`drop_next` rules."""
        with self._lock:
            self._fail_rules.clear()
            self._drop_rules.clear()

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request received so far (path as sent, without query)."""
        with self._lock:
            return [(e["method"], e["path"]) for e in self._log]

    @property
    def request_log(self) -> list[dict[str, Any]]:
        """Every request: ``method``, ``path``, ``query``, ``status`` (None if dropped) and
        ``user`` (the authenticated user's name or None). Token values are never recorded."""
        with self._lock:
            return [dict(e) for e in self._log]

    def reset_log(self) -> None:
        """Empty the request log."""
        with self._lock:
            self._log.clear()

    @property
    def errors(self) -> list[str]:
        """Tracebacks of unexpected exceptions in the stand-in (answered with a 500)."""
        with self._lock:
            return list(self._errors)

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False) -> None:
        """Create a repo directly (no HTTP, no auth), e.g. to seed another user's repo."""
        with self._lock:
            self._new_repo(repo_type, repo_id, private)

    def commit_files(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        revision: str = "main",
        repo_type: str = "model",
        message: str = "seed",
        author: str = "seed",
    ) -> str:
        """Commit ``files`` directly (no HTTP, no auth), creating the repo if needed; returns the
        commit id. Files are stored as LFS or regular by the same rule as uploads."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id)) or self._new_repo(repo_type, repo_id, False)
            if revision not in repo.branches:
                raise KeyError(f"no branch {revision!r} in {repo_id}")
            written = {p: _Blob(bytes(d), self._is_lfs(p, len(d))) for p, d in files.items()}
            return self._commit(repo, revision, message, "", author, written, []).oid

    def has_repo(self, repo_id: str, repo_type: str = "model") -> bool:
        """Whether the repo exists."""
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """All files of the repo at ``revision`` (branch or commit id): ``{path: bytes}``."""
        with self._lock:
            commit = self._resolve(self._get_repo(repo_type, repo_id), revision)
            return {p: b.data for p, b in sorted(commit.tree.items())}

    def commits(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[dict[str, Any]]:
        """History of ``revision``, oldest first (the repo-creation commit included). Each entry:
        ``oid``, ``parent``, ``message`` (the summary), ``description``, ``author``, ``date``,
        ``files`` (``{path: bytes}`` written by that commit) and ``deleted`` (paths)."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            out = []
            commit: _Commit | None = self._resolve(repo, revision)
            while commit is not None:
                out.append(
                    {
                        "oid": commit.oid,
                        "parent": commit.parent,
                        "message": commit.title,
                        "description": commit.description,
                        "author": commit.author,
                        "date": commit.date,
                        "files": {p: b.data for p, b in commit.written.items()},
                        "deleted": list(commit.deleted),
                    }
                )
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return out[::-1]

    def branches(self, repo_id: str, repo_type: str = "model") -> dict[str, str]:
        """``{branch: head commit id}``."""
        with self._lock:
            return dict(self._get_repo(repo_type, repo_id).branches)

    def is_lfs(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bool:
        """Whether ``path`` is stored as an LFS file at ``revision``."""
        with self._lock:
            return self._resolve(self._get_repo(repo_type, repo_id), revision).tree[path].lfs

    # ------------------------------------------------------------------ storage internals

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r}")
        return repo

    def _new_repo(self, repo_type: str, repo_id: str, private: bool) -> _Repo:
        if repo_type not in _URL_PREFIX:
            raise ValueError(f"unknown repo type {repo_type!r}")
        if (repo_type, repo_id) in self._repos:
            raise ValueError(f"repo {repo_id!r} exists")
        repo = _Repo(repo_type, repo_id, private, _now())
        self._repos[(repo_type, repo_id)] = repo
        # Repos start with one empty commit so that "main" resolves, as on the Hub.
        self._commit(repo, "main", "initial commit", "", repo.namespace, {}, [], new_branch=True)
        return repo

    def _new_oid(self, *parts: str) -> str:
        # A counter in the hash makes every commit id unique, even for identical content.
        return hashlib.sha1("\0".join((str(next(self._counter)), *parts)).encode()).hexdigest()

    def _commit(
        self,
        repo: _Repo,
        branch: str,
        title: str,
        description: str,
        author: str,
        written: dict[str, _Blob],
        deleted: list[str],
        *,
        new_branch: bool = False,
    ) -> _Commit:
        parent = None if new_branch else repo.branches[branch]
        tree = dict(repo.commits[parent].tree) if parent else {}
        for path in deleted:
            tree = {p: b for p, b in tree.items() if p != path and not p.startswith(path.rstrip("/") + "/")}
        tree.update(written)
        oid = self._new_oid(repo.repo_id, branch, parent or "", title)
        commit = _Commit(oid, parent, title, description, author, _now(), tree, written, deleted)
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        return commit

    def _resolve(self, repo: _Repo, revision: str) -> _Commit:
        if revision in repo.branches:
            return repo.commits[repo.branches[revision]]
        if revision.startswith("refs/heads/") and revision[11:] in repo.branches:
            return repo.commits[repo.branches[revision[11:]]]
        if revision in repo.commits:
            return repo.commits[revision]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _is_lfs(self, path: str, size: int) -> bool:
        if size == 0:
            return False
        return size > self.lfs_threshold or any(fnmatch.fnmatch(path, pat) for pat in self.lfs_patterns)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # ------------------------------------------------------------------ HTTP plumbing

    def _take_rule(self, rules: list[_Rule], method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in rules:
                if rule.substring in path and (rule.method is None or rule.method == method):
                    rule.times -= 1
                    if rule.times <= 0:
                        rules.remove(rule)
                    return rule
        return None

    def _dispatch(self, h: _Handler) -> None:
        method = h.command
        split = urlsplit(h.path)
        path = split.path
        entry: dict[str, Any] = {"method": method, "path": path, "query": split.query, "status": None, "user": None}
        with self._lock:
            self._log.append(entry)

        if self._take_rule(self._drop_rules, method, path) is not None:
            self._drop(h)
            return

        try:
            body = self._read_body(h)
        except HubError as err:
            h.close_connection = True  # the rest of the body is still unread
            self._send(h, method, entry, self._error_response(err))
            return
        except (OSError, ValueError):
            h.close_connection = True
            return

        rule = self._take_rule(self._fail_rules, method, path)
        if rule is not None:
            resp = _json({"error": f"Injected failure ({rule.status}) by the Hub stand-in"}, rule.status)
            self._send(h, method, entry, resp)
            return

        try:
            user = self._authenticate(h.headers)
            entry["user"] = user["name"] if user else None
            req = _Request(method, path, parse_qs(split.query), h.headers, body, user)
            resp = self._route(req)
        except HubError as err:
            resp = self._error_response(err)
        except Exception:  # a bug in the stand-in: answer, and keep the traceback for the test
            with self._lock:
                self._errors.append(traceback.format_exc())
            resp = _json({"error": "Internal error in the Hub stand-in (see HubServer.errors)"}, 500)
        self._send(h, method, entry, resp)

    @staticmethod
    def _error_response(err: HubError) -> _Response:
        headers = dict(err.headers)
        if err.error_code:
            headers["X-Error-Code"] = err.error_code
        # Header values must be one latin-1 line; the JSON body keeps the exact message.
        headers.setdefault("X-Error-Message", err.message.encode("ascii", "replace").decode().replace("\n", " "))
        return _json({"error": err.message}, err.status, headers)

    def _send(self, h: _Handler, method: str, entry: dict[str, Any], resp: _Response) -> None:
        entry["status"] = resp.status
        try:
            h.send_response(resp.status)
            headers = {"Content-Type": "application/octet-stream", **resp.headers}
            headers["Content-Length"] = headers.get("Content-Length", str(len(resp.body)))
            for key, value in headers.items():
                h.send_header(key, value)
            if h.close_connection:
                h.send_header("Connection", "close")
            h.end_headers()
            if method != "HEAD" and resp.body:
                h.wfile.write(resp.body)
            h.wfile.flush()
        except OSError:
            h.close_connection = True  # the client went away

    def _drop(self, h: _Handler) -> None:
        h.close_connection = True
        try:
            length = int(h.headers.get("Content-Length") or 0)
            if length > 1:
                h.rfile.read(min(length // 2, self.max_body_bytes))
            h.connection.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass

    def _read_body(self, h: _Handler) -> bytes:
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            for _ in range(_MAX_CHUNKS):
                line = h.rfile.readline(_MAX_HEADER_LINE)
                if not line:
                    raise ValueError("connection closed inside a chunked body")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailer section: lines until an empty one (bounded as well).
                    for _ in range(1024):
                        if h.rfile.readline(_MAX_HEADER_LINE) in (b"\r\n", b"\n", b""):
                            break
                    return b"".join(chunks)
                total += size
                if total > self.max_body_bytes:
                    raise HubError(413, "Request body too large for the Hub stand-in")
                chunks.append(h.rfile.read(size))
                h.rfile.readline(_MAX_HEADER_LINE)  # CRLF after the chunk data
            raise HubError(400, "Too many chunks")
        length = int(h.headers.get("Content-Length") or 0)
        if length > self.max_body_bytes:
            raise HubError(413, "Request body too large for the Hub stand-in")
        data = h.rfile.read(length) if length > 0 else b""
        if len(data) != length:
            raise ValueError("connection closed inside the body")
        return data

    # ------------------------------------------------------------------ auth

    def _authenticate(self, headers: Any) -> dict[str, Any] | None:
        auth = headers.get("Authorization")
        if not auth:
            return None
        scheme, _, token = auth.partition(" ")
        with self._lock:
            info = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if info is None:
            # Same message as the Hub: the client then does not mistake it for a missing repo.
            raise HubError(401, "Invalid credentials in Authorization header")
        return {"name": info["name"], "orgs": list(info.get("orgs", ())), "write": bool(info.get("write", True))}

    @staticmethod
    def _require_write(user: dict[str, Any] | None, namespace: str) -> dict[str, Any]:
        if user is None:
            raise HubError(401, "You must be authenticated to do this (no token was sent)")
        if not user["write"]:
            raise HubError(403, "This token has read-only access; a write token is needed")
        if namespace != user["name"] and namespace not in user["orgs"]:
            raise HubError(403, f"You don't have the rights to write to the '{namespace}' namespace")
        return user

    @staticmethod
    def _can_read(user: dict[str, Any] | None, repo: _Repo) -> bool:
        if not repo.private:
            return True
        return user is not None and (repo.namespace == user["name"] or repo.namespace in user["orgs"])

    def _repo_for(self, req: _Request, repo_type: str, repo_id: str, *, write: bool = False) -> _Repo:
        if write:
            self._require_write(req.user, repo_id.split("/")[0])
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or not self._can_read(req.user, repo):
            # The Hub does not tell a private repo from a missing one; anonymous callers get a 401.
            status = 401 if repo is not None and req.user is None else 404
            raise HubError(status, "Repository not found", "RepoNotFound")
        return repo

    # ------------------------------------------------------------------ routing

    def _route(self, req: _Request) -> _Response:
        segs = [unquote(s) for s in req.path.split("/")[1:]]
        m = req.method
        if segs[:1] == ["_lfs"] and len(segs) >= 2:
            return self._lfs_storage(req, segs[1], segs[2:])
        if segs[:1] == ["api"]:
            rest = segs[1:]
            if rest == ["whoami-v2"] and m == "GET":
                return self._whoami(req)
            if rest == ["repos", "create"] and m == "POST":
                return self._create_repo(req)
            if rest == ["repos", "delete"] and m == "DELETE":
                return self._delete_repo(req)
            if rest == ["validate-yaml"] and m == "POST":
                return self._validate_yaml(req)
            if rest == ["agent-harnesses"] and m == "GET":
                return _json({"standardEnvVars": [], "harnesses": {}})
            if len(rest) >= 3 and rest[0] in _REPO_TYPES:
                return self._repo_api(req, _REPO_TYPES[rest[0]], f"{rest[1]}/{rest[2]}", rest[3:])
        else:
            repo_type, body = "model", segs
            if segs and segs[0] in ("datasets", "spaces"):
                repo_type, body = _REPO_TYPES[segs[0]], segs[1:]
            if len(body) >= 4 and body[2] == "resolve" and m in ("GET", "HEAD"):
                return self._resolve_file(req, repo_type, f"{body[0]}/{body[1]}", body[3], "/".join(body[4:]))
            if body[2:] == ["info", "lfs", "objects", "batch"] and body[1].endswith(".git") and m == "POST":
                return self._lfs_batch(req, repo_type, f"{body[0]}/{body[1][:-4]}")
        raise HubError(501, f"Not implemented by the Hub stand-in: {m} {req.path}")

    def _repo_api(self, req: _Request, repo_type: str, repo_id: str, rest: list[str]) -> _Response:
        m = req.method
        if not rest and m == "GET":
            return self._repo_info(req, repo_type, repo_id, "main")
        if len(rest) == 2 and rest[0] == "revision" and m == "GET":
            return self._repo_info(req, repo_type, repo_id, rest[1])
        if len(rest) >= 2 and rest[0] == "tree" and m == "GET":
            return self._tree(req, repo_type, repo_id, rest[1], "/".join(rest[2:]))
        if len(rest) == 2 and rest[0] == "paths-info" and m == "POST":
            return self._paths_info(req, repo_type, repo_id, rest[1])
        if rest == ["refs"] and m == "GET":
            return self._refs(req, repo_type, repo_id)
        if len(rest) == 2 and rest[0] == "commits" and m == "GET":
            return self._list_commits(req, repo_type, repo_id, rest[1])
        if len(rest) == 2 and rest[0] == "branch" and m in ("POST", "DELETE"):
            return self._branch(req, repo_type, repo_id, rest[1])
        if len(rest) == 2 and rest[0] == "preupload" and m == "POST":
            return self._preupload(req, repo_type, repo_id, rest[1])
        if len(rest) == 2 and rest[0] == "commit" and m == "POST":
            return self._create_commit(req, repo_type, repo_id, rest[1])
        raise HubError(501, f"Not implemented by the Hub stand-in: {m} {req.path}")

    # ------------------------------------------------------------------ endpoints

    def _whoami(self, req: _Request) -> _Response:
        user = req.user
        if user is None:
            raise HubError(401, "You must be authenticated to call whoami (no token was sent)")
        role = "write" if user["write"] else "read"
        return _json(
            {
                "type": "user",
                "id": hashlib.sha1(user["name"].encode()).hexdigest()[:24],
                "name": user["name"],
                "fullname": user["name"].title(),
                "email": f"{user['name']}@example.invalid",
                "emailVerified": True,
                "isPro": False,
                "orgs": [{"type": "org", "name": org, "roleInOrg": "write"} for org in user["orgs"]],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test token", "role": role}},
            }
        )

    def _json_body(self, req: _Request) -> dict[str, Any]:
        try:
            data = json.loads(req.body or b"{}")
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from None
        if not isinstance(data, dict):
            raise HubError(400, "JSON body must be an object")
        return data

    def _create_repo(self, req: _Request) -> _Response:
        data = self._json_body(req)
        if req.user is None:
            raise HubError(401, "You must be authenticated to create a repo (no token was sent)")
        name = data.get("name")
        namespace = data.get("organization") or req.user["name"]
        repo_type = data.get("type") or "model"
        if not isinstance(name, str) or not _NAME_RE.match(name) or not _NAME_RE.match(str(namespace)):
            raise HubError(400, f"Invalid repo name: {namespace}/{name}")
        if repo_type not in _URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        self._require_write(req.user, namespace)
        repo_id = f"{namespace}/{name}"
        url = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}"
        private = data.get("visibility") == "private" if "visibility" in data else bool(data.get("private"))
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                # The client reads "url" from this 409 answer when exist_ok=True.
                msg = f"You already created this {repo_type} repo: {repo_id}"
                return _json({"error": msg, "url": url}, 409, {"X-Error-Message": msg})
            self._new_repo(repo_type, repo_id, private)
        return _json({"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _delete_repo(self, req: _Request) -> _Response:
        data = self._json_body(req)
        namespace = data.get("organization") or (req.user or {}).get("name", "")
        repo_type = data.get("type") or "model"
        repo_id = f"{namespace}/{data.get('name')}"
        self._require_write(req.user, namespace)
        with self._lock:
            self._repo_for(req, repo_type, repo_id)
            del self._repos[(repo_type, repo_id)]
        return _json({})

    def _validate_yaml(self, req: _Request) -> _Response:
        content = str(self._json_body(req).get("content", ""))
        lines = content.splitlines()
        if lines and lines[0].strip() == "---" and not any(line.strip() == "---" for line in lines[1:]):
            return _json({"errors": [{"message": "The YAML front matter is not closed by '---'"}]}, 400)
        return _json({"errors": [], "warnings": []})

    def _repo_info(self, req: _Request, repo_type: str, repo_id: str, revision: str) -> _Response:
        with self._lock:
            repo = self._repo_for(req, repo_type, repo_id)
            commit = self._resolve(repo, revision)
            blobs = req.query.get("blobs", ["false"])[0].lower() in ("1", "true")
            siblings = []
            for path, blob in sorted(commit.tree.items()):
                sib: dict[str, Any] = {"rfilename": path}
                if blobs:
                    sib.update(size=len(blob.data), blobId=blob.oid)
                    if blob.lfs:
                        sib["lfs"] = {"size": len(blob.data), "sha256": blob.sha256, "pointerSize": blob.pointer_size}
                siblings.append(sib)
            return _json(
                {
                    "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                    "id": repo_id,
                    "author": repo.namespace,
                    "sha": commit.oid,
                    "lastModified": commit.date,
                    "createdAt": repo.created_at,
                    "private": repo.private,
                    "gated": False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": siblings,
                }
            )

    @staticmethod
    def _tree_entry(path: str, blob: _Blob) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": blob.pointer_size}
        return entry

    @staticmethod
    def _folder_entry(tree: dict[str, _Blob], folder: str) -> dict[str, Any]:
        inside = sorted((p, b.oid) for p, b in tree.items() if p.startswith(folder + "/"))
        return {"type": "directory", "oid": hashlib.sha1(repr(inside).encode()).hexdigest(), "path": folder}

    def _tree(self, req: _Request, repo_type: str, repo_id: str, revision: str, folder: str) -> _Response:
        recursive = req.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        folder = folder.strip("/")
        with self._lock:
            commit = self._resolve(self._repo_for(req, repo_type, repo_id), revision)
            tree = commit.tree
            prefix = folder + "/" if folder else ""
            if folder and not any(p.startswith(prefix) for p in tree):
                raise HubError(404, f"Entry not found: {folder}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
            files: dict[str, _Blob] = {}
            folders: set[str] = set()
            for path, blob in tree.items():
                if not path.startswith(prefix):
                    continue
                rel = path[len(prefix) :]
                parts = rel.split("/")
                if len(parts) == 1 or recursive:
                    files[path] = blob
                # Folders below `folder`: only the first level unless recursive.
                depth = len(parts) - 1 if recursive else min(len(parts) - 1, 1)
                for i in range(1, depth + 1):
                    folders.add(prefix + "/".join(parts[:i]))
            out = [self._folder_entry(tree, f) for f in sorted(folders)]
            out += [self._tree_entry(p, b) for p, b in sorted(files.items())]
            return _json(out)

    def _paths_info(self, req: _Request, repo_type: str, repo_id: str, revision: str) -> _Response:
        ctype = (req.headers.get("Content-Type") or "").lower()
        if "json" in ctype:
            paths = self._json_body(req).get("paths", [])
        else:
            paths = parse_qs(req.body.decode()).get("paths", [])
        with self._lock:
            tree = self._resolve(self._repo_for(req, repo_type, repo_id), revision).tree
            out = []
            for path in paths:
                path = str(path).strip("/")
                if path in tree:
                    out.append(self._tree_entry(path, tree[path]))
                elif any(p.startswith(path + "/") for p in tree):
                    out.append(self._folder_entry(tree, path))
            return _json(out)

    def _refs(self, req: _Request, repo_type: str, repo_id: str) -> _Response:
        with self._lock:
            repo = self._repo_for(req, repo_type, repo_id)
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                for name, oid in sorted(repo.branches.items())
            ]
        return _json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _list_commits(self, req: _Request, repo_type: str, repo_id: str, revision: str) -> _Response:
        with self._lock:
            repo = self._repo_for(req, repo_type, repo_id)
            out = []
            commit: _Commit | None = self._resolve(repo, revision)
            while commit is not None:
                out.append(
                    {
                        "id": commit.oid,
                        "title": commit.title,
                        "message": commit.description,
                        "authors": [{"user": commit.author}],
                        "date": commit.date,
                    }
                )
                commit = repo.commits.get(commit.parent) if commit.parent else None
        return _json(out)

    def _branch(self, req: _Request, repo_type: str, repo_id: str, branch: str) -> _Response:
        with self._lock:
            repo = self._repo_for(req, repo_type, repo_id, write=True)
            if req.method == "DELETE":
                if branch not in repo.branches:
                    raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                if branch == "main":
                    raise HubError(403, "Cannot delete the default branch")
                del repo.branches[branch]
                return _json({})
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            if not branch or branch.startswith("refs/") or ".." in branch:
                raise HubError(400, f"Invalid branch name: {branch}")
            start = self._json_body(req).get("startingPoint") or "main"
            repo.branches[branch] = self._resolve(repo, str(start)).oid
        return _json({})

    def _check_no_pr(self, req: _Request) -> None:
        if req.query.get("create_pr", ["0"])[0] not in ("", "0", "false"):
            raise HubError(400, "create_pr is not supported by the Hub stand-in")

    def _preupload(self, req: _Request, repo_type: str, repo_id: str, revision: str) -> _Response:
        self._check_no_pr(req)
        files = self._json_body(req).get("files")
        if not isinstance(files, list):
            raise HubError(400, "'files' must be a list")
        with self._lock:
            repo = self._repo_for(req, repo_type, repo_id, write=True)
            tree = self._resolve(repo, revision).tree
            out = []
            for f in files:
                path, size = f.get("path"), f.get("size")
                if not isinstance(path, str) or not isinstance(size, int):
                    raise HubError(400, "each file needs 'path' and 'size'")
                mode = "lfs" if self._is_lfs(path, size) else "regular"
                info: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
                existing = tree.get(path)
                if self.report_remote_oids and existing is not None:
                    # What the client compares with its local oid: sha256 for LFS, git blob id otherwise.
                    info["oid"] = existing.sha256 if existing.lfs else existing.oid
                out.append(info)
        return _json({"files": out})

    def _lfs_batch(self, req: _Request, repo_type: str, repo_id: str) -> _Response:
        data = self._json_body(req)
        if data.get("operation") != "upload":
            raise HubError(501, "Only the LFS 'upload' operation is implemented by the Hub stand-in")
        objects = data.get("objects")
        if not isinstance(objects, list):
            raise HubError(400, "'objects' must be a list")
        transfers = data.get("transfers") or ["basic"]
        multipart = self.multipart_chunk_size is not None and "multipart" in transfers
        out = []
        with self._lock:
            repo = self._repo_for(req, repo_type, repo_id, write=True)
            ref = (data.get("ref") or {}).get("name")
            if ref:
                self._resolve(repo, ref)
            for obj in objects:
                oid, size = obj.get("oid"), obj.get("size")
                if not isinstance(oid, str) or not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int):
                    out.append({"oid": str(oid), "size": int(size or 0), "error": {"code": 422, "message": "bad oid"}})
                    continue
                if oid in repo.lfs:
                    out.append({"oid": oid, "size": size})  # already stored: nothing to upload
                    continue
                ticket = secrets.token_hex(16)
                self._tickets[ticket] = _Ticket((repo_type, repo_id), oid, size)
                base = f"{self.url}/_lfs/{ticket}"
                verify = {"href": f"{base}/verify", "header": {}}
                if multipart and size > self.multipart_chunk_size:
                    chunk = self.multipart_chunk_size
                    header: dict[str, str] = {"chunk_size": str(chunk)}
                    for i in range(-(-size // chunk)):
                        header[f"{i + 1:05d}"] = f"{base}/part/{i + 1}"
                    upload = {"href": f"{base}/complete", "header": header}
                else:
                    upload = {"href": base, "header": {}}
                out.append(
                    {"oid": oid, "size": size, "authenticated": True, "actions": {"upload": upload, "verify": verify}}
                )
        transfer = "multipart" if multipart else "basic"
        return _json(
            {"transfer": transfer, "objects": out, "hash_algo": "sha256"},
            headers={"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _store_lfs(self, ticket: _Ticket, data: bytes) -> None:
        if len(data) != ticket.size or hashlib.sha256(data).hexdigest() != ticket.oid:
            raise HubError(400, "Uploaded content does not match the announced oid/size")
        repo = self._repos.get(ticket.repo_key)
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        repo.lfs[ticket.oid] = data

    def _lfs_storage(self, req: _Request, ticket_id: str, rest: list[str]) -> _Response:
        with self._lock:
            ticket = self._tickets.get(ticket_id)
            if ticket is None:
                raise HubError(403, "Unknown or expired upload URL")
            m = req.method
            if not rest and m == "PUT":
                self._store_lfs(ticket, req.body)
                return _Response(200, b"", {"ETag": f'"{ticket.oid}"'})
            if len(rest) == 2 and rest[0] == "part" and rest[1].isdigit() and m == "PUT":
                ticket.parts[int(rest[1])] = req.body
                return _Response(200, b"", {"ETag": f'"{hashlib.md5(req.body).hexdigest()}"'})
            if rest == ["complete"] and m == "POST":
                parts = self._json_body(req).get("parts") or []
                numbers = [p.get("partNumber") for p in parts]
                if numbers != sorted(ticket.parts) or any(n not in ticket.parts for n in numbers):
                    raise HubError(400, "Multipart completion does not list the uploaded parts")
                self._store_lfs(ticket, b"".join(ticket.parts[n] for n in numbers))
                return _json({})
            if rest == ["verify"] and m == "POST":
                data = self._json_body(req)
                repo = self._repos.get(ticket.repo_key)
                stored = repo.lfs.get(ticket.oid) if repo else None
                if stored is None or data.get("oid") != ticket.oid or data.get("size") != len(stored):
                    raise HubError(404, "LFS object not found or does not match")
                return _json({})
        raise HubError(501, f"Not implemented by the Hub stand-in: {req.method} {req.path}")

    def _create_commit(self, req: _Request, repo_type: str, repo_id: str, revision: str) -> _Response:
        self._check_no_pr(req)
        try:
            lines = [json.loads(line) for line in req.body.decode().splitlines() if line.strip()]
        except ValueError as err:
            raise HubError(400, f"Invalid NDJSON commit payload: {err}") from None
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a 'header' line")
        header = lines[0].get("value") or {}
        title = header.get("summary") or ""
        if not title:
            raise HubError(400, "The commit summary cannot be empty")
        with self._lock:
            repo = self._repo_for(req, repo_type, repo_id, write=True)
            if revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.branches[revision]
            parent = header.get("parentCommit")
            if parent and parent != head:
                raise HubError(412, f"Parent commit {parent} is not the head of {revision} ({head})")
            tree = repo.commits[head].tree
            written: dict[str, _Blob] = {}
            deleted: list[str] = []
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value") or {}
                path = value.get("path")
                if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
                    raise HubError(400, f"Invalid path in commit: {path!r}")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, "Only base64 file content is supported")
                    try:
                        data = base64.b64decode(value.get("content", ""), validate=True)
                    except ValueError:
                        raise HubError(400, f"Invalid base64 content for {path}") from None
                    written[path] = _Blob(data, False)
                elif key == "lfsFile":
                    oid = value.get("oid")
                    if oid not in repo.lfs:
                        raise HubError(422, f"LFS object {oid} for {path} was not uploaded")
                    written[path] = _Blob(repo.lfs[oid], True)
                elif key in ("deletedFile", "deletedFolder"):
                    folder = key == "deletedFolder"
                    exists = any(p.startswith(path.rstrip("/") + "/") for p in tree) if folder else path in tree
                    if not exists:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    deleted.append(path.rstrip("/") + "/" if folder else path)
                else:
                    raise HubError(400, f"Unknown commit operation: {key!r}")
            author = req.user["name"] if req.user else ""
            commit = self._commit(repo, revision, title, header.get("description") or "", author, written, deleted)
        url = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}/commit/{commit.oid}"
        return _json({"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})

    def _resolve_file(self, req: _Request, repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        with self._lock:
            commit = self._resolve(self._repo_for(req, repo_type, repo_id), revision)
            blob = commit.tree.get(path)
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if blob is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers)
        headers["ETag"] = f'"{blob.oid}"'
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(len(blob.data))
        data = blob.data
        status = 200
        range_header = req.headers.get("Range")
        if range_header:
            match = _RANGE_RE.match(range_header)
            total = len(data)
            start, end = (match.group(1), match.group(2)) if match else ("", "")
            if not match or (not start and not end):
                raise HubError(416, f"Unsupported Range: {range_header}", headers={"Content-Range": f"bytes */{total}"})
            if start:
                first, last = int(start), min(int(end) if end else total - 1, total - 1)
            else:  # suffix range: the last N bytes
                first, last = max(total - int(end), 0), total - 1
            if first >= total or first > last:
                raise HubError(
                    416, f"Range not satisfiable: {range_header}", headers={"Content-Range": f"bytes */{total}"}
                )
            data = data[first : last + 1]
            headers["Content-Range"] = f"bytes {first}-{last}/{total}"
            status = 206
        return _Response(status, data, headers)
