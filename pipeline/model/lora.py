"""LoRA through `peft`: adapters on the attention projections (ConvNeXt: its pointwise linear layers), the
classifier trained in full, and a merged model at the end so that `pipeline("image-classification")` loads the
output with no peft installed.

ViT's attention projections are `q_proj`, `k_proj`, `v_proj` and `o_proj` in transformers 5 (they were
`query` / `key` / `value` / `output.dense` before).
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from vit_pipeline import PipelineError

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
# What PeftModel.save_pretrained writes: it must not stay at the top of the output folder, where transformers
# would take the folder for an adapter repo and need peft to load it.
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_config.json")


def head_module_names(model: nn.Module) -> list[str]:
    """Top-level modules outside the backbone (the classifier): trained in full and saved with the adapter."""
    prefix = getattr(model, "base_model_prefix", "")
    return [name for name, _ in model.named_children() if name != prefix]


def apply_lora(model: nn.Module, model_args) -> nn.Module:
    """Wrap `model` in a peft LoRA model: adapters on `lora_target_modules`, the head trained fully.

    Raises:
        PipelineError: peft is not installed, or no module of the model matches `lora_target_modules`.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise PipelineError("use_peft needs the peft package: pip install 'vit-pipeline[lora]'") from err
    from vit_pipeline.model.inspect import lora_targets

    targets = lora_targets(model.config.model_type, model_args.lora_target_modules)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise PipelineError(f"lora_target_modules {missing} are not modules of {type(model).__name__} "
                            f"({model.config.model_type}; its linear layers: {', '.join(linear)})")
    config = LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                        target_modules=targets, modules_to_save=head_module_names(model), bias="none")
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    logger.info("LoRA r=%d on %s: %d of %d parameters train (%.2f%%)", model_args.lora_r, ", ".join(targets),
                trainable, total, 100.0 * trainable / total)
    return peft_model


def is_peft_model(model) -> bool:
    """True for a peft wrapper (it has `merge_and_unload`)."""
    return hasattr(model, "merge_and_unload") and hasattr(model, "peft_config")


def save_merged(model, output_dir: str | Path, keep_adapter: bool = True) -> nn.Module:
    """Merge the LoRA weights into the base model and save it as a plain transformers checkpoint in `output_dir`.

    The adapter files a backend wrote at the top of `output_dir` are removed (or, with `keep_adapter`, the adapter
    is saved to `output_dir/adapter`), so the folder loads with no peft.

    Returns:
        The merged model (a plain `PreTrainedModel`).
    """
    output_dir = Path(output_dir)
    if keep_adapter:
        model.save_pretrained(output_dir / ADAPTER_DIR)
    for name in ADAPTER_FILES:
        (output_dir / name).unlink(missing_ok=True)
    merged = model.merge_and_unload()
    merged.save_pretrained(output_dir)
    return merged

