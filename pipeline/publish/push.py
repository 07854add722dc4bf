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
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import PipelineError
from pipeline.utils import ADAPTER_WEIGHT_FILE, SAFE_WEIGHT_FILES, checkpoints

logger = logging.getLogger("pipeline.publish.push")

# What a finished output folder publishes (see README "Publish to the Hub"). Sharded weights are found through
# their index; adapter files are there for LoRA runs, which save an adapter next to (or instead of) the weights.
PUSHED_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "adapter_config.json",
    "config.json",
    "preprocessor_config.json",
    "README.md",
    "recipe.yaml",
    "train_results.json",
    "eval_results.json",
    "all_results.json",
    # The evaluation report and the figures the card shows (referenced by relative paths).
    "eval_report.json",
    "eval_report.md",
    "confusion_matrix.png",
    "reliability_diagram.png",
    "misclassified.png",
    "training_curves.png",
    "attention_rollout.png",
    # Multi-label runs: the per-class thresholds tuned on the eval split (`vit-pipeline predict` reads them).
    "thresholds.json",
)
# The weights a push publishes: safetensors only (never a pickle), and a LoRA adapter's.
PUSHED_WEIGHT_FILES = (*SAFE_WEIGHT_FILES, ADAPTER_WEIGHT_FILE)
# Files of the model itself, pushed to the repo root by the every_save / checkpoint strategies while training.
MODEL_FILES = (*PUSHED_WEIGHT_FILES, "adapter_config.json", "config.json", "preprocessor_config.json")
# Never pushed, even inside a checkpoint folder: the pickled TrainingArguments are not needed to resume and a
# pickle is unsafe to load from someone else's repo.
NEVER_PUSHED = ("training_args.bin",)
STRATEGIES = ("end", "every_save", "checkpoint", "all_checkpoints")
# Root-level weight files a new push replaces: left behind, a stale `model.safetensors` would shadow new shards.
STALE_WEIGHTS_RE = re.compile(r"^(model\.safetensors|model\.safetensors\.index\.json|model-\d+-of-\d+\.safetensors)$")
USAGE_RE = re.compile(r'(pipeline\("image-classification", model=")([^"]*)("\))')
LOCAL_USAGE_ID = "path/to/output_dir"
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)

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


def _weights_of(folder: Path) -> list[str]:
    """Weight files of a saved model in `folder`, shards found through their index."""
    import json

    names = [name for name in PUSHED_WEIGHT_FILES if (folder / name).is_file()]
    if "model.safetensors.index.json" in names:
        try:
            index = json.loads((folder / "model.safetensors.index.json").read_text())
            names += sorted(set(index["weight_map"].values()))
        except (ValueError, KeyError, AttributeError):
            raise PipelineError(f"{folder / 'model.safetensors.index.json'} is not a valid weight index: save the "
                                "model again (save_pretrained)") from None
    return names


def _checkpoint_files(checkpoint: Path, path_in_repo: str) -> dict[str, Path]:
    """Everything a run needs to resume from `checkpoint` (optimizer, scheduler, RNG, trainer state), as repo paths."""
    return {f"{path_in_repo}/{p.relative_to(checkpoint).as_posix()}": p for p in sorted(checkpoint.rglob("*"))
            if p.is_file() and p.name not in NEVER_PUSHED}


def files_to_push(output_dir: str | os.PathLike, strategy: str = "end") -> dict[str, Path]:
    """The files of a finished output folder that a push publishes, as `{path in repo: local path}`.

    The allow-list `PUSHED_FILES` (plus weight shards named by their index). Checkpoints only when `strategy` asks:
    `checkpoint` adds the last one as `last-checkpoint/`, `all_checkpoints` adds every `checkpoint-N/`.

    Raises:
        PipelineError: the folder is missing or holds no trained model (no config.json or no weights).
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        raise PipelineError(f"output folder {folder} does not exist: name the output_dir a `vit-pipeline train` "
                            "run wrote")
    weights = _weights_of(folder)
    if not (folder / "config.json").is_file() or not weights:
        raise PipelineError(f"{folder} holds no trained model (config.json and model.safetensors): push the "
                            "output_dir of a finished `vit-pipeline train` run")
    missing = [name for name in weights if not (folder / name).is_file()]
    if missing:
        raise PipelineError(f"{folder} is missing weight shard(s) {', '.join(missing)} named by its index: "
                            "the save was interrupted; train again or restore the shards")
    names = [name for name in PUSHED_FILES if (folder / name).is_file()] + [w for w in weights
                                                                             if w not in PUSHED_FILES]
    files = {name: folder / name for name in names}
    found = checkpoints(folder)
    if strategy == "checkpoint" and found:
        files.update(_checkpoint_files(found[-1], "last-checkpoint"))
    elif strategy == "all_checkpoints":
        for checkpoint in found:
            files.update(_checkpoint_files(checkpoint, checkpoint.name))
    return files


def card_for_repo(card_text: str, repo_id: str, folder_name: str) -> str:
    """The model card as rendered for `repo_id`: its usage snippet loads `repo_id`, and a model name the
    pipeline derived (the folder name, or an earlier repo id) becomes `repo_id`.

    What `render_card` produces with `CardInputs.hub_model_id=repo_id` and `model_name=repo_id`; the rest of the
    card (metrics, hyperparameters, framework versions of the training run) is kept as written. A card that is
    already right comes back unchanged, byte for byte.
    """
    from huggingface_hub import ModelCard

    match = USAGE_RE.search(card_text)
    old_usage = match.group(2) if match else None
    card = ModelCard(card_text, ignore_metadata_errors=True)
    old_name = card.data.model_name
    derived = {folder_name, old_usage} - {None, LOCAL_USAGE_ID}
    rename = old_name is not None and old_name != repo_id and old_name in derived
    if old_usage in (None, repo_id) and not rename:
        return card_text
    text = card.text
    if old_usage is not None:
        text = USAGE_RE.sub(lambda m: f"{m.group(1)}{repo_id}{m.group(3)}", text)
    if rename:
        card.data.model_name = repo_id
        text = re.sub(rf"^# {re.escape(old_name)}$", lambda _: f"# {repo_id}", text, count=1, flags=re.MULTILINE)
    card.text = text
    return str(card)


# ----------------------------------------------------------------------------------------------- pushing


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise PipelineError(f"{name} must be a number (got '{value}')") from None


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
