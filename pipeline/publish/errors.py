"""Why a push failed, in one line that says what to do: the Hub's status codes and the network errors under
`huggingface_hub`'s, which of them are worth a retry, and the command that pushes the finished folder later.
No torch here."""

from __future__ import annotations

import os
import shlex

from vit_pipeline import PipelineError


def push_later_command(output_dir: str | os.PathLike, repo_id: str | None, private: bool = False,
                       revision: str | None = None, strategy: str = "end") -> str:
    """The command that pushes `output_dir` later (never with the token: it comes from the environment)."""
    parts = ["vit-pipeline", "push", shlex.quote(str(output_dir)), "--hub_model_id", shlex.quote(repo_id or "ORG/NAME")]
    if private:
        parts.append("--hub_private_repo")
    if revision and revision != "main":
        parts += ["--hub_revision", shlex.quote(revision)]
    if strategy in ("checkpoint", "all_checkpoints"):
        parts += ["--hub_strategy", strategy]
    return " ".join(parts)


TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)


def _httpx():
    """The HTTP library of huggingface_hub: httpx2 from huggingface_hub 2, httpx before."""
    try:
        import httpx2
    except ImportError:  # huggingface_hub 1.x
        import httpx as httpx2
    return httpx2


def _root_cause(err: BaseException) -> BaseException:
    """The HTTP or network error under huggingface_hub's wrappers (an LFS failure is a RuntimeError `from` it)."""
    from huggingface_hub.errors import HfHubHTTPError

    httpx2 = _httpx()

    seen = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (HfHubHTTPError, httpx2.TransportError)):
            return current
        current = current.__cause__ or current.__context__
    return err


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None) if response is not None else None


def is_transient(err: BaseException) -> bool:
    """Whether trying the push again may succeed: a 5xx/408/429 answer, or a network error (refused, reset,
    dropped, timed out)."""
    cause = _root_cause(err)
    return isinstance(cause, _httpx().TransportError) or _status(cause) in TRANSIENT_STATUS


class _NoToken(Exception):
    """No token given and none in the environment."""


def _describe(err: BaseException) -> str:
    """A short, one-line account of an HTTP or network error (never headers, so never the token)."""
    cause = _root_cause(err)
    status = _status(cause)
    if status is not None:
        server = getattr(cause, "server_message", None) or ""
        server = " ".join(str(server).split())[:200]
        return f"HTTP {status}" + (f": {server}" if server else "")
    text = " ".join(str(cause).split())[:200]
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def explain(err: BaseException, output_dir: str | os.PathLike, repo_id: str | None, *, private: bool = False,
            revision: str | None = None, strategy: str = "end", token: str | None = None,
            attempts: int | None = None) -> PipelineError:
    """Turn a failed push into a one-line `PipelineError`: what happened, what to do, and the command to push later.

    The output folder is never touched by a push, so every message can say it is complete.
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    httpx2 = _httpx()
    later = push_later_command(output_dir, repo_id, private, revision, strategy)
    tail = f"the output folder {output_dir} is complete; push it later with: {later}"
    cause = _root_cause(err)
    status = _status(cause)
    namespace = (repo_id or "").split("/")[0] if repo_id and "/" in repo_id else "your namespace"
    tries = f" after {attempts} attempts" if attempts and attempts > 1 else ""
    if isinstance(err, _NoToken):
        what = "no Hugging Face token: run `hf auth login` or set HF_TOKEN (or pass --hub_token)"
    elif isinstance(cause, OfflineModeIsEnabled):
        what = "HF_HUB_OFFLINE=1 is set, so the Hub was not contacted: unset it on a machine that reaches the Hub"
    elif status == 401:
        what = (f"the Hub rejected the token ({_describe(cause)}): check it with `hf auth whoami`, then log in "
                "again with `hf auth login` or set HF_TOKEN to a valid token")
    elif status == 403:
        what = (f"the token may not write to {repo_id} ({_describe(cause)}): use a token with write access to "
                f"'{namespace}' (a write token of one of its members), or push to your own namespace")
    elif status == 404:
        what = (f"the Hub did not find {repo_id} or its branch ({_describe(cause)}): check --hub_model_id and "
                "--hub_revision")
    elif isinstance(cause, (httpx2.ConnectError, httpx2.ConnectTimeout)):
        what = (f"cannot reach the Hub at {constants.ENDPOINT}{tries} ({_describe(cause)}): check the network "
                "connection (and HF_ENDPOINT if set)")
    elif isinstance(cause, httpx2.TransportError):
        what = (f"the connection to the Hub dropped mid-upload{tries} ({_describe(cause)}); nothing was half-written: "
                "a push is one commit")
    elif status in TRANSIENT_STATUS:
        what = f"the Hub kept failing{tries} ({_describe(cause)}): try again later"
    elif status is not None:
        what = f"the Hub refused the push ({_describe(cause)})"
    else:
        what = f"the push failed ({_describe(cause)})"
    message = f"push to {repo_id} failed: {what}; {tail}"
    if token:
        message = message.replace(token, "***")
    return PipelineError(" ".join(message.split()))
