"""The fine-tuning techniques, gathered for the command and the backends.

- `prepare_model`: what changes the model before training (resolution, frozen backbone, LoRA adapters).
- `training_extras`: what a training loop needs beyond the model and data (loss, train collator, EMA), built from
  the training arguments; the Trainer backend and an Accelerate loop both use it.
- `finalize_model`: what turns the trained model into the plain checkpoint that is saved and pushed (LoRA merged).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def prepare_model(model, image_processor, model_args):
    """Apply the model options of `model_args`; returns the model to train (a peft wrapper with use_peft).

    `image_processor` is updated in place when `image_size` changes the resolution.
    """
    if model_args.image_size is not None:
        from vit_pipeline.model.resolution import resize_position_embeddings, set_processor_size

        if resize_position_embeddings(model, model_args.image_size):
            logger.info("Position embeddings interpolated to %d x %d pixels", model_args.image_size,
                        model_args.image_size)
        set_processor_size(image_processor, model_args.image_size)
    if model_args.freeze_backbone:
        from vit_pipeline.model.inspect import freeze_backbone

        logger.info("Backbone frozen: %d parameters will not change", freeze_backbone(model))
    if model_args.use_peft:
        from vit_pipeline.model.lora import apply_lora

        model = apply_lora(model, model_args)
    return model


def finalize_model(model, output_dir, model_args):
    """Turn the trained model into the plain checkpoint in `output_dir`: with use_peft, merge the adapters and save
    the merged model (keeping the adapter in `output_dir/adapter` when asked). Returns the model to describe."""
    from vit_pipeline.model.lora import is_peft_model, save_merged

    if not is_peft_model(model):
        return model
    merged = save_merged(model, output_dir, keep_adapter=model_args.lora_save_adapter)
    logger.info("LoRA adapters merged into the saved model%s", " (adapter kept in adapter/)"
                if model_args.lora_save_adapter else "")
    return merged
