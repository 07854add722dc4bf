"""Each fine-tuning technique shows its effect: on parameter groups, weights, losses, batches and saved outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.commands.test_train import check_output, train
from tests.conftest import digits, photos, save_tiny_vit, to_dataset, write_parquet_repo
from vit_pipeline import PipelineError
from vit_pipeline.config import RecipeParser

QUICK = ("--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32", "--dataloader_num_workers", "0",
         "--disable_tqdm", "true", "--report_to", "none", "--horizontal_flip", "false")
PHOTO_LABELS = ["astronaut", "chelsea", "coffee"]
# The end-to-end technique tests run on both backends: the Accelerate loop must honour every option the Trainer does.
backends = pytest.mark.parametrize("backend", ["trainer", "accelerate"])


@pytest.fixture(scope="module")
def photos_repo(tmp_path_factory) -> Path:
    """3 classes of photo crops: 8 per class to train, 3 per class to validate."""
    root = tmp_path_factory.mktemp("photos-repo")
    return write_parquet_repo(root, {"train": to_dataset(photos(n_per_class=8, seed=0), class_names=PHOTO_LABELS),
                                     "validation": to_dataset(photos(n_per_class=3, seed=1),
                                                              class_names=PHOTO_LABELS)})


@pytest.fixture(scope="module")
def tiny3(tmp_path_factory) -> Path:
    """A tiny ViT classifier with a 3-class head (the photos' class count, so its head is loaded, not fresh)."""
    return save_tiny_vit(tmp_path_factory.mktemp("tiny3"), num_labels=3)


def tiny_model(num_labels: int = 3, image_size: int = 32, seed: int = 0):
    from transformers import ViTConfig, ViTForImageClassification

    from tests.conftest import TINY_VIT

    torch.manual_seed(seed)
    return ViTForImageClassification(ViTConfig(**{**TINY_VIT, "image_size": image_size}, num_labels=num_labels))


def state(folder: Path) -> dict[str, torch.Tensor]:
    """Weights of a saved model under transformers' in-memory names."""
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(folder).state_dict()


def uncalibrated_state(folder: Path) -> dict[str, torch.Tensor]:
    """Weights of a saved run's model with its calibration temperature unfolded (the head multiplied back by T): the
    weights training chose."""
    from transformers import AutoModelForImageClassification

    from vit_pipeline.evaluation.calibration import fold_temperature

    model = AutoModelForImageClassification.from_pretrained(folder)
    fold_temperature(model, 1 / model.config.calibration_temperature)
    return model.state_dict()


def checkpoint_state(folder: Path) -> dict[str, torch.Tensor]:
    """Weights of a checkpoint of either backend under transformers' in-memory names."""
    if (folder / "config.json").is_file():
        return state(folder)
    # The accelerate backend's checkpoints hold the model's own state dict (no config.json).
    return load_file(folder / "model.safetensors")


# Layer-wise learning-rate decay, backbone vs head rates, frozen backbone.

def test_layer_decay_gives_the_stated_rate_to_each_layer_group():
    from vit_pipeline.training.optim import param_groups

    model = tiny_model()  # 2 blocks: embeddings id 0, blocks 1-2, final norm 3
    groups = param_groups(model, learning_rate=1e-3, weight_decay=0.05, layer_decay=0.5)
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr["head"] == pytest.approx(1e-3) and lr["head_no_decay"] == pytest.approx(1e-3)
    assert lr["layer_3_no_decay"] == pytest.approx(1e-3)  # final layernorm: top of the backbone
    assert lr["layer_2"] == pytest.approx(5e-4)  # last block
    assert lr["layer_1"] == pytest.approx(2.5e-4)  # first block
    assert lr["layer_0"] == pytest.approx(1.25e-4)  # patch embedding, cls token, position embeddings
    names = {id(p): n for n, p in model.named_parameters()}
    members = {g["name"]: {names[id(p)] for p in g["params"]} for g in groups}
    assert "vit.layers.0.attention.q_proj.weight" in members["layer_1"]
    assert "vit.layers.1.mlp.fc2.weight" in members["layer_2"]
    assert "vit.layers.1.mlp.fc2.bias" in members["layer_2_no_decay"]
    assert {"vit.embeddings.position_embeddings", "vit.embeddings.cls_token"} <= members["layer_0"]
    assert members["head"] == {"classifier.weight"}
    # Every trainable weight in exactly one group; weight decay as the Trainer's rule says.
    assert sorted(n for m in members.values() for n in m) == sorted(names.values())
    assert all(g["weight_decay"] == (0.0 if g["name"].endswith("_no_decay") else 0.05) for g in groups)


def test_backbone_rate_with_layer_decay_and_through_the_trainer(tmp_path):
    from vit_pipeline.config import PipelineTrainingArguments
    from vit_pipeline.training.trainer import PipelineTrainer

    args = PipelineTrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, backbone_learning_rate=1e-4,
                                     layer_decay=0.5, weight_decay=0.0, report_to="none", use_cpu=True,
                                     eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    model = tiny_model()
    optimizer = PipelineTrainer(model=model, args=args).create_optimizer()
    lr = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lr["head_no_decay"] == pytest.approx(1e-3)  # the head keeps learning_rate
    assert lr["layer_3_no_decay"] == pytest.approx(1e-4)  # the backbone's top takes backbone_learning_rate
    assert lr["layer_2_no_decay"] == pytest.approx(5e-5)
    assert lr["layer_0_no_decay"] == pytest.approx(1.25e-5)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


@backends
@pytest.mark.slow
def test_frozen_backbone_weights_do_not_change(backend, tiny3, photos_repo, tmp_path):
    out = tmp_path / "out"
    train("--model_name_or_path", str(tiny3), "--dataset_name", str(photos_repo), "--output_dir", str(out), *QUICK,
          "--backend", backend, "--num_train_epochs", "2", "--learning_rate", "1e-2", "--freeze_backbone", "true")
    check_output(out, PHOTO_LABELS)
    before, after = state(tiny3), state(out)
    backbone = [k for k in before if k.startswith("vit.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])  # the head did train


# Augmentation: RandAugment / TrivialAugment / random erasing per image; MixUp / CutMix per batch.

def test_augmentation_steps_are_torchvision_v2_in_the_train_transform_only():
    from torchvision.transforms import v2 as T
    from transformers import ViTImageProcessor

    from vit_pipeline.data.transforms import Finish, build_transforms

    data_args = SimpleNamespace(random_resized_crop=True, crop_scale_min=0.5, horizontal_flip=True,
                                auto_augment="randaugment", rand_augment_num_ops=2, rand_augment_magnitude=9,
                                random_erasing=1.0)
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    train_transform, eval_transform = build_transforms(processor, data_args)
    kinds = [type(t) for t in train_transform.transforms]
    assert T.RandAugment in kinds and kinds[-1] is T.RandomErasing  # erasing acts on the normalised tensor
    # RandAugment acts on uint8, before the processor's rescale + normalize (Finish).
    assert kinds.index(T.RandAugment) < kinds.index(Finish)
    assert not any(k in (T.RandAugment, T.RandomErasing) for k in map(type, eval_transform.transforms))
    image = photos(n_per_class=1)[0][0]
    assert train_transform(image).shape == (3, 32, 32)
    trivial = build_transforms(processor, SimpleNamespace(**{**data_args.__dict__, "auto_augment": "trivialaugment",
                                                             "random_erasing": 0.0}))[0]
    assert T.TrivialAugmentWide in [type(t) for t in trivial.transforms]


def test_mixup_and_cutmix_give_soft_targets_and_the_loss_takes_them():
    from vit_pipeline.data.augment import MixingCollator
    from vit_pipeline.training.loss import ClassificationLoss

    torch.manual_seed(0)
    rows = [{"pixel_values": torch.randn(3, 16, 16), "label": i % 4} for i in range(8)]
    for mixup, cutmix in ((0.8, 0.0), (0.0, 1.0), (0.8, 1.0)):
        batch = MixingCollator(4, mixup_alpha=mixup, cutmix_alpha=cutmix)(rows)
        labels = batch["labels"]
        assert labels.shape == (8, 4) and labels.dtype == torch.float32
        assert torch.allclose(labels.sum(-1), torch.ones(8))
        assert ((labels > 0) & (labels < 1)).any()  # mixed, not one-hot
        assert not torch.equal(batch["pixel_values"], torch.stack([r["pixel_values"] for r in rows]))
    logits = torch.randn(8, 4)
    loss = ClassificationLoss()({"logits": logits}, labels)
    manual = -(labels * torch.log_softmax(logits, -1)).sum(-1).mean()
    assert loss == pytest.approx(manual.item(), rel=1e-5)
    # One-hot soft targets give exactly the hard-label loss; accumulated batches divide by the sample count.
    hard = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    one_hot = torch.nn.functional.one_hot(hard, 4).float()
    assert ClassificationLoss()({"logits": logits}, one_hot) == pytest.approx(
        torch.nn.functional.cross_entropy(logits, hard).item(), rel=1e-5)
    assert ClassificationLoss()({"logits": logits}, one_hot, num_items_in_batch=torch.tensor(16 * 4)) == \
        pytest.approx(torch.nn.functional.cross_entropy(logits, hard, reduction="sum").item() / 16, rel=1e-5)


def test_trainer_mixes_training_batches_only(tmp_path):
    from transformers import ViTImageProcessor

    from vit_pipeline.config import PipelineTrainingArguments
    from vit_pipeline.data.prepare import BatchTransform
    from vit_pipeline.data.transforms import build_transforms, collate
    from vit_pipeline.training.shared import training_extras
    from vit_pipeline.training.trainer import PipelineTrainer

    args = PipelineTrainingArguments(output_dir=str(tmp_path), mixup_alpha=0.8, cutmix_alpha=1.0, report_to="none",
                                     use_cpu=True, per_device_train_batch_size=8, per_device_eval_batch_size=8,
                                     dataloader_num_workers=0)
    train_t, eval_t = build_transforms(ViTImageProcessor(size={"height": 32, "width": 32}))
    ds = to_dataset(photos(n_per_class=4), class_names=PHOTO_LABELS)
    trainer = PipelineTrainer(model=tiny_model(), args=args, train_dataset=ds.with_transform(BatchTransform(train_t)),
                              eval_dataset=ds.with_transform(BatchTransform(eval_t)), data_collator=collate)
    extras = training_extras(args, ds, 3)
    trainer.train_collator = extras.train_collator
    assert extras.loss is not None  # soft targets need the soft-target loss
    train_labels = next(iter(trainer.get_train_dataloader()))["labels"]
    eval_labels = next(iter(trainer.get_eval_dataloader()))["labels"]
    assert train_labels.shape == (8, 3) and train_labels.is_floating_point()
    assert eval_labels.shape == (8,) and eval_labels.dtype == torch.long
    assert trainer.data_collator is collate


def test_label_smoothing_and_class_weights_change_the_loss():
    from vit_pipeline.training.loss import ClassificationLoss, balanced_class_weights, label_counts

    weights = balanced_class_weights([6, 2])
    assert weights.tolist() == pytest.approx([8 / 12, 8 / 4])
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 2), torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    plain = ClassificationLoss()({"logits": logits}, labels)
    weighted = ClassificationLoss(class_weights=weights)({"logits": logits}, labels)
    per_sample = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert weighted == pytest.approx((per_sample * weights[labels]).mean().item(), rel=1e-5)
    assert weighted != pytest.approx(plain.item(), rel=1e-3)
    smoothed = ClassificationLoss(label_smoothing=0.1)({"logits": logits}, labels)
    assert smoothed == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel=1e-5)
    # Counts come from the label column of a dataset with an image transform, without decoding images.
    ds = to_dataset(digits(n_per_class=3, classes=2) + digits(n_per_class=5, classes=1, seed=1),
                    class_names=["0", "1"]).with_transform(lambda b: {"never": [1 / 0]})
    assert label_counts(ds, 2).tolist() == [8, 3]


@backends
@pytest.mark.slow
def test_class_weighted_loss_and_label_smoothing_run_end_to_end(backend, tiny3, tmp_path):
    # Imbalanced: 12 astronaut, 4 chelsea, 4 coffee images.
    rows = [r for r in photos(n_per_class=12) if r[1] == "astronaut"] + \
        [r for r in photos(n_per_class=4) if r[1] != "astronaut"]
    repo = write_parquet_repo(tmp_path / "data", {"train": to_dataset(rows, class_names=PHOTO_LABELS),
                                                  "validation": to_dataset(photos(n_per_class=2, seed=1),
                                                                           class_names=PHOTO_LABELS)})
    out = tmp_path / "out"
    train("--model_name_or_path", str(tiny3), "--dataset_name", str(repo), "--output_dir", str(out), *QUICK,
          "--backend", backend, "--num_train_epochs", "1", "--class_weighted_loss", "true",
          "--label_smoothing_factor", "0.1")
    check_output(out, PHOTO_LABELS)
    card = (out / "README.md").read_text()
    assert "class_weighted_loss: True" in card and "label_smoothing_factor: 0.1" in card


# EMA of the weights.

@backends
@pytest.mark.slow
def test_ema_weights_are_evaluated_saved_and_differ_from_the_raw_weights(backend, tiny3, photos_repo, tmp_path):
    out = tmp_path / "out"
    train("--model_name_or_path", str(tiny3), "--dataset_name", str(photos_repo), "--output_dir", str(out), *QUICK,
          "--backend", backend, "--num_train_epochs", "2", "--learning_rate", "1e-2", "--ema_decay", "0.5",
          "--save_total_limit", "3")
    check_output(out, PHOTO_LABELS)
    trainer_state = json.loads((out / "trainer_state.json").read_text())
    best = Path(trainer_state["best_model_checkpoint"])
    ema = {k[len("module."):]: v for k, v in load_file(best / "ema.safetensors").items() if k.startswith("module.")}
    raw, saved = checkpoint_state(best), uncalibrated_state(out)
    changed = [k for k in raw if not torch.equal(raw[k], ema[k])]
    assert changed, "the average should lag the raw weights"
    # The saved model is the average of the best checkpoint (then calibrated), not its raw weights: the backbone as
    # averaged, the head up to the rounding of dividing by T and multiplying back.
    assert all(torch.allclose(saved[k], ema[k]) for k in saved if not k.startswith("classifier."))
    assert all(torch.allclose(saved[k], ema[k], atol=1e-6) for k in saved if k.startswith("classifier."))
    assert not all(torch.equal(saved[k], raw[k]) for k in saved)


@pytest.mark.slow
def test_ema_resumes_from_its_checkpoint(tiny3, photos_repo, tmp_path):
    from vit_pipeline.training.ema import ModelEMA

    model = tiny_model()
    ema = ModelEMA(0.9)
    ema.attach(model)
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        ema.update(model)
    ema.save(tmp_path)
    again = ModelEMA(0.9)
    assert again.load(tmp_path)
    again.attach(tiny_model(seed=1))  # the loaded average wins over the new model's weights
    assert all(torch.equal(a, b) for a, b in zip(ema.weights().values(), again.weights().values(), strict=True))
    assert int(again.averaged.n_averaged) == 3
    with again.applied(model):
        assert torch.equal(model.classifier.weight, again.weights()["classifier.weight"])
    assert not torch.equal(model.classifier.weight, again.weights()["classifier.weight"])


# Early stopping.

@backends
@pytest.mark.slow
def test_early_stopping_stops_before_the_last_epoch(backend, tiny3, photos_repo, tmp_path):
    out = tmp_path / "out"
    # A threshold of 1.0 accuracy can never be beaten: the second evaluation already counts as no improvement.
    train("--model_name_or_path", str(tiny3), "--dataset_name", str(photos_repo), "--output_dir", str(out), *QUICK,
          "--backend", backend, "--num_train_epochs", "6", "--early_stopping_patience", "1",
          "--early_stopping_threshold", "1.0")
    trainer_state = json.loads((out / "trainer_state.json").read_text())
    steps_per_epoch = 3  # 24 images / batch 8
    assert trainer_state["global_step"] == 2 * steps_per_epoch < 6 * steps_per_epoch
    assert len([e for e in trainer_state["log_history"] if "eval_accuracy" in e]) >= 2
    check_output(out, PHOTO_LABELS)


# Higher resolution.

def test_resized_position_embeddings_match_on_the_fly_interpolation():
    from transformers import ViTImageProcessor

    from vit_pipeline.model.resolution import resize_position_embeddings, set_processor_size

    original, resized = tiny_model(), tiny_model()
    assert resize_position_embeddings(resized, 48)
    assert resized.config.image_size == 48 and resized.vit.embeddings.position_embeddings.shape[1] == 1 + 36
    pixels = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected = original(pixel_values=pixels, interpolate_pos_encoding=True).logits
        got = resized(pixel_values=pixels).logits  # no interpolation needed any more
    assert torch.allclose(expected, got, atol=1e-5)
    with pytest.raises(PipelineError, match="multiple of the patch size 8"):
        resize_position_embeddings(tiny_model(), 50)
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    set_processor_size(processor, 48)
    assert dict(processor.size) == {"height": 48, "width": 48}


@pytest.mark.slow
def test_higher_resolution_output_reloads_in_pipeline_at_the_new_size(tiny3, photos_repo, tmp_path):
    from transformers import pipeline

    out = tmp_path / "out"
    train("--model_name_or_path", str(tiny3), "--dataset_name", str(photos_repo), "--output_dir", str(out), *QUICK,
          "--num_train_epochs", "1", "--image_size", "64")
    check_output(out, PHOTO_LABELS)
    classifier = pipeline("image-classification", model=str(out))
    assert classifier.model.config.image_size == 64
    assert classifier.model.vit.embeddings.position_embeddings.shape[1] == 1 + 64
    assert classifier.image_processor(photos(n_per_class=1)[0][0], return_tensors="pt")["pixel_values"].shape[-1] == 64


# LoRA.

@backends
@pytest.mark.slow
def test_lora_trains_adapters_and_head_only_and_merges_into_a_plain_model(backend, tmp_path, photos_repo):
    from peft import PeftModel
    from transformers import AutoModelForImageClassification, ViTImageProcessor

    from vit_pipeline.model.lora import apply_lora

    base_dir = save_tiny_vit(tmp_path / "base", head=False)
    args = SimpleNamespace(lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules=["q_proj", "v_proj"])
    wrapped = apply_lora(tiny_model(), args)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("q_proj.lora_A" in n for n in trainable) and any("classifier" in n for n in trainable)

    out = tmp_path / "out"
    train("--model_name_or_path", str(base_dir), "--dataset_name", str(photos_repo), "--output_dir", str(out),
          *QUICK, "--backend", backend, "--num_train_epochs", "2", "--learning_rate", "1e-2", "--use_peft", "true",
          "--lora_r", "4")
    check_output(out, PHOTO_LABELS)
    # A plain checkpoint at the top (no adapter files, no peft keys), the adapter in adapter/.
    assert not (out / "adapter_config.json").exists() and not (out / "adapter_model.safetensors").exists()
    config_text = (out / "config.json").read_text()
    assert "peft" not in config_text and "lora" not in config_text
    keys = list(load_file(out / "model.safetensors"))
    assert not [k for k in keys if "lora" in k or "base_model" in k or "modules_to_save" in k]
    # pipeline() loads it where peft cannot be imported.
    script = ("import sys; sys.modules['peft'] = None\n"
              "from PIL import Image; from transformers import pipeline\n"
              f"print(pipeline('image-classification', model={str(out)!r})(Image.new('RGB', (40, 40)))[0]['label'])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] in PHOTO_LABELS
    # Only q_proj / v_proj (through the adapters) changed in the backbone (the head is fresh: nothing to compare).
    base, merged = state(base_dir), state(out)
    for key, value in base.items():
        if key.startswith("classifier."):
            continue
        if "q_proj.weight" in key or "v_proj.weight" in key:
            assert not torch.equal(value, merged[key]), key
        else:
            assert torch.equal(value, merged[key]), key
    # The merged model computes what base + adapter compute.
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["use_peft"] is True
    fresh = AutoModelForImageClassification.from_pretrained(base_dir, num_labels=3)
    adapter_model = PeftModel.from_pretrained(fresh, out / "adapter").eval()
    merged_model = AutoModelForImageClassification.from_pretrained(out).eval()
    processor = ViTImageProcessor.from_pretrained(out)
    pixels = processor([im for im, _ in photos(n_per_class=2)], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        # adapter/ holds the head as trained; the merged model's head is calibrated (divided by T).
        temperature = merged_model.config.calibration_temperature
        assert torch.allclose(adapter_model(pixel_values=pixels).logits,
                              merged_model(pixel_values=pixels).logits * temperature, atol=1e-5)


# Option checks: contradictions stop the command before anything loads.

@pytest.mark.parametrize("flags, message", [
    (("--freeze_backbone", "true", "--layer_decay", "0.7"), "freeze_backbone leaves nothing"),
    (("--use_peft", "true", "--freeze_backbone", "true"), "use_peft already keeps the backbone frozen"),
    (("--use_peft", "true", "--ema_decay", "0.99"), "ema_decay is not supported with use_peft"),
    (("--early_stopping_patience", "2", "--eval_strategy", "no", "--save_strategy", "no",
      "--load_best_model_at_end", "false"), "early_stopping_patience needs evaluations"),
    (("--layer_decay", "1.5",), "layer_decay must be in (0, 1]"),
    (("--ema_decay", "1.0",), "ema_decay must be in [0, 1)"),
    (("--random_erasing", "2",), "random_erasing is a probability"),
    (("--auto_augment", "autoaugment",), "auto_augment"),
    (("--image_size", "0",), "image_size must be a positive"),
])
def test_contradicting_or_bad_options_are_rejected(flags, message, tmp_path):
    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        RecipeParser().parse(["--model_name_or_path", "x", "--dataset_name", "y", "--output_dir", str(tmp_path),
                              *flags])
