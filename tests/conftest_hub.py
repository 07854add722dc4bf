"""Pytest fixtures that run the Hub stand-in (``tests/hub_server.py``) and point the client at it.

Use from the main ``conftest.py`` with ``from tests.conftest_hub import hub_server  # noqa: F401``
(and ``hub_fast_retries`` if wanted), or ``pytest_plugins = ["tests.conftest_hub"]``.

``huggingface_hub`` reads ``HF_ENDPOINT``, the offline flag, the Xet switch and the cache/token
paths into module constants when it is imported, and builds a module-level ``HfApi`` (behind
``huggingface_hub.upload_folder``, ``whoami``...) with the endpoint of that moment. Setting the
environment is therefore not enough for in-process calls: :func:`point_hub_client_at` also
patches those constants and objects. The environment variables are set too, so subprocesses
started from the test reach the stand-in as well.
"""

from __future__ import annotations

import os
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.hub_server import HubServer

# Variables that would make the client use something other than the stand-in and a clean cache
# (a real token, the staging Hub, offline mode, an OIDC exchange...).
_UNSET_ENV = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_OIDC_RESOURCE",
    "HF_OIDC_ID_TOKEN",
    "HUGGINGFACE_CO_STAGING",
    "HUGGINGFACE_HUB_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_ASSETS_CACHE",
    "HF_XET_CACHE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_DISABLE_SHARED_BLOBS",
)


def point_hub_client_at(monkeypatch: pytest.MonkeyPatch, url: str, hf_home: Path) -> None:
    """Make ``huggingface_hub`` (and ``transformers``/``datasets`` if imported) use ``url`` as the
    Hub, online, without Xet, without any token, with a fresh cache under ``hf_home``.

    Everything is set through ``monkeypatch``, so it is undone at the end of the test.
    """
    import huggingface_hub
    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import _http

    url = url.rstrip("/")
    hf_home = Path(hf_home)
    hub_cache = hf_home / "hub"
    hub_cache.mkdir(parents=True, exist_ok=True)

    # 1. Environment: read by subprocesses, and by modules imported after this point.
    for name in _UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    # Telemetry off also keeps the client from fetching /api/agent-harnesses for its user agent.
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))

    # 2. huggingface_hub.constants: values computed at import time from the environment.
    patched_constants = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,  # read by constants.is_offline_mode(), which every request checks
        "HF_HUB_DISABLE_XET": True,  # else upload_folder/hf_hub_download go through Xet storage
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HUGGINGFACE_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        # A token stored on the developer's machine would otherwise be sent implicitly.
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(hf_home / ".agent_harnesses.json"),
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {urlsplit(url).hostname or "127.0.0.1"},
    }
    for name, value in patched_constants.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)

    # 3. Copies made at import time elsewhere in huggingface_hub.
    # The module-level HfApi whose bound methods are huggingface_hub.whoami, upload_folder, ...
    monkeypatch.setattr(hf_api.api, "endpoint", url)
    if "HUGGINGFACE_CO_URL_TEMPLATE" in vars(huggingface_hub):  # lazily exported, cached once read
        monkeypatch.setattr(
            huggingface_hub, "HUGGINGFACE_CO_URL_TEMPLATE", patched_constants["HUGGINGFACE_CO_URL_TEMPLATE"]
        )
    # Origins whose redirects keep the Authorization header.
    if hasattr(_http, "_HUB_ORIGINS"):
        monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(url)})
    for module_name, attr, value in (
        ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", str(hub_cache)),
        ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", str(hf_home / "assets")),
        ("huggingface_hub.utils._git_credential", "ENDPOINT", url),
        ("huggingface_hub.cli.auth", "ENDPOINT", url),
    ):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attr):
            monkeypatch.setattr(module, attr, value)

    # 4. transformers keeps one HfApi (with the endpoint of its creation) in utils.hub._hf_api.
    tf_hub = sys.modules.get("transformers.utils.hub")
    if tf_hub is not None and hasattr(tf_hub, "_hf_api"):
        monkeypatch.setattr(tf_hub, "_hf_api", None)

    # 5. datasets copies the endpoint and offline flag into datasets.config at import.
    ds_config = sys.modules.get("datasets.config")
    if ds_config is not None:
        for name, value in (
            ("HF_ENDPOINT", url),
            ("HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}"),
            ("HF_HUB_OFFLINE", False),
            ("HF_DATASETS_OFFLINE", False),
        ):
            if hasattr(ds_config, name):
                monkeypatch.setattr(ds_config, name, value)

    # The shared httpx2 client may hold connections to an earlier stand-in: start from a new one.
    _http.close_session()


