"""Publish an output folder to the Hugging Face Hub: create the repo, upload what a user needs, retry, explain.

One push is one commit made with `huggingface_hub` (`HfApi.create_repo` / `create_branch` / `create_commit`), so
the repo holds either the previous version or the new one, never half of each. What lands is an allow-list
(`files_to_push`): the weights, the configs, the model card, the resolved recipe and the results; never the
optimizer states, the Trainer's pickles or the checkpoints unless a hub strategy asks for them. The card is the
one rendered for the repo id: its usage snippet names `ORG/NAME`, not the local folder.

The token is taken from the argument, else from `huggingface_hub.get_token()` (`HF_TOKEN`, then the token that
`hf auth login` stored). It is passed to the client and nowhere else: no log line, message, card or file holds it.

No torch here: `vit-pipeline push` runs without loading a model.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vit_pipeline import PipelineError
from vit_pipeline.publish.errors import (  # noqa: F401 - the push API, importable from here as before
    _describe,
    _NoToken,
    explain,
    is_transient,
    push_later_command,
)
from vit_pipeline.publish.files import (  # noqa: F401
    MODEL_FILES,
    NEVER_PUSHED,
    PUSHED_FILES,
    PUSHED_WEIGHT_FILES,
    STALE_WEIGHTS_RE,
    _checkpoint_files,
    _weights_of,
    card_for_repo,
    files_to_push,
)

logger = logging.getLogger("vit_pipeline.publish.push")

STRATEGIES = ("end", "every_save", "checkpoint", "all_checkpoints")

# Whole-push retries: huggingface_hub retries preupload and LFS transfers itself, but not the commit request, and a
# commit that fails leaves nothing behind, so the whole push is safe to run again (LFS objects already stored are
# not sent twice). Base of the exponential backoff in seconds (2, 4, 8 s); 0 in tests.
ATTEMPTS_ENV = "VIT_PIPELINE_PUSH_ATTEMPTS"
BACKOFF_ENV = "VIT_PIPELINE_PUSH_BACKOFF"
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF = 2.0


@dataclass
class PushResult:
    """Where a push landed."""

    repo_id: str  # with its namespace, as the Hub resolved it
    revision: str
    commit_url: str
    commit_oid: str
    files: list[str]


# ----------------------------------------------------------------------------------------------- checks


def check_repo_id(repo_id: str | None) -> str:
    """Validate a repo id with huggingface_hub's own rules (`name` or `namespace/name`), before any request.

    Raises:
        PipelineError: the id is missing or not valid, with the rule it breaks.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not repo_id:
        raise PipelineError("no repo id to push to: set --hub_model_id ORG/NAME")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        reason = str(err).split(":")[0].rstrip(".")
        raise PipelineError(f"invalid --hub_model_id '{repo_id}': {reason} (use ORG/NAME with letters, digits, "
                            "'-', '_' or '.')") from None
    return repo_id


def resolve_token(token: str | None) -> str | None:
    """The token to push with: the one given, else `HF_TOKEN`, else the one `hf auth login` stored."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def check_push_options(repo_id: str | None, token: str | None, *, strategy: str = "end",
                       output_dir: str | os.PathLike = "OUTPUT_DIR", private: bool = False,
                       revision: str | None = None) -> str:
    """Local checks of a push asked for on the `train` command, run before any data or weights are loaded.

    Returns:
        The token to push with (given, or found in the environment).

    Raises:
        PipelineError: invalid repo id, unknown or unsupported hub strategy, offline mode, no token.
    """
    later = push_later_command(output_dir, repo_id, private, revision, strategy)
    check_repo_id(repo_id)
    if strategy not in STRATEGIES:
        raise PipelineError(f"unknown hub_strategy '{strategy}': use one of {', '.join(STRATEGIES)}")
    if _offline():
        raise PipelineError("--push_to_hub needs the Hub but HF_HUB_OFFLINE=1 is set: unset it, or drop "
                            f"--push_to_hub and push the finished folder later with: {later}")
    token = resolve_token(token)
    if not token:
        raise PipelineError("--push_to_hub needs a Hugging Face token: run `hf auth login`, set HF_TOKEN or pass "
                            f"--hub_token (or drop --push_to_hub and push later with: {later})")
    return token


# ----------------------------------------------------------------------------------------------- what lands


# ----------------------------------------------------------------------------------------------- pushing


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise PipelineError(f"{name} must be a number (got '{value}')") from None


def _commit(api, repo_id: str, files: dict[str, Path | bytes], *, token: str, private: bool, revision: str,
            commit_message: str, replace_weights: bool) -> tuple[str, Any]:
    """One attempt: create the repo (and branch), then one commit of `files`. Returns (full repo id, CommitInfo)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    repo_url = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
    full_id = repo_url.repo_id or repo_id
    if revision != "main":
        api.create_branch(full_id, branch=revision, token=token, exist_ok=True)
    operations: list[Any] = []
    if replace_weights:
        remote = api.list_repo_files(full_id, revision=revision, token=token)
        operations += [CommitOperationDelete(path) for path in remote
                       if STALE_WEIGHTS_RE.match(path) and path not in files]
    for path, source in files.items():
        content = source(full_id) if callable(source) else source
        operations.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=content if isinstance(
            content, bytes) else str(content)))
    info = api.create_commit(full_id, operations, commit_message=commit_message, token=token, revision=revision)
    return full_id, info


