# ruff: noqa: F811 - test arguments named after the fixtures of tests.conftest_hub
"""Push to the Hub and pull back, on loopback: the real `train --push_to_hub` and `push` commands, the real
huggingface_hub client, and the Hub stand-in of tests/hub_server.py keeping the bytes that arrived.

One trained output folder (the module fixture `run`: a subprocess `vit-pipeline train` that pulls its base model and
dataset from a stand-in and pushes to it) is reused by every test; the failure tests push that folder again to a
fresh stand-in and check that the folder is byte for byte what it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FAST, digits, run_cli, save_tiny_vit, to_dataset, write_parquet_repo
from tests.conftest_hub import _NoSleepTime, hub_fast_retries, hub_server, point_hub_client_at  # noqa: F401
from tests.hub_server import HubServer
from vit_pipeline.cli import main
from vit_pipeline.publish import push as hub

# alice (member of "org", write) under a token no file or log line could contain by chance: the leak test greps it.
TOKEN = "hf_vitPipelineLeakCanary7Qx93kT"
PUSHED = {"model.safetensors", "config.json", "preprocessor_config.json", "README.md", "recipe.yaml",
          "train_results.json", "eval_results.json", "all_results.json",
          # The evaluation report and the figures the card shows (predictions.csv, with local paths, stays).
          "eval_report.json", "eval_report.md", "confusion_matrix.png", "reliability_diagram.png", "misclassified.png",
          "training_curves.png", "explanation_maps.png", "explain_report.json",
          # The test split held out of train: its scores and report (its predictions.csv stays too).
          "test_results.json", "test/test_report.json", "test/test_report.md", "test/confusion_matrix.png",
          "test/reliability_diagram.png"}
# Binary files go through LFS: the weights and the PNGs.
LFS_FILES = {name for name in PUSHED if name.endswith((".safetensors", ".png"))}
LABELS = ["0", "1", "2", "3"]


@dataclass
class Run:
    out: Path
    server: HubServer
    stdout: str
    stderr: str
    snapshot: dict[str, str]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the sha256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def stand_in_env(server: HubServer, home: Path) -> dict[str, str]:
    """What a subprocess needs to use the stand-in as its Hub (what `hf auth login` users never set: HF_ENDPOINT)."""
    return {"HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
            "HF_DATASETS_CACHE": str(home / "datasets"), hub.BACKOFF_ENV: "0"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """`vit-pipeline train --push_to_hub` in a subprocess, base model and dataset pulled from the stand-in."""
    tmp = tmp_path_factory.mktemp("hub-run")
    server = HubServer().start()
    server.add_token(TOKEN, "alice", orgs=["org"], write=True)
    base = save_tiny_vit(tmp / "base", num_labels=3)
    server.commit_files("google/vit-tiny-test", {p.name: p.read_bytes() for p in base.iterdir()})
    rows = digits(n_per_class=12, classes=len(LABELS))
    train = [r for i, r in enumerate(rows) if i % 4]
    val = [r for i, r in enumerate(rows) if not i % 4]
    data = write_parquet_repo(tmp / "data", {"train": to_dataset(train, class_names=LABELS),
                                             "validation": to_dataset(val, class_names=LABELS)})
    server.commit_files("org/tiny-digits", {p.relative_to(data).as_posix(): p.read_bytes()
                                            for p in data.rglob("*") if p.is_file()}, repo_type="dataset")
    out = tmp / "out"
    proc = run_cli("train", "--model_name_or_path", "google/vit-tiny-test", "--dataset_name", "org/tiny-digits",
                   "--output_dir", str(out), *FAST, "--learning_rate", "1e-3", "--push_to_hub",
                   "--hub_model_id", "org/name", "--hub_token", TOKEN, env=stand_in_env(server, tmp / "hf"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    try:
        yield Run(out, server, proc.stdout, proc.stderr, snapshot(out))
    finally:
        server.stop()
    assert not server.errors, server.errors


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    # The whole-push retries wait 2, 4, 8 s by default.
    monkeypatch.setenv(hub.BACKOFF_ENV, "0")


@pytest.fixture
def run_hub(run, monkeypatch, tmp_path):
    """The in-process client pointed at the module's stand-in (the one `run` pushed to)."""
    import datasets.config  # noqa: F401 - imported before the client is pointed, so monkeypatch undoes it all
    import transformers.utils.hub  # noqa: F401
    from huggingface_hub.utils import _http

    point_hub_client_at(monkeypatch, run.server.url, tmp_path / "hf")
    yield run.server
    _http.close_session()