# Modules that copy the endpoint or the offline flag when they are imported.
_IMPORT_TIME_COPIES = ("transformers.utils.hub", "datasets.config")


def _forget_stand_in(imported_before: set[str], outer_env: dict[str, str], outer_offline: bool) -> None:
    """Undo what monkeypatch cannot: a module first imported during the test copied the stand-in's
    URL and online flag at import time; give it the values the outer environment implies."""
    tf_hub = sys.modules.get("transformers.utils.hub")
    if tf_hub is not None and "transformers.utils.hub" not in imported_before and hasattr(tf_hub, "_hf_api"):
        tf_hub._hf_api = None  # recreated on next use, with the restored endpoint
    ds_config = sys.modules.get("datasets.config")
    if ds_config is not None and "datasets.config" not in imported_before:
        endpoint = outer_env.get("HF_ENDPOINT", "https://huggingface.co")
        ds_offline = outer_env.get("HF_DATASETS_OFFLINE")
        offline = outer_offline if ds_offline is None else ds_offline.upper() in {"1", "ON", "YES", "TRUE"}
        for name, value in (
            ("HF_ENDPOINT", endpoint),
            ("HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"),
            ("HF_HUB_OFFLINE", offline),
            ("HF_DATASETS_OFFLINE", offline),
        ):
            if hasattr(ds_config, name):
                setattr(ds_config, name, value)


@pytest.fixture
def hub_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running :class:`~tests.hub_server.HubServer` (default tokens ``hf_good``: alice,
    org member, write; ``hf_read``: alice, read-only; ``hf_bob``: bob, write) that the
    ``huggingface_hub`` client of this process and of subprocesses is pointed at, with
    ``HF_HOME`` in ``tmp_path / "hf_home"`` and no token. Options such as ``lfs_threshold``,
    ``multipart_chunk_size`` or ``report_remote_oids`` can be changed on it during the test.
    Fails the test at teardown if the stand-in hit an internal error."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    imported_before = {name for name in _IMPORT_TIME_COPIES if name in sys.modules}
    outer_env, outer_offline = dict(os.environ), constants.HF_HUB_OFFLINE
    server = HubServer().start()
    try:
        point_hub_client_at(monkeypatch, server.url, tmp_path / "hf_home")
        yield server
    finally:
        server.stop()
        _http.close_session()
        _forget_stand_in(imported_before, outer_env, outer_offline)
    if server.errors:
        pytest.fail("Hub stand-in internal error(s):\n" + "\n".join(server.errors))


class _NoSleepTime(types.ModuleType):
    """Stand-in for the ``time`` module whose ``sleep`` only records the requested delay."""

    def __init__(self, sleeps: list[float]):
        super().__init__("time")
        self._sleeps = sleeps

    def sleep(self, seconds: float) -> None:
        self._sleeps.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def hub_fast_retries(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make huggingface_hub's retry back-off (``http_backoff``: 1, 2, 4, 8, 8 s; download resume:
    1 s) instantaneous. Returns the list of the delays the client asked for, in order."""
    from huggingface_hub import file_download
    from huggingface_hub.utils import _http

    sleeps: list[float] = []
    shim = _NoSleepTime(sleeps)
    # Only these modules' view of `time` is replaced, not the global time.sleep.
    monkeypatch.setattr(_http, "time", shim)
    monkeypatch.setattr(file_download, "time", shim)
    return sleeps


__all__ = ["hub_fast_retries", "hub_server", "point_hub_client_at"]
