"""`vit-pipeline train RECIPE.yaml [--field value ...]`: recipe -> data -> model -> train -> metrics -> card -> push."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline import PipelineError
from pipeline.utils import checkpoints, last_checkpoint, merge_json, plain, setup_logging

logger = logging.getLogger("pipeline")


def _augmentation(data_args) -> str:
    steps = []
    if data_args.random_resized_crop:
        steps.append(f"random resized crop (scale {data_args.crop_scale_min:g}-1)")
    if data_args.horizontal_flip:
        steps.append("horizontal flip")
    from pipeline.data.augment import describe

    steps += describe(data_args)
    return ", ".join(steps) or "none"


def _resume_checkpoint(training_args) -> str | None:
    """The checkpoint to resume from: the one asked for, else the last complete one in the output folder."""
    if training_args.resume_from_checkpoint:
        if not Path(training_args.resume_from_checkpoint).is_dir():
            raise PipelineError(f"resume_from_checkpoint {training_args.resume_from_checkpoint} is not a folder")
        return training_args.resume_from_checkpoint
    found = checkpoints(training_args.output_dir)
    last = last_checkpoint(training_args.output_dir)
    if found and found[-1] != last:
        # A run killed while writing this checkpoint (the state file is written last): take the one before.
        logger.warning("%s is incomplete (the run stopped while saving it): skipping it", found[-1])
    if last:
        logger.info("Resuming from %s (found in output_dir; use a new output_dir to start over)", last)
    return str(last) if last else None


def main(argv: list[str]) -> dict:
    """`vit-pipeline train`: recipe -> data -> model -> train -> metrics -> card -> push. Returns eval metrics."""
    from pipeline.config import RecipeParser, resolved_recipe, save_recipe, speed_summary

    # Configuration: every check runs here, before data or weights are loaded.
    model_args, data_args, training_args, recipe_path = RecipeParser().parse(argv)
    # The token lives only in this variable: never in the args the Trainer pickles (training_args.bin).
    token = training_args.hub_token or None
    training_args.hub_token = None
    push_requested = training_args.push_to_hub
    # The pipeline pushes the finished folder itself (both backends, with retries and a clear error).
    training_args.push_to_hub = False
    is_main = training_args.should_save
    hub_callbacks = []
    if push_requested:
        from pipeline.publish.checkpoints import prepare_push

        # Repo id, token, offline mode and hub_strategy are checked now, not after hours of training.
        token, hub_callbacks = prepare_push(training_args, token)

    # Logging, seed, resolved recipe.
    setup_logging(is_main)
    from transformers import set_seed

    set_seed(training_args.seed)
    recipe = resolved_recipe(model_args, data_args, training_args)
    recipe["push_to_hub"] = push_requested
    resume_from = _resume_checkpoint(training_args)
    # Options that assume a ViT, checked on the checkpoint's config (one small file) before data or weights load.
    from pipeline.model.inspect import check_model_options
    from pipeline.model.load import load_config

    check_model_options(load_config(model_args, token), model_args, training_args)

    # Data.
    from pipeline.data.load import load_splits

    with training_args.main_process_first(desc="loading the dataset"):
        splits = load_splits(data_args, seed=training_args.seed, cache_dir=None, token=token)
    logger.info("Data: %d train / %d eval images (%s), %d classes", len(splits.train), len(splits.eval),
                splits.eval_split_name, len(splits.labels))

    # Image processor, transforms, model.
    from pipeline.data.transforms import image_spec, prepare_datasets
    from pipeline.model.load import load_image_processor, load_model

    image_processor = load_image_processor(model_args)
    model = load_model(model_args, splits.labels, token=token)
    # Model options: resolution, frozen backbone, LoRA adapters (the processor follows a new resolution).
    from pipeline.model.prepare import finalize_model, prepare_model

    model = prepare_model(model, image_processor, model_args)
    if training_args.layer_decay is not None:
        from pipeline.model.inspect import check_layer_decay

        check_layer_decay(model)
    # Fast path (default): uint8 rows from the loader workers; the backend normalizes whole batches on the device.
    with training_args.main_process_first(desc="preparing the datasets"):
        train_dataset, eval_dataset = prepare_datasets(splits.train, splits.eval, image_processor, data_args,
                                                       num_proc=data_args.preprocessing_num_workers)
    logger.info("Speed settings: %s", speed_summary(training_args, data_args))
    if is_main:
        # Written once data and model have loaded: a run that fails on them leaves the folder as it was.
        save_recipe(recipe, training_args.output_dir)

    # Train and evaluate.
    from pipeline.evaluation.metrics import ClassificationMetrics

    compute_metrics = ClassificationMetrics(len(splits.labels))
    if training_args.backend == "accelerate":
        from pipeline.training.loop import train_with_accelerate as run
    else:
        from pipeline.training.trainer import train_with_trainer as run
    result = run(model, image_processor, train_dataset, eval_dataset, compute_metrics, training_args,
                 resume_from_checkpoint=resume_from, callbacks=hub_callbacks)
    if is_main:
        # LoRA: the saved model is the merged one, loadable with no peft.
        model = finalize_model(model, training_args.output_dir, model_args)
    eval_metrics = {k[len("eval_"):]: v for k, v in result.eval_metrics.items()
                    if k.startswith("eval_") and k not in ("eval_loss", "eval_runtime", "eval_samples_per_second",
                                                            "eval_steps_per_second", "eval_epoch")}
    if not is_main:
        return eval_metrics

    # Model card.
    from pipeline.publish.card import CardInputs, epoch_results, write_card

    spec = image_spec(image_processor)
    world = training_args.world_size
    hyperparameters = {name: getattr(training_args, name) for name in (
        "learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
        "num_train_epochs", "max_steps", "weight_decay", "lr_scheduler_type", "warmup_steps", "max_grad_norm",
        "label_smoothing_factor", "seed", "bf16", "fp16")}
    hyperparameters["optim"] = str(plain(training_args.optim))
    hyperparameters["lr_scheduler_type"] = str(plain(training_args.lr_scheduler_type))
    hyperparameters["num_processes"] = world
    # Fine-tuning techniques, listed only when used.
    for args, names in ((model_args, ("image_size", "freeze_backbone", "use_peft", "lora_r", "lora_alpha")),
                        (training_args, ("layer_decay", "backbone_learning_rate", "mixup_alpha", "cutmix_alpha",
                                         "class_weighted_loss", "ema_decay", "early_stopping_patience",
                                         "activation_checkpointing"))):
        for name in names:
            if getattr(args, name) and (model_args.use_peft or not name.startswith("lora_")):
                hyperparameters[name] = getattr(args, name)
    hyperparameters["total_train_batch_size"] = (training_args.per_device_train_batch_size
                                                 * training_args.gradient_accumulation_steps * world)
    dataset_display = splits.hub_id or (
        "scikit-learn's handwritten digits (embedded)" if (data_args.dataset_name or "").startswith("builtin:")
        else f"a local dataset ({Path(data_args.dataset_name or data_args.train_dir).name})")
    inputs = CardInputs(
        model_name=(training_args.hub_model_id or Path(training_args.output_dir).name),
        model_source=model_args.model_name_or_path,
        from_scratch=model_args.from_scratch,
        architecture=type(model).__name__,
        labels=splits.labels,
        eval_metrics=eval_metrics,
        eval_split=splits.eval_split_name,
        train_samples=len(splits.train),
        eval_samples=len(splits.eval),
        dataset_id=splits.hub_id,
        dataset_display=dataset_display,
        dataset_config=splits.config_name,
        license=training_args.license,
        hyperparameters=hyperparameters,
        epoch_results=epoch_results(result.log_history),
        recipe=recipe,
        image_size=list(spec.output_size),
        image_mean=list(spec.mean),
        image_std=list(spec.std),
        augmentation=_augmentation(data_args),
        backend=training_args.backend,
        skipped_images=splits.skipped_images,
        hub_model_id=training_args.hub_model_id if push_requested else None,
    )
    write_card(inputs, training_args.output_dir)
    if splits.skipped_images:
        merge_json(Path(training_args.output_dir) / "all_results.json",
                    {f"{k}_skipped_images": v for k, v in splits.skipped_images.items()})
    logger.info("Done: eval accuracy %.4f; outputs in %s; reuse with pipeline('image-classification', model=%r)",
                eval_metrics.get("accuracy", float("nan")), training_args.output_dir, training_args.output_dir)

    # Push.
    if push_requested:
        from pipeline.publish.push import push_or_explain

        push_or_explain(training_args.output_dir, training_args.hub_model_id, token=token,
                        private=training_args.hub_private_repo, revision=training_args.hub_revision)
    return eval_metrics
