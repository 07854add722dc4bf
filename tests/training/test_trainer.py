"""The Trainer backend's checkpoint reloads restore every weight (transformers#48805 worked around)."""

from __future__ import annotations

import torch
from transformers import TrainingArguments, ViTForImageClassification

from vit_pipeline.training.trainer import PipelineTrainer


def test_checkpoint_reload_restores_every_weight(tiny_vit, tmp_path):
    trained = ViTForImageClassification.from_pretrained(tiny_vit)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)  # unmistakably different from the checkpoint on disk
    checkpoint = tmp_path / "checkpoint-5"
    trained.save_pretrained(checkpoint)  # hub (original) key names, as the Trainer's checkpoints are saved
    model = ViTForImageClassification.from_pretrained(tiny_vit)
    trainer = PipelineTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none"))
    trainer._load_from_checkpoint(str(checkpoint))
    for (name, a), b in zip(model.state_dict().items(), trained.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