def _with_retries(attempt, *, attempts: int, backoff: float, what: str):
    """Run `attempt()` until it succeeds, retrying transient errors with exponential backoff."""
    for number in range(1, attempts + 1):
        try:
            return attempt()
        except Exception as err:  # noqa: BLE001 - classified below, re-raised when not transient
            if number >= attempts or not is_transient(err):
                raise
            delay = backoff * 2 ** (number - 1)
            logger.warning("%s failed (%s); retrying in %gs (attempt %d of %d)", what, _describe(err), delay,
                           number + 1, attempts)
            time.sleep(delay)
    raise AssertionError("unreachable")


def push_folder(output_dir: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool = False,
                revision: str | None = None, commit_message: str | None = None, strategy: str = "end",
                attempts: int | None = None, backoff: float | None = None) -> PushResult:
    """Push a finished output folder to the Hub as one commit.

    Creates the repo when it does not exist (`private` applies then), and the branch `revision` from `main`;
    uploads `files_to_push(output_dir, strategy)` with the card rendered for the repo id; deletes root weight
    files of an earlier push that the new one does not replace. Transient failures (5xx, network) are retried
    `attempts` times in all with exponential backoff (`backoff`, 2x`backoff`, ... seconds).

    Args:
        attempts, backoff: default to `VIT_PIPELINE_PUSH_ATTEMPTS` / `VIT_PIPELINE_PUSH_BACKOFF`, else 4 and 2 s.

    Raises:
        PipelineError: local problems (invalid repo id, incomplete folder, no token).
        huggingface_hub / httpx2 errors: what the Hub answered on the last attempt (see `push_or_explain`).
    """
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    folder = Path(output_dir)
    files: dict[str, Any] = dict(files_to_push(folder, strategy))
    if _offline():
        from huggingface_hub.errors import OfflineModeIsEnabled

        raise OfflineModeIsEnabled("HF_HUB_OFFLINE is set")
    token = resolve_token(token)
    if not token:
        raise _NoToken()
    if "README.md" in files:
        card_text = files["README.md"].read_text(encoding="utf-8")
        files["README.md"] = lambda full_id: card_for_repo(card_text, full_id, folder.name).encode("utf-8")
    revision = revision or "main"
    attempts = int(attempts if attempts is not None else _env_number(ATTEMPTS_ENV, DEFAULT_ATTEMPTS))
    backoff = backoff if backoff is not None else _env_number(BACKOFF_ENV, DEFAULT_BACKOFF)
    message = commit_message or _commit_message(folder)
    api = HfApi()
    logger.info("Pushing %s to %s (%s): %s", folder, repo_id, revision, ", ".join(files))
    full_id, info = _with_retries(
        lambda: _commit(api, repo_id, files, token=token, private=private, revision=revision, commit_message=message,
                        replace_weights=True),
        attempts=max(1, attempts), backoff=backoff, what=f"push to {repo_id}")
    logger.info("Pushed to %s (commit %s); load it with pipeline(\"image-classification\", model=%r)",
                info.commit_url, info.oid[:8], full_id)
    return PushResult(full_id, revision, info.commit_url, info.oid, sorted(files))


def _commit_message(folder: Path) -> str:
    """`Upload NAME with vit-pipeline (eval accuracy 0.9861)`: the history then tells the pushes apart."""
    import json

    message = f"Upload {folder.resolve().name or folder} with vit-pipeline"
    try:
        results = json.loads((folder / "eval_results.json").read_text())
    except (OSError, ValueError):
        results = {}
    # Multi-label runs report map instead of accuracy.
    name = "accuracy" if "eval_accuracy" in results else "map"
    value = results.get(f"eval_{name}")
    return message + (f" (eval {name} {value:.4f})" if isinstance(value, (int, float)) else "")


def push_or_explain(output_dir: str | os.PathLike, repo_id: str | None, *, token: str | None = None,
                    private: bool = False, revision: str | None = None, commit_message: str | None = None,
                    strategy: str = "end") -> PushResult:
    """Push `output_dir` (see `push_folder`), or raise a one-line `PipelineError` that says what went wrong, what
    to do, and the `vit-pipeline push` command that publishes the (untouched, complete) folder later."""
    try:
        check_repo_id(repo_id)
    except PipelineError as err:
        raise PipelineError(f"{err}; the output folder {output_dir} is complete; push it later with: "
                            f"{push_later_command(output_dir, None, private, revision, strategy)}") from None
    attempts = int(_env_number(ATTEMPTS_ENV, DEFAULT_ATTEMPTS))
    try:
        return push_folder(output_dir, repo_id, token=token, private=private, revision=revision,
                           commit_message=commit_message, strategy=strategy, attempts=attempts)
    except PipelineError:
        raise  # the folder itself is not pushable (missing, incomplete): pushing later would not help
    except Exception as err:  # noqa: BLE001 - every failure becomes one line; the traceback is kept as the cause
        raise explain(err, output_dir, repo_id, private=private, revision=revision, strategy=strategy,
                      token=resolve_token(token) if not isinstance(err, _NoToken) else token,
                      attempts=attempts) from err
