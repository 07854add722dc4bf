"""Fast defaults: precision picked from the hardware unless the recipe chooses, fused AdamW, loader sizing."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import REPO
from vit_pipeline.config import PipelineTrainingArguments, RecipeParser
from vit_pipeline.config.machine import _auto_precision, _default_workers

QUICKSTART = str(REPO / "recipes" / "quickstart.yaml")


def parse(*flags: str):
    return RecipeParser().parse([QUICKSTART, *flags])


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU defaults")
def test_cpu_defaults(tmp_path):
    # No recipe (the quickstart sets its own loader workers): the defaults alone.
    _, data_args, args, _ = RecipeParser().parse(["--model_name_or_path", str(REPO / "recipes/models/vit-tiny-digits"),
                                                  "--dataset_name", "builtin:digits", "--output_dir", str(tmp_path)])
    assert (args.bf16, args.fp16, args.tf32) == (False, False, None)  # fp32 on CPU
    assert str(getattr(args.optim, "value", args.optim)) == "adamw_torch_fused"
    assert args.dataloader_num_workers == _default_workers()
    assert args.dataloader_persistent_workers == (args.dataloader_num_workers > 0)
    assert args.dataloader_pin_memory is False  # no GPU to copy to
    assert data_args.fast_transforms is True
    assert data_args.pixel_cache is None  # decided once the data is loaded (data.cache.choose_pixel_cache)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_defaults(tmp_path):
    from transformers.utils import is_torch_tf32_available

    _, _, args, _ = parse("--output_dir", str(tmp_path))
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    assert (args.bf16, args.fp16) == (bf16, not bf16)
    assert args.tf32 == (True if is_torch_tf32_available() else None)
    assert args.dataloader_pin_memory is True and args.accelerator_config.non_blocking is True


def test_an_explicit_precision_always_wins(tmp_path):
    _, _, args, _ = parse("--output_dir", str(tmp_path), "--fp16")  # bare flag, as with the Trainer's scripts
    assert (args.fp16, args.bf16) == (True, False)
    _, _, args, _ = parse("--output_dir", str(tmp_path), "--bf16", "false")
    assert (args.bf16, args.fp16) == (False, False)  # fp32 asked for: not replaced by fp16
    direct = PipelineTrainingArguments(output_dir=str(tmp_path), bf16=False)
    assert (direct.bf16, direct.fp16) == (False, False)


def test_auto_precision_follows_the_hardware(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert _auto_precision(use_cpu=False) == (True, False)  # Ampere and newer: bf16
    assert _auto_precision(use_cpu=True) == (False, False)  # --use_cpu: fp32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert _auto_precision(use_cpu=False) == (False, True)  # V100, T4: fp16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _auto_precision(use_cpu=False) == (False, False)  # CPU: fp32
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # accelerate launch --mixed_precision bf16
    assert _auto_precision(use_cpu=False) == (True, False)


def test_fused_adamw_steps_on_cpu(tmp_path, tiny_vit):
    """transformers 5 defaults to adamw_torch_fused; torch's fused AdamW runs on CPU too (no silent fallback needed)."""
    from transformers import ViTForImageClassification

    from vit_pipeline.training.trainer import PipelineTrainer

    model = ViTForImageClassification.from_pretrained(tiny_vit)
    args = PipelineTrainingArguments(output_dir=str(tmp_path), report_to="none", eval_strategy="no",
                                     save_strategy="no", load_best_model_at_end=False)
    trainer = PipelineTrainer(model=model, args=args)
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] is True
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1])).loss
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