def push(capsys, *args: str) -> tuple[int, str, str]:
    """`vit-pipeline push ARGS` in-process: exit code, stdout, stderr."""
    try:
        main(["push", *args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def count(server: HubServer, method: str, fragment: str) -> int:
    return sum(1 for m, p in server.requests if m == method and fragment in p)


# ------------------------------------------------------------------------------------ train --push_to_hub


@pytest.mark.slow
def test_train_pushes_the_allow_listed_files(run):
    files = run.server.files("org/name")
    assert set(files) == PUSHED
    for name, data in files.items():
        assert data == (run.out / name).read_bytes(), name
    # What stays local: checkpoints with optimizer states, the Trainer's state and pickled arguments.
    local = set(run.snapshot)
    assert {"trainer_state.json", "training_args.bin"} <= local
    assert any(p.startswith("checkpoint-") and p.endswith("optimizer.pt") for p in local)
    # Weights went through the LFS batch API, the rest inline; one commit by alice on top of the initial one.
    assert run.server.is_lfs("org/name", "model.safetensors")
    commits = run.server.commits("org/name")
    assert len(commits) == 2 and commits[-1]["author"] == "alice"
    assert commits[-1]["message"].startswith("Upload out with vit-pipeline (eval accuracy ")
    # The base model and the dataset came from the stand-in too.
    paths = [p for _, p in run.server.requests]
    assert any("/google/vit-tiny-test/resolve/" in p and p.endswith("model.safetensors") for p in paths)
    assert any("/datasets/org/tiny-digits/resolve/" in p and p.endswith(".parquet") for p in paths)
    assert "Pushed to " in run.stderr


def test_card_parsed_back_from_the_hub(run, run_hub):
    from huggingface_hub import ModelCard, hf_hub_download, metadata_load

    card = ModelCard.load("org/name")
    meta = metadata_load(hf_hub_download("org/name", "README.md"))
    assert meta["base_model"] == "google/vit-tiny-test"
    assert meta["datasets"] == ["org/tiny-digits"]
    assert meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "image-classification"
    assert meta["library_name"] == "transformers"
    assert {"image-classification", "vision", "vit-pipeline"} <= set(meta["tags"])
    (index,) = meta["model-index"]
    assert index["name"] == "org/name"
    (result,) = index["results"]
    assert result["task"]["type"] == "image-classification"
    # The test split (held out of train: the data has train and validation), never used to choose anything.
    assert result["dataset"] == {"name": "org/tiny-digits", "type": "org/tiny-digits",
                                 "split": "test: train (10% of the training rows held out, seed 42)"}
    test_results = json.loads((run.out / "test_results.json").read_text())
    metrics = {m["type"]: m["value"] for m in result["metrics"]}
    assert set(metrics) == {"accuracy", "f1", "precision", "recall"}
    for name, value in metrics.items():
        assert value == pytest.approx(test_results[f"test_{name}"], abs=1e-6)
    assert card.data.eval_results[0].metric_type == "accuracy"
    assert 'pipeline("image-classification", model="org/name")' in card.text


def test_card_images_resolve_to_pushed_files(run, run_hub):
    import re

    from huggingface_hub import hf_hub_download

    text = Path(hf_hub_download("org/name", "README.md")).read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"confusion_matrix.png", "training_curves.png", "explanation_maps.png"} <= set(links)
    files = run.server.files("org/name")
    for link in links:
        assert not link.startswith(("/", "http")), link  # relative to the repo
        assert link in files, f"{link} linked from the card but not pushed"
        downloaded = Path(hf_hub_download("org/name", link)).read_bytes()
        assert downloaded == (run.out / link).read_bytes() and downloaded.startswith(b"\x89PNG")
    assert "predictions.csv" not in files and (run.out / "predictions.csv").is_file()


def test_pipeline_from_the_hub_predicts_like_the_local_folder(run, run_hub):
    from transformers import pipeline

    images = [image.convert("RGB") for image, _ in digits(n_per_class=2, classes=len(LABELS), seed=3)]
    from_hub = pipeline("image-classification", model="org/name")(images, top_k=len(LABELS))
    local = pipeline("image-classification", model=str(run.out))(images, top_k=len(LABELS))
    assert [[p["label"] for p in ps] for ps in from_hub] == [[p["label"] for p in ps] for ps in local]
    for hub_ps, local_ps in zip(from_hub, local, strict=True):
        assert [p["score"] for p in hub_ps] == pytest.approx([p["score"] for p in local_ps], abs=1e-6)
    assert {p["label"] for p in from_hub[0]} == set(LABELS)
    assert count(run.server, "GET", "/org/name/resolve/") >= 3  # config, weights, processor: really pulled


def test_token_is_never_written_or_logged(run):
    import torch

    leaks = [name for name in run.snapshot if TOKEN.encode() in (run.out / name).read_bytes()]
    assert leaks == []
    assert TOKEN not in run.stdout and TOKEN not in run.stderr
    assert all(TOKEN.encode() not in data for data in run.server.files("org/name").values())
    assert all(TOKEN not in e["path"] and TOKEN not in e["query"] for e in run.server.request_log)
    args = torch.load(run.out / "training_args.bin", weights_only=False)
    assert args.hub_token is None


# ------------------------------------------------------------------------------------ vit-pipeline push


def expected_card(run: Run, repo_id: str) -> str:
    """The local card (rendered for org/name) as rendered for `repo_id`; the recipe section keeps what ran."""
    local = (run.out / "README.md").read_text()
    return (local.replace('model="org/name"', f'model="{repo_id}"').replace("\n# org/name\n", f"\n# {repo_id}\n")
            .replace("- name: org/name\n", f"- name: {repo_id}\n"))


def test_push_command_publishes_a_finished_folder(run, hub_server, capsys):
    code, out, err = push(capsys, str(run.out), "--hub_model_id", "org/other", "--hub_token", "hf_good")
    assert code == 0, err
    files = hub_server.files("org/other")
    assert set(files) == PUSHED
    for name in PUSHED - {"README.md"}:
        assert files[name] == (run.out / name).read_bytes(), name
    assert files["README.md"].decode() == expected_card(run, "org/other")
    assert f"Pushed {run.out} to {hub_server.url}/org/other/commit/" in out
    assert snapshot(run.out) == run.snapshot


def test_pushed_card_is_the_card_rendered_for_the_repo_id():
    from vit_pipeline.publish.card import render_card
    from vit_pipeline.publish.card_inputs import CardInputs

    inputs = dict(model_source="google/vit-base-patch16-224-in21k", from_scratch=False, architecture="ViT",
                  labels=["cat", "dog"], eval_metrics={"accuracy": 0.9, "f1": 0.8}, eval_split="validation",
                  train_samples=80, eval_samples=20, dataset_id="org/pets", dataset_display="org/pets",
                  license="apache-2.0", recipe={"output_dir": "outputs/pets", "learning_rate": 2e-5})
    local = str(render_card(CardInputs(model_name="pets", hub_model_id=None, **inputs)))
    for repo_id in ("org/pets-vit", "alice/pets"):
        rendered = str(render_card(CardInputs(model_name=repo_id, hub_model_id=repo_id, **inputs)))
        assert 'model="path/to/output_dir"' in local and f'model="{repo_id}"' in rendered
        assert hub.card_for_repo(local, repo_id, "pets") == rendered
        assert hub.card_for_repo(rendered, repo_id, "pets") == rendered  # already right: unchanged
    # A name the user chose is kept; only the usage snippet follows the repo.
    custom = str(render_card(CardInputs(model_name="My pets model", hub_model_id=None, **inputs)))
    patched = hub.card_for_repo(custom, "org/pets-vit", "pets")
    assert "# My pets model" in patched and 'model="org/pets-vit"' in patched


def test_repush_makes_a_new_commit(run, hub_server, capsys):
    for _ in range(2):
        code, _, err = push(capsys, str(run.out), "--hub_model_id", "org/name", "--hub_token", "hf_good")
        assert code == 0, err
    commits = hub_server.commits("org/name")
    assert len(commits) == 3 and set(commits[-1]["files"]) == PUSHED
    assert set(hub_server.files("org/name")) == PUSHED
    # The weights and figures were stored by the first push: the second one does not send them again.
    assert count(hub_server, "PUT", "/_lfs/") == len(LFS_FILES)


def test_repush_sends_only_what_changed_as_against_the_hub(run, hub_server, capsys, tmp_path):
    hub_server.report_remote_oids = True  # the real Hub's preupload answer: the client skips unchanged files
    code, _, err = push(capsys, str(run.out), "--hub_model_id", "org/name", "--hub_token", "hf_good")
    assert code == 0, err
    code, _, err = push(capsys, str(run.out), "--hub_model_id", "org/name", "--hub_token", "hf_good")
    assert code == 0, err  # nothing changed: no commit, no error
    assert len(hub_server.commits("org/name")) == 2
    again = tmp_path / "again"
    shutil.copytree(run.out, again, ignore=shutil.ignore_patterns("checkpoint-*"))
    (again / "all_results.json").write_text('{"eval_accuracy": 1.0}\n')
    code, _, err = push(capsys, str(again), "--hub_model_id", "org/name", "--hub_token", "hf_good")
    assert code == 0, err
    commits = hub_server.commits("org/name")
    assert len(commits) == 3 and set(commits[-1]["files"]) == {"all_results.json"}
    assert hub_server.files("org/name")["all_results.json"] == b'{"eval_accuracy": 1.0}\n'


def test_push_to_a_branch(run, hub_server, capsys):
    code, _, err = push(capsys, str(run.out), "--hub_model_id", "org/name", "--hub_token", "hf_good",
                        "--hub_revision", "dev", "--commit_message", "try dev")
    assert code == 0, err
    assert set(hub_server.branches("org/name")) == {"main", "dev"}
    assert set(hub_server.files("org/name", revision="dev")) == PUSHED
    assert hub_server.files("org/name") == {}
    assert hub_server.commits("org/name", revision="dev")[-1]["message"] == "try dev"


def test_private_repo(run, hub_server, capsys):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    code, _, err = push(capsys, str(run.out), "--hub_model_id", "org/secret", "--hub_token", "hf_good",
                        "--hub_private_repo")
    assert code == 0, err
    assert HfApi().model_info("org/secret", token="hf_read").private is True
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/secret", "config.json")  # anonymous
    assert Path(hf_hub_download("org/secret", "config.json", token="hf_read")).read_bytes() == (
        run.out / "config.json").read_bytes()


def test_token_from_hf_token_and_checkpoint_strategy(run, hub_server, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    # No --hub_model_id: the folder's recipe.yaml names org/name.
    code, _, err = push(capsys, str(run.out), "--hub_strategy", "checkpoint")
    assert code == 0, err
    files = hub_server.files("org/name")
    last = max((p.split("/")[0] for p in run.snapshot if p.startswith("checkpoint-")), key=lambda p: int(p[11:]))
    resumable = {f"last-checkpoint/{p[len(last) + 1:]}" for p in run.snapshot if p.startswith(last + "/")
                 and not p.endswith("training_args.bin")}
    assert set(files) == PUSHED | resumable
    assert "last-checkpoint/optimizer.pt" in files and "last-checkpoint/trainer_state.json" in files
    assert files["last-checkpoint/optimizer.pt"] == (run.out / last / "optimizer.pt").read_bytes()


def test_new_weights_replace_stale_shards(run, hub_server, capsys, tmp_path):
    from transformers import ViTForImageClassification

    code, _, err = push(capsys, str(run.out), "--hub_model_id", "org/name", "--hub_token", "hf_good")
    assert code == 0, err
    sharded = tmp_path / "sharded"
    shutil.copytree(run.out, sharded, ignore=shutil.ignore_patterns("checkpoint-*", "model.safetensors"))
    ViTForImageClassification.from_pretrained(run.out).save_pretrained(sharded, max_shard_size="60KB")
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) >= 2
    code, _, err = push(capsys, str(sharded), "--hub_model_id", "org/name", "--hub_token", "hf_good")
    assert code == 0, err
    files = set(hub_server.files("org/name"))
    assert "model.safetensors" not in files  # would shadow the new shards
    assert files == PUSHED - {"model.safetensors"} | {"model.safetensors.index.json", *shards}


# ------------------------------------------------------------------------------------ failures


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FAILURES = {
    # name: (repo id, push args, what the line says)
    "no token": ("org/name", (), "no Hugging Face token: run `hf auth login` or set HF_TOKEN"),
    "bad token": ("org/name", ("--hub_token", "hf_not_a_token"), "the Hub rejected the token (HTTP 401"),
    "read-only token": ("org/name", ("--hub_token", "hf_read"), "the token may not write to org/name (HTTP 403"),
    "foreign namespace": ("bob/name", ("--hub_token", "hf_good"), "the token may not write to bob/name (HTTP 403"),
    "invalid repo id": ("org/bad--name", ("--hub_token", "hf_good"), "invalid --hub_model_id 'org/bad--name'"),
    "hub keeps failing": ("org/name", ("--hub_token", "hf_good"), "the Hub kept failing after 4 attempts (HTTP 503"),
    "dropped mid-upload": ("org/name", ("--hub_token", "hf_good"),
                           "the connection to the Hub dropped mid-upload after 4 attempts"),
    "unreachable": ("org/name", ("--hub_token", "hf_good"), "cannot reach the Hub at http://127.0.0.1:"),
    "offline": ("org/name", ("--hub_token", "hf_good"), "HF_HUB_OFFLINE=1 is set, so the Hub was not contacted"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failed_push_explains_and_keeps_the_folder(case, run, hub_server, hub_fast_retries, capsys, monkeypatch,
                                                   tmp_path):
    from huggingface_hub import constants

    repo_id, args, says = FAILURES[case]
    if case == "hub keeps failing":
        hub_server.fail_next("/commit/", status=503, times=4)
    elif case == "dropped mid-upload":
        hub_server.drop_next("/commit/", times=4)
    elif case == "unreachable":
        point_hub_client_at(monkeypatch, f"http://127.0.0.1:{closed_port()}", tmp_path / "hf2")
    elif case == "offline":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, out, err = push(capsys, str(run.out), "--hub_model_id", repo_id, *args)
    assert code == 2, out
    # One line, the last one (progress bars and retry warnings come before it).
    errors = [line for line in err.splitlines() if line.startswith("vit-pipeline: error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0]
    line = errors[0]
    assert line.startswith(f"vit-pipeline: error: push to {repo_id} failed: "
                                                if case != "invalid repo id" else "vit-pipeline: error: invalid")
    assert says in line
    later = f"vit-pipeline push {run.out} --hub_model_id {repo_id if case != 'invalid repo id' else 'ORG/NAME'}"
    assert line.endswith(f"the output folder {run.out} is complete; push it later with: {later}")
    assert "hf_good" not in line and "hf_read" not in line and "hf_not_a_token" not in line
    assert snapshot(run.out) == run.snapshot
    if hub_server.has_repo(repo_id):
        assert hub_server.files(repo_id) == {}  # nothing committed
    if case == "hub keeps failing":
        assert count(hub_server, "POST", "/commit/main") == 4


def test_5xx_then_success_is_retried_with_backoff(run, hub_server, capsys, caplog, monkeypatch):
    monkeypatch.delenv(hub.BACKOFF_ENV)
    sleeps: list[float] = []
    monkeypatch.setattr(hub, "time", _NoSleepTime(sleeps))
    hub_server.fail_next("/commit/", status=500, times=2)
    code, _, err = push(capsys, str(run.out), "--hub_model_id", "org/name", "--hub_token", "hf_good")
    assert code == 0, err
    assert count(hub_server, "POST", "/commit/main") == 3
    assert sleeps == [2.0, 4.0]
    assert "HTTP 500: Injected failure (500) by the Hub stand-in); retrying in 2s (attempt 2 of 4)" in caplog.text
    assert set(hub_server.files("org/name")) == PUSHED
    assert len(hub_server.commits("org/name")) == 2


def test_dropped_connection_mid_upload_is_retried(run, hub_server, hub_fast_retries, capsys):
    # The LFS upload drop is retried by huggingface_hub itself, the commit drop by the whole-push retry.
    hub_server.drop_next("/_lfs/", times=1, method="PUT")
    hub_server.drop_next("/commit/", times=1)
    code, _, err = push(capsys, str(run.out), "--hub_model_id", "org/name", "--hub_token", "hf_good")
    assert code == 0, err
    assert count(hub_server, "PUT", "/_lfs/") == len(LFS_FILES) + 1
    assert count(hub_server, "POST", "/commit/main") == 2
    assert hub_server.files("org/name")["model.safetensors"] == (run.out / "model.safetensors").read_bytes()


def test_push_command_usage_errors(run, tmp_path, hub_server, capsys):
    code, _, err = push(capsys, str(tmp_path / "nowhere"), "--hub_model_id", "org/name", "--hub_token", "hf_good")
    assert code == 2 and "output folder" in err and "does not exist" in err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    code, _, err = push(capsys, str(tmp_path / "half"), "--hub_model_id", "org/name", "--hub_token", "hf_good")
    assert code == 2 and "holds no trained model" in err
    (tmp_path / "plain").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(run.out / name, tmp_path / "plain" / name)
    code, _, err = push(capsys, str(tmp_path / "plain"))  # no --hub_model_id, no recipe.yaml naming one
    assert code == 2 and "no repo to push to: pass --hub_model_id ORG/NAME" in err
    assert hub_server.requests == []


# ------------------------------------------------------------------------------------ while training


def test_train_checks_the_push_before_loading_anything(tiny_vit, digits_folder, tmp_path, hub_server, capsys):
    out = tmp_path / "out"
    base = ("train", "--model_name_or_path", str(tiny_vit), "--dataset_name", str(digits_folder), "--output_dir",
            str(out), *FAST, "--push_to_hub")
    for args, says in ((("--hub_model_id", "org/name"), "--push_to_hub needs a Hugging Face token"),
                       (("--hub_model_id", "org/a..b", "--hub_token", "hf_good"), "invalid --hub_model_id"),
                       (("--hub_model_id", "org/name", "--hub_token", "hf_good", "--hub_strategy", "often"),
                        "invalid choice: 'often' (choose from 'end', 'every_save'")):
        with pytest.raises(SystemExit) as exit_info:
            main([*base, *args])
        assert exit_info.value.code == 2
        assert says in capsys.readouterr().err
        assert not out.exists()  # nothing trained, nothing written
    assert hub_server.requests == []


# The checkpoint push is a TrainerCallback: both backends call it (their checkpoints hold different optimizer files).
@pytest.mark.parametrize("backend, optimizer_files", [("trainer", ("optimizer.pt", "scheduler.pt")),
                                                      ("accelerate", ("optimizer.bin", "scheduler.bin"))])
@pytest.mark.slow
def test_hub_strategy_all_checkpoints_pushes_while_training(backend, optimizer_files, tiny_vit, digits_folder,
                                                             tmp_path, hub_server):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model_name_or_path", str(tiny_vit), "--dataset_name", str(digits_folder),
              "--output_dir", str(out), *FAST, "--max_train_samples", "32", "--max_eval_samples", "20",
              "--push_to_hub", "--hub_model_id", "org/ckpt", "--hub_token", "hf_good",
              "--hub_strategy", "all_checkpoints", "--backend", backend])
        raise SystemExit(0)
    assert exit_info.value.code == 0
    files = hub_server.files("org/ckpt")
    commits = hub_server.commits("org/ckpt")
    # initial, one commit per epoch's checkpoint (2 epochs of 32 rows at batch 16), then the finished run.
    assert [c["message"].split(",")[0] for c in commits[1:3]] == ["Training in progress"] * 2
    assert commits[-1]["message"].startswith("Upload out with vit-pipeline")
    assert len(commits) == 4
    for step in (2, 4):
        assert {f"checkpoint-{step}/{name}" for name in ("model.safetensors", *optimizer_files, "trainer_state.json",
                                                           "config.json", "preprocessor_config.json")} <= set(files)
        assert f"checkpoint-{step}/training_args.bin" not in files
    assert {name for name in files if not name.startswith("checkpoint-")} == PUSHED
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert not list(out.glob(".hub-push-*"))  # staging folders cleaned up
