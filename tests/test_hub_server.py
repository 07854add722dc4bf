# ruff: noqa: F811 - test arguments named after the fixtures imported from tests.conftest_hub
"""Tests of the Hub stand-in (tests/hub_server.py) with the real huggingface_hub client only.

Retry behaviour of huggingface_hub 2.4 that these tests pin down (read from its source):

* ``POST .../commit/{rev}`` is sent once, without retry (``create_commit`` calls ``_send_commit``
  with ``retry_on_error=False``): a 5xx or a dropped connection surfaces at once.
* ``preupload``, the LFS batch call, the LFS ``PUT`` (and multipart parts/completion) and the
  LFS verify call go through ``http_backoff``: up to 5 retries on 408/429/500/502/503/504 and on
  timeouts / network errors / dropped connections, waiting 1, 2, 4, 8, 8 s.
* ``hf_hub_download``'s ``HEAD`` is tried once without retry, then (no file in the cache) once
  more with ``http_backoff``; the ``GET`` resumes a broken download up to 5 times (1 s apart).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from tests.conftest_hub import hub_fast_retries, hub_server  # noqa: F401 - the fixtures used below
from tests.hub_server import HubServer

ALICE = "hf_good"  # alice, member of "org", write
ALICE_READ = "hf_read"  # alice, read-only
BOB = "hf_bob"  # bob, write

BIG = bytes(range(256)) * 80  # 20 KiB, above the 10 KiB LFS threshold


def _make_folder(root: Path) -> Path:
    folder = root / "upload"
    (folder / "skip").mkdir(parents=True)
    (folder / "notes.txt").write_text("small text file\n")
    (folder / "weights.bin").write_bytes(BIG)
    (folder / "skip" / "secret.txt").write_text("must not be uploaded")
    return folder


def _upload(folder: Path, repo_id: str = "org/model", token: str = ALICE, **kwargs):
    return HfApi().upload_folder(folder_path=folder, repo_id=repo_id, token=token, ignore_patterns=["skip/*"], **kwargs)


def _count(server: HubServer, method: str, fragment: str) -> int:
    return sum(1 for m, p in server.requests if m == method and fragment in p)


def test_whoami_and_create_repo(hub_server: HubServer) -> None:
    api = HfApi()
    me = api.whoami(token=ALICE)
    assert me["name"] == "alice"
    assert [o["name"] for o in me["orgs"]] == ["org"]
    assert me["auth"]["accessToken"]["role"] == "write"

    url = api.create_repo("org/model", token=ALICE, private=True)
    assert url.repo_id == "org/model"
    assert url.startswith(hub_server.url)
    # exist_ok=True relies on the 409 answer for an existing repo.
    assert api.create_repo("org/model", token=ALICE, exist_ok=True).repo_id == "org/model"
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("org/model", token=ALICE)
    assert exc.value.response.status_code == 409
    # No namespace: the repo goes to the token's user.
    assert api.create_repo("solo", token=ALICE).repo_id == "alice/solo"
    assert hub_server.has_repo("alice/solo")


def test_upload_folder_regular_lfs_and_ignored(hub_server: HubServer, tmp_path: Path) -> None:
    folder = _make_folder(tmp_path)
    HfApi().create_repo("org/model", token=ALICE)
    info = _upload(folder, commit_message="first upload")

    files = hub_server.files("org/model")
    assert files == {"notes.txt": b"small text file\n", "weights.bin": BIG}
    assert not hub_server.is_lfs("org/model", "notes.txt")
    assert hub_server.is_lfs("org/model", "weights.bin")

    commits = hub_server.commits("org/model")
    assert [c["message"] for c in commits] == ["initial commit", "first upload"]
    assert commits[-1]["oid"] == info.oid
    assert commits[-1]["author"] == "alice"
    assert set(commits[-1]["files"]) == {"notes.txt", "weights.bin"}

    # Regular file inline in the commit, the large one through the LFS batch API + PUT + verify.
    assert _count(hub_server, "POST", "/api/models/org/model/preupload/main") == 1
    assert _count(hub_server, "POST", "/org/model.git/info/lfs/objects/batch") == 1
    assert _count(hub_server, "PUT", "/_lfs/") == 1
    assert _count(hub_server, "POST", "/verify") == 1
    assert _count(hub_server, "POST", "/api/models/org/model/commit/main") == 1
    # No request carries the token in its URL, and the LFS PUT is sent without credentials.
    assert all(ALICE not in p for _, p in hub_server.requests)
    put = next(e for e in hub_server.request_log if e["method"] == "PUT")
    assert put["user"] is None


def test_downloads_give_back_identical_bytes(hub_server: HubServer, tmp_path: Path) -> None:
    folder = _make_folder(tmp_path)
    HfApi().create_repo("org/model", token=ALICE)
    info = _upload(folder)

    snap = Path(snapshot_download("org/model"))
    assert sorted(p.name for p in snap.iterdir()) == ["notes.txt", "weights.bin"]
    assert (snap / "weights.bin").read_bytes() == BIG
    assert (snap / "notes.txt").read_bytes() == b"small text file\n"
    assert snap.name == info.oid

    out = tmp_path / "local"
    path = hf_hub_download("org/model", "weights.bin", local_dir=out)
    assert Path(path).read_bytes() == BIG
    assert Path(hf_hub_download("org/model", "notes.txt", revision=info.oid)).read_bytes() == b"small text file\n"

    api = HfApi()
    assert sorted(api.list_repo_files("org/model")) == ["notes.txt", "weights.bin"]
    model = api.model_info("org/model", files_metadata=True)
    assert model.sha == info.oid
    sizes = {s.rfilename: (s.size, s.lfs is not None) for s in model.siblings}
    assert sizes == {"notes.txt": (16, False), "weights.bin": (len(BIG), True)}

    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/model", "missing.json")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/nope", "config.json")


def test_tree_paths_info_and_create_commit(hub_server: HubServer) -> None:
    api = HfApi()
    api.create_repo("org/model", token=ALICE)
    api.create_commit(
        "org/model",
        operations=[
            CommitOperationAdd("a/b/c.txt", b"c"),
            CommitOperationAdd("a/d.txt", b"d"),
            CommitOperationAdd("top.txt", b"t"),
        ],
        commit_message="add",
        token=ALICE,
    )
    top = {e.path for e in api.list_repo_tree("org/model")}
    assert top == {"a", "top.txt"}
    under_a = {e.path for e in api.list_repo_tree("org/model", path_in_repo="a")}
    assert under_a == {"a/b", "a/d.txt"}
    assert set(api.list_repo_files("org/model")) == {"a/b/c.txt", "a/d.txt", "top.txt"}
    assert {e.path for e in api.get_paths_info("org/model", ["top.txt", "a", "nope"])} == {"top.txt", "a"}

    api.create_commit(
        "org/model",
        operations=[CommitOperationDelete("a/"), CommitOperationAdd("top.txt", b"T")],
        commit_message="delete a/",
        token=ALICE,
    )
    assert hub_server.files("org/model") == {"top.txt": b"T"}
    assert hub_server.commits("org/model")[-1]["deleted"] == ["a/"]
    assert [c.title for c in api.list_repo_commits("org/model")] == ["delete a/", "add", "initial commit"]


def test_reupload_makes_a_new_commit(hub_server: HubServer, tmp_path: Path) -> None:
    folder = _make_folder(tmp_path)
    HfApi().create_repo("org/model", token=ALICE)
    first = _upload(folder)
    second = _upload(folder)
    assert first.oid != second.oid
    commits = hub_server.commits("org/model")
    assert len(commits) == 3 and commits[-1]["oid"] == second.oid and commits[-2]["oid"] == first.oid
    assert hub_server.files("org/model")["weights.bin"] == BIG
    # The LFS object was already stored: the batch answer has no upload action, no second PUT.
    assert _count(hub_server, "POST", "info/lfs/objects/batch") == 2
    assert _count(hub_server, "PUT", "/_lfs/") == 1


def test_report_remote_oids_skips_unchanged_files(hub_server: HubServer, tmp_path: Path) -> None:
    """With report_remote_oids=True the client behaves as against the real Hub: no empty commit."""
    hub_server.report_remote_oids = True
    folder = _make_folder(tmp_path)
    HfApi().create_repo("org/model", token=ALICE)
    first = _upload(folder)
    again = _upload(folder)
    assert again.oid == first.oid
    assert len(hub_server.commits("org/model")) == 2
    assert _count(hub_server, "POST", "/commit/main") == 1


def test_upload_to_branch(hub_server: HubServer, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo("org/model", token=ALICE)
    api.create_branch("org/model", branch="dev", token=ALICE)
    api.create_branch("org/model", branch="dev", token=ALICE, exist_ok=True)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_branch("org/model", branch="dev", token=ALICE)
    assert exc.value.response.status_code == 409

    info = _upload(_make_folder(tmp_path), revision="dev")
    assert hub_server.files("org/model", revision="dev") == {"notes.txt": b"small text file\n", "weights.bin": BIG}
    assert hub_server.files("org/model") == {}
    assert hub_server.branches("org/model")["dev"] == info.oid
    assert {b.name for b in api.list_repo_refs("org/model").branches} == {"main", "dev"}
    assert Path(hf_hub_download("org/model", "weights.bin", revision="dev")).read_bytes() == BIG
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/model", "weights.bin")  # not on main


def test_model_card_load(hub_server: HubServer, tmp_path: Path) -> None:
    folder = tmp_path / "card"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: mit\ntags:\n- vision\n---\n# My model\n")
    HfApi().create_repo("org/model", token=ALICE)
    HfApi().upload_folder(folder_path=folder, repo_id="org/model", token=ALICE)
    assert _count(hub_server, "POST", "/api/validate-yaml") >= 1  # upload_folder and create_commit both check
    card = ModelCard.load("org/model")
    assert card.data.license == "mit"
    assert card.data.tags == ["vision"]
    assert "# My model" in card.text


def test_write_without_valid_token_is_401(hub_server: HubServer, tmp_path: Path) -> None:
    api = HfApi()
    for token in (None, "hf_not_a_token"):
        with pytest.raises(HfHubHTTPError) as exc:
            api.create_repo("org/model", token=token)
        assert exc.value.response.status_code == 401
        assert exc.value.response.json()["error"]
    with pytest.raises(HfHubHTTPError) as exc:
        api.whoami(token="hf_not_a_token")
    assert exc.value.response.status_code == 401

    hub_server.create_repo("org/model")
    folder = _make_folder(tmp_path)
    for token in (None, "hf_not_a_token"):
        with pytest.raises(HfHubHTTPError) as exc:
            _upload(folder, token=token)
        assert exc.value.response.status_code == 401
    assert hub_server.files("org/model") == {}


def test_read_only_token_and_foreign_namespace_are_403(hub_server: HubServer, tmp_path: Path) -> None:
    api = HfApi()
    for repo_id, token in (("org/model", ALICE_READ), ("bob/model", ALICE), ("org/model", BOB)):
        with pytest.raises(HfHubHTTPError) as exc:
            api.create_repo(repo_id, token=token)
        assert exc.value.response.status_code == 403, (repo_id, token)

    api.create_repo("bob/model", token=BOB)
    folder = _make_folder(tmp_path)
    for repo_id, token in (("bob/model", ALICE_READ), ("bob/model", ALICE)):
        with pytest.raises(HfHubHTTPError) as exc:
            _upload(folder, repo_id=repo_id, token=token)
        assert exc.value.response.status_code == 403
    assert hub_server.files("bob/model") == {}
    _upload(folder, repo_id="bob/model", token=BOB)
    assert set(hub_server.files("bob/model")) == {"notes.txt", "weights.bin"}


def test_private_repo_needs_a_member_token(hub_server: HubServer) -> None:
    hub_server.create_repo("org/secret", private=True)
    hub_server.commit_files("org/secret", {"config.json": b"{}"})
    with pytest.raises(RepositoryNotFoundError) as exc:
        hf_hub_download("org/secret", "config.json")
    assert exc.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError) as exc:
        hf_hub_download("org/secret", "config.json", token=BOB)
    assert exc.value.response.status_code == 404
    assert Path(hf_hub_download("org/secret", "config.json", token=ALICE_READ)).read_bytes() == b"{}"
    assert HfApi().model_info("org/secret", token=ALICE).private is True


def test_commit_5xx_is_not_retried_by_the_client(hub_server: HubServer, tmp_path: Path) -> None:
    folder = _make_folder(tmp_path)
    HfApi().create_repo("org/model", token=ALICE)
    hub_server.fail_next("/commit/", status=500, times=1)
    with pytest.raises(HfHubHTTPError) as exc:
        _upload(folder)
    assert exc.value.response.status_code == 500
    assert _count(hub_server, "POST", "/commit/main") == 1  # huggingface_hub did not retry
    assert len(hub_server.commits("org/model")) == 1  # only the initial commit
    # The rule is used up: the next attempt goes through.
    _upload(folder)
    assert hub_server.files("org/model")["weights.bin"] == BIG


def test_preupload_5xx_is_retried_with_backoff(
    hub_server: HubServer, hub_fast_retries: list[float], tmp_path: Path
) -> None:
    HfApi().create_repo("org/model", token=ALICE)
    hub_server.fail_next("/preupload/", status=503, times=2)
    _upload(_make_folder(tmp_path))
    assert _count(hub_server, "POST", "/preupload/") == 3
    assert hub_fast_retries == [1, 2]
    assert hub_server.files("org/model")["weights.bin"] == BIG


def test_download_head_5xx_is_retried_once(hub_server: HubServer) -> None:
    hub_server.commit_files("org/model", {"config.json": b'{"a": 1}'})
    hub_server.fail_next("/resolve/", status=500, times=1, method="HEAD")
    assert Path(hf_hub_download("org/model", "config.json")).read_bytes() == b'{"a": 1}'
    assert _count(hub_server, "HEAD", "/resolve/") == 2


def test_dropped_lfs_upload_is_retried_by_the_client(
    hub_server: HubServer, hub_fast_retries: list[float], tmp_path: Path
) -> None:
    HfApi().create_repo("org/model", token=ALICE)
    hub_server.drop_next("/_lfs/", times=1, method="PUT")
    _upload(_make_folder(tmp_path))
    assert _count(hub_server, "PUT", "/_lfs/") == 2
    assert hub_fast_retries == [1]
    assert hub_server.files("org/model")["weights.bin"] == BIG


def test_dropped_lfs_upload_raises_once_retries_are_exhausted(
    hub_server: HubServer, hub_fast_retries: list[float], tmp_path: Path
) -> None:
    HfApi().create_repo("org/model", token=ALICE)
    hub_server.drop_next("/_lfs/", times=10, method="PUT")
    with pytest.raises(RuntimeError, match="Error while uploading 'weights.bin'") as exc:
        _upload(_make_folder(tmp_path))
    assert isinstance(exc.value.__cause__, httpx2.TransportError)
    assert _count(hub_server, "PUT", "/_lfs/") == 6  # 1 try + 5 retries
    assert hub_fast_retries == [1, 2, 4, 8, 8]
    assert _count(hub_server, "POST", "/commit/") == 0
    assert hub_server.files("org/model") == {}


def test_dropped_commit_raises_a_connection_error(hub_server: HubServer, tmp_path: Path) -> None:
    HfApi().create_repo("org/model", token=ALICE)
    hub_server.drop_next("/commit/")
    with pytest.raises(httpx2.TransportError):
        _upload(_make_folder(tmp_path))
    assert _count(hub_server, "POST", "/commit/") == 1
    assert len(hub_server.commits("org/model")) == 1


def test_multipart_lfs_upload(hub_server: HubServer, tmp_path: Path) -> None:
    hub_server.multipart_chunk_size = 8 * 1024
    HfApi().create_repo("org/model", token=ALICE)
    _upload(_make_folder(tmp_path))
    assert hub_server.files("org/model")["weights.bin"] == BIG
    assert _count(hub_server, "PUT", "/part/") == 3
    assert _count(hub_server, "POST", "/complete") == 1


@pytest.mark.slow
def test_subprocess_reaches_the_stand_in(hub_server: HubServer) -> None:
    hub_server.commit_files("org/model", {"hello.txt": b"from the stand-in"})
    code = "from huggingface_hub import hf_hub_download; print(open(hf_hub_download('org/model', 'hello.txt')).read())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "from the stand-in"
    assert _count(hub_server, "GET", "/org/model/resolve/") == 1


def test_server_binds_loopback_and_stops() -> None:
    server = HubServer().start()
    url = server.url
    assert url.startswith("http://127.0.0.1:")
    assert httpx2.get(url + "/api/models/org/none").status_code == 404
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(url + "/api/models/org/none", timeout=2)


def test_vit_from_pretrained_through_the_stand_in(hub_server: HubServer, tmp_path: Path) -> None:
    import torch
    from transformers import AutoImageProcessor, ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    model = ViTForImageClassification(config)
    folder = tmp_path / "vit"
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)

    HfApi().create_repo("org/tiny-vit", token=ALICE)
    HfApi().upload_folder(folder_path=folder, repo_id="org/tiny-vit", token=ALICE)
    assert hub_server.is_lfs("org/tiny-vit", "model.safetensors")

    loaded = ViTForImageClassification.from_pretrained("org/tiny-vit", cache_dir=tmp_path / "cache")
    processor = AutoImageProcessor.from_pretrained("org/tiny-vit", cache_dir=tmp_path / "cache")
    expected = model.state_dict()
    got = loaded.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    assert loaded.config.num_labels == 3
    assert processor.size == {"height": 32, "width": 32}
    # Missing optional files (adapter_config.json, processor_config.json...) were plain 404s.
    assert any(e["status"] == 404 and e["path"].endswith("adapter_config.json") for e in hub_server.request_log)


def test_client_patching_is_undone(tmp_path: Path) -> None:
    from huggingface_hub import constants, hf_api

    from tests.conftest_hub import point_hub_client_at

    before = (constants.ENDPOINT, constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_XET, hf_api.api.endpoint)
    env_before = os.environ.get("HF_ENDPOINT"), os.environ.get("HF_HUB_OFFLINE")
    with pytest.MonkeyPatch.context() as mp:
        point_hub_client_at(mp, "http://127.0.0.1:9", tmp_path)
        assert constants.ENDPOINT == hf_api.api.endpoint == os.environ["HF_ENDPOINT"] == "http://127.0.0.1:9"
        assert constants.HF_HUB_OFFLINE is False and constants.HF_HUB_DISABLE_XET is True
        assert constants.HUGGINGFACE_CO_URL_TEMPLATE.startswith("http://127.0.0.1:9/")
    after = (constants.ENDPOINT, constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_XET, hf_api.api.endpoint)
    assert after == before
    assert (os.environ.get("HF_ENDPOINT"), os.environ.get("HF_HUB_OFFLINE")) == env_before


def test_range_requests_and_non_ascii_paths(hub_server: HubServer) -> None:
    hub_server.commit_files("org/model", {"dossier/été.txt": "ça marche".encode(), "big.bin": BIG})
    assert Path(hf_hub_download("org/model", "dossier/été.txt")).read_text() == "ça marche"
    url = f"{hub_server.url}/org/model/resolve/main/big.bin"
    part = httpx2.get(url, headers={"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == BIG[100:]
    assert part.headers["Content-Range"] == f"bytes 100-{len(BIG) - 1}/{len(BIG)}"
    assert httpx2.get(url, headers={"Range": "bytes=-10"}).content == BIG[-10:]
    assert httpx2.get(url, headers={"Range": f"bytes={len(BIG)}-"}).status_code == 416
    head = httpx2.head(url)
    assert head.headers["X-Linked-Size"] == str(len(BIG)) and head.headers["Content-Length"] == str(len(BIG))
    missing = httpx2.head(f"{hub_server.url}/org/model/resolve/main/nope/é.json")
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
