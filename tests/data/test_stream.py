"""Streaming (`streaming: true`) and WebDataset shards, on local shards of real digits, through the real command."""

from __future__ import annotations

import io
import json
import multiprocessing
import tarfile
from pathlib import Path

import pytest

from tests.conftest import FAST, digits, run_cli, run_cli_here, save_tiny_vit, to_dataset

SHARDS = 4


def write_parquet_shards(root: Path, rows, shards: int = SHARDS) -> Path:
    """`rows` as `root/data/train-0000i-of-0000n.parquet` (no README: the stream's length is unknown)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    ds = to_dataset(rows)
    for i in range(shards):
        ds.shard(shards, i, contiguous=False).to_parquet(str(root / "data" / f"train-{i:05d}-of-{shards:05d}.parquet"))
    return root


def write_webdataset(root: Path, rows, shards: int = SHARDS, label: str = "cls", bad: int | None = None,
                     split: str = "train") -> Path:
    """`rows` as WebDataset shards `root/<split>-0000i.tar`: `<key>.png` + `<key>.cls` (or `<key>.json`)."""
    root.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        with tarfile.open(root / f"{split}-{shard:05d}.tar", "w") as tar:
            for i in range(shard, len(rows), shards):
                image, digit = rows[i]
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                data = buffer.getvalue() if i != bad else b"\x89PNG\r\n\x1a\n truncated"
                extra = str(digit).encode() if label == "cls" else json.dumps({"label": digit}).encode()
                for ext, payload in (("png", data), (label, extra)):
                    info = tarfile.TarInfo(f"{i:05d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return root


@pytest.fixture(scope="module")
def digits_rows():
    return digits(n_per_class=12)


@pytest.fixture(scope="module")
def model16(tmp_path_factory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("vit16"), num_labels=3, image_size=16)


STREAM = ("--streaming", "true", "--max_steps", "6", "--horizontal_flip", "false", "--learning_rate", "1e-3",
          "--dataloader_num_workers", "2")


def _train(model, data, out, *extra):
    # In this process (its loader workers are processes of their own): a `python -m vit_pipeline` start costs more here
    # than these 6 steps.
    return run_cli_here("train", "--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir",
                        str(out), *FAST, *STREAM, *extra)


@pytest.mark.slow
def test_stream_parquet_shards_trainer_backend(model16, digits_rows, tmp_path):
    data = write_parquet_shards(tmp_path / "pq", digits_rows)
    out = tmp_path / "out"
    result = _train(model16, data, out)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr + result.stdout
    # No README: the labels come from a first pass, said in the log; eval is held out from the stream by hash.
    assert "10 label(s) from a first pass" in log
    metrics = json.loads((out / "eval_results.json").read_text())
    assert 0 < metrics["eval_accuracy"] <= 1
    # Every tenth of the 6 steps is one step: checkpoints carry the stream's position.
    assert (out / "checkpoint-6" / "stream_state-0.pt").is_file()
    card = (out / "README.md").read_text()
    assert "streamed" in card
    from transformers import AutoModelForImageClassification

    assert AutoModelForImageClassification.from_pretrained(out).config.id2label[3] == "3"


@pytest.mark.slow
@pytest.mark.parametrize("label", ["cls", "json"])
def test_stream_webdataset_accelerate_backend(model16, digits_rows, tmp_path, label):
    data = write_webdataset(tmp_path / "wds", digits_rows, label=label)
    out = tmp_path / "out"
    result = _train(model16, data, out, "--backend", "accelerate")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "eval_results.json").read_text())["eval_accuracy"] > 0
    assert (out / "checkpoint-6" / "stream_state-0.pt").is_file()


def test_webdataset_map_style(digits_rows, tmp_path):
    """The same .tar shards without streaming: datasets' webdataset builder, labels from json."""
    from vit_pipeline.config import DataArguments
    from vit_pipeline.data.load import load_splits

    data = write_webdataset(tmp_path / "wds", digits_rows, label="json")
    splits = load_splits(DataArguments(dataset_name=str(data), train_val_split=0.25), seed=0)
    # Eval (25%), then the default test part (10% of the rest) held out of train: every row lands in one of them.
    assert len(splits.train) + len(splits.eval) + len(splits.test) == len(digits_rows) and len(splits.test) == 9
    assert splits.labels == [str(d) for d in range(10)]
    assert splits.train.column_names == ["image", "label"]


@pytest.mark.slow
def test_stream_bad_image_error_and_skip(model16, digits_rows, tmp_path):
    data = write_webdataset(tmp_path / "wds", digits_rows, bad=5)
    # An eval split of its own, so the bad training row is met while streaming.
    write_webdataset(tmp_path / "wds", digits_rows[:20], split="validation", shards=1)
    result = _train(model16, data, tmp_path / "error")
    assert result.returncode == 2
    # The failed run stopped its stream's 2 loader workers (`CloseLoaderWorkers`) instead of leaving them to the
    # garbage collector, whose shutdown of them waits 5 s each, later, in this process.
    assert multiprocessing.active_children() == []
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("vit-pipeline: error: unreadable image in the training stream")
    assert "bad_images: skip" in line
    # A process of its own: the loader workers log the skip, and a worker's log reaches the process's stderr.
    result = run_cli("train", "--model_name_or_path", str(model16), "--dataset_name", str(data), "--output_dir",
                     str(tmp_path / "skip"), *FAST, *STREAM, "--bad_images", "skip")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Skipping unreadable image in the training stream" in result.stderr + result.stdout


@pytest.mark.slow
def test_stream_without_length_needs_max_steps(model16, digits_rows, tmp_path):
    data = write_parquet_shards(tmp_path / "pq", digits_rows)
    result = run_cli_here("train", "--model_name_or_path", str(model16), "--dataset_name", str(data), "--output_dir",
                          str(tmp_path / "out"), *FAST, "--streaming", "true")
    assert result.returncode == 2
    assert "set max_steps" in result.stderr.strip().splitlines()[-1]


def test_stream_option_checks():
    from vit_pipeline import PipelineError
    from vit_pipeline.config import DataArguments

    with pytest.raises(PipelineError, match="pixel_cache"):
        DataArguments(dataset_name="x", streaming=True, pixel_cache=True)
    with pytest.raises(PipelineError, match="max_steps"):
        DataArguments(dataset_name="x", streaming=True, max_train_samples=10)
    with pytest.raises(PipelineError, match="shuffle_buffer_size"):
        DataArguments(dataset_name="x", shuffle_buffer_size=-1)


def _stream(data, shuffle_buffer_size: int, seed: int = 0):
    from transformers import ViTImageProcessor

    from vit_pipeline.config import DataArguments
    from vit_pipeline.data.stream import prepare_stream, stream_splits

    data_args = DataArguments(dataset_name=str(data), streaming=True, shuffle_buffer_size=shuffle_buffer_size,
                              random_resized_crop=False, horizontal_flip=False)
    splits = stream_splits(data_args, seed=seed)
    return prepare_stream(splits.train, ViTImageProcessor(size={"height": 8, "width": 8}), data_args)


def _keys(batch) -> list[bytes]:
    # A row's identity: its (deterministic, no augmentation) pixels.
    return [bytes(p.flatten().tolist()) for p in batch["pixel_values"]]


@pytest.mark.parametrize("shuffle_buffer_size", [0, 16])
def test_resumed_stream_continues_with_the_next_unseen_rows(digits_rows, tmp_path, shuffle_buffer_size):
    from vit_pipeline.data.transforms import collate
    from vit_pipeline.training.streaming import load_stream_state, save_stream_state, stream_loader

    data = write_webdataset(tmp_path / "wds", digits_rows)
    full = [k for b in stream_loader(_stream(data, shuffle_buffer_size), 4, collate, num_workers=2) for k in _keys(b)]
    loader = stream_loader(_stream(data, shuffle_buffer_size), 4, collate, num_workers=2)
    seen = []
    for i, batch in enumerate(loader):
        seen += _keys(batch)
        if i == 4:
            break
    save_stream_state(loader, tmp_path, rank=0)
    resumed = stream_loader(_stream(data, shuffle_buffer_size), 4, collate, num_workers=2)
    assert load_stream_state(resumed, tmp_path, rank=0)
    rest = [k for b in resumed for k in _keys(b)]
    assert rest and not set(rest) & set(seen)
    if shuffle_buffer_size == 0:
        # Stream order: exactly the rows the uninterrupted run reads next.
        assert seen + rest == full
    else:
        # The rows in the shuffle buffer at the checkpoint are not replayed (datasets' rule): at most a buffer's worth.
        assert len(full) - shuffle_buffer_size * 2 <= len(seen) + len(rest) <= len(full)


@pytest.mark.slow
def test_resume_a_streamed_run(model16, digits_rows, tmp_path):
    """A run stopped at a checkpoint resumes the stream where it was, in the same output folder."""
    data = write_webdataset(tmp_path / "wds", digits_rows)
    out = tmp_path / "out"
    first = _train(model16, data, out, "--max_steps", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    again = _train(model16, data, out, "--max_steps", "6")
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stderr + again.stdout
    assert "resuming the stream where checkpoint-3 left it" in log
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["trainer", "accelerate"])
def test_two_processes_stream_their_own_shards(model16, digits_rows, tmp_path, backend):
    """torchrun, 2 processes on the CPU: each streams 2 of the 4 shards, checkpoints hold both positions."""
    from tests.training.test_distributed import launch

    data = write_webdataset(tmp_path / "wds", digits_rows)
    out = tmp_path / "out"
    result = launch("torchrun", ["train", "--model_name_or_path", str(model16), "--dataset_name", str(data),
                                 "--output_dir", str(out), *FAST, *STREAM, "--backend", backend,
                                 "--per_device_train_batch_size", "8", "--dataloader_num_workers", "1"])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "every process reads every row" not in result.stderr + result.stdout
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6
    assert {p.name for p in (out / "checkpoint-6").glob("stream_state-*.pt")} == {"stream_state-0.pt",
                                                                                  "stream_state-1.pt"}
    assert json.loads((out / "eval_results.json").read_text())["eval_accuracy"] > 0


@pytest.mark.slow
def test_stream_a_hub_dataset_of_webdataset_shards(model16, digits_rows, tmp_path, hub_server):
    """A Hub dataset id (the local Hub stand-in): WebDataset shards streamed, nothing downloaded up front."""
    folder = write_webdataset(tmp_path / "wds", digits_rows)
    hub_server.commit_files("org/digits-wds", {p.name: p.read_bytes() for p in folder.glob("*.tar")},
                            repo_type="dataset")
    out = tmp_path / "out"
    result = run_cli("train", "--model_name_or_path", str(model16), "--dataset_name", "org/digits-wds",
                     "--output_dir", str(out), *FAST, *STREAM, "--backend", "accelerate",
                     env={"HF_DATASETS_OFFLINE": "0", "HF_HUB_OFFLINE": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "eval_results.json").read_text())["eval_accuracy"] > 0
    assert "org/digits-wds" in (out / "README.md").read_text()
