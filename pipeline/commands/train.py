"""`vit-pipeline train RECIPE.yaml [--field value ...]`: recipe -> data -> model -> train -> metrics -> card -> push."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from vit_pipeline import PipelineError
from vit_pipeline.config.output_dir import releases_locks
from vit_pipeline.utils import checkpoints, last_checkpoint, merge_json, setup_logging

logger = logging.getLogger("vit_pipeline")


def _claim_output_dir(training_args, recipe: dict) -> str | None:
    """Lock the output folder for this run; return the checkpoint to resume from (labels are checked once data loads).

    The one asked for, else the last complete one in the output folder, when it is of the same run; none with
    overwrite_output_dir.

    Raises:
        PipelineError: another live run holds the folder, or its checkpoint is another run's (other model or data).
    """
    from vit_pipeline.config.output_dir import check_same_run, lock_output_dir

    # One run per output folder at a time (the lock holds the pid; it goes when the run ends or its process exits).
    lock_output_dir(training_args)
    if training_args.overwrite_output_dir:
        return None
    if training_args.resume_from_checkpoint:
        if not Path(training_args.resume_from_checkpoint).is_dir():
            raise PipelineError(f"resume_from_checkpoint {training_args.resume_from_checkpoint} is not a folder")
        check_same_run(training_args.resume_from_checkpoint, Path(training_args.resume_from_checkpoint).parent, recipe)
        return training_args.resume_from_checkpoint
    if last_checkpoint(training_args.output_dir):
        check_same_run(last_checkpoint(training_args.output_dir), training_args.output_dir, recipe)
    found = checkpoints(training_args.output_dir)
    last = last_checkpoint(training_args.output_dir)
    if found and found[-1] != last:
        # A run killed while writing this checkpoint (the state file is written last): take the one before.
        logger.warning("%s is incomplete (the run stopped while saving it): skipping it", found[-1])
    if last:
        logger.info("Resuming from %s (found in output_dir; use a new output_dir to start over)", last)
    return str(last) if last else None


def _hub_setup(training_args) -> tuple[str | None, bool, list]:
    """Take the push options out of the arguments the backends see, and check them before any loading.

    Returns:
        The token (kept only here: never in the pickled training_args.bin), whether the run pushes, and the
        `TrainerCallback`s of the hub strategy (checkpoint pushes; both backends call them).
    """
    token, push_requested = training_args.hub_token or None, training_args.push_to_hub
    # The pipeline pushes the finished folder itself (both backends, with retries and a clear error).
    training_args.hub_token, training_args.push_to_hub = None, False
    if not push_requested:
        return token, False, []
    from vit_pipeline.publish.checkpoints import prepare_push

    # Repo id, token, offline mode and hub_strategy are checked now, not after hours of training.
    token, callbacks = prepare_push(training_args, token)
    return token, True, callbacks


def _multi_label_defaults(training_args, recipe: dict) -> None:
    """Multi-label runs pick the best checkpoint by map unless another metric was chosen (accuracy, the single-label
    default, is not computed for multi-label data)."""
    if training_args.metric_for_best_model in ("accuracy", "eval_accuracy"):
        training_args.metric_for_best_model = "map"
        training_args.greater_is_better = True
        recipe["metric_for_best_model"] = "map"
        logger.info("Multi-label: metric_for_best_model is map (mean average precision over the classes)")


def _load_data(data_args, training_args, token: str | None, cache_decision=None):
    """The splits: map-style (downloaded, checked, prepared), or a training stream read as training consumes it."""
    if data_args.streaming:
        from vit_pipeline.config.machine import stream_schedule
        from vit_pipeline.data.stream import stream_splits

        splits = stream_splits(data_args, seed=training_args.seed, rank=training_args.process_index,
                               world_size=training_args.world_size, token=token)
        stream_schedule(training_args, splits.train_rows)
        logger.info("Data: a training stream (%s rows) / %d eval images (%s), %d classes; %d steps of %d images",
                    f"{splits.train_rows:,}" if splits.train_rows else "unknown number of", len(splits.eval),
                    splits.eval_split_name, len(splits.labels), training_args.max_steps,
                    training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
                    * training_args.world_size)
        return splits
    from vit_pipeline.data.load import load_splits

    with training_args.main_process_first(desc="loading the dataset"):
        splits = load_splits(data_args, seed=training_args.seed, cache_dir=None, token=token,
                             cache_decision=cache_decision)
    logger.info("Data: %d train / %d eval images (%s), %d classes%s", len(splits.train), len(splits.eval),
                splits.eval_split_name, len(splits.labels), " (multi-label)" if splits.multi_label else "")
    return splits


def _load_model(model_args, training_args, splits, image_processor, token: str | None):
    """The model to train: resolution, frozen backbone, LoRA (the processor follows a new resolution), with the
    layer-decay check on the model itself."""
    from vit_pipeline.model.load import load_model
    from vit_pipeline.model.prepare import prepare_model

    distilled = bool(training_args.teacher_model_name_or_path)
    model = prepare_model(load_model(model_args, splits.labels, token=token, multi_label=splits.multi_label,
                                     distilled=distilled), image_processor, model_args)
    if training_args.layer_decay is not None:
        from vit_pipeline.model.inspect import check_layer_decay

        check_layer_decay(model)
    return model


def _prepare_data(splits, image_processor, data_args, training_args):
    """Train and eval rows. Fast path (default): uint8 rows from the loader workers; the backend normalizes whole
    batches on the device."""
    from vit_pipeline.data.prepare import prepare_dataset, prepare_datasets

    if data_args.streaming:
        from vit_pipeline.data.stream import prepare_stream

        return (prepare_stream(splits.train, image_processor, data_args),
                prepare_dataset(splits.eval, image_processor, data_args, train=False))
    with training_args.main_process_first(desc="preparing the datasets"):
        # With pixel_cache, building the cache checks the images: what it skips is counted for the card.
        return prepare_datasets(splits.train, splits.eval, image_processor, data_args,
                                num_proc=data_args.preprocessing_num_workers, skipped=splits.skipped_images,
                                digests=splits.pixel_digests)


def _summarize_data(splits) -> dict | None:
    """Exact duplicates within train and across train and eval (from the pixel digests the image check or the cache
    pass took), class balance and excluded images, logged; what the card's data section shows. None for a stream."""
    if not hasattr(splits, "pixel_digests"):
        return None
    from vit_pipeline.data.balance import class_balance
    from vit_pipeline.data.duplicates import confirm_in, find_exact_duplicates
    from vit_pipeline.data.labels import label_values

    summary = {"class_balance": class_balance(splits.labels, {"train": label_values(splits.train),
                                                              "eval": label_values(splits.eval)}),
               "excluded": splits.excluded_images, "duplicates": [], "leaked": 0}
    if "train" in splits.pixel_digests:
        # In the splits' order, train first, whichever pass took the digests (the cache pass takes train's and eval's
        # after the test split's check; without the image check the test split has none): the others are compared
        # with the first.
        named = {split: ds for split, ds in splits.by_name().items() if split in splits.pixel_digests}
        found = find_exact_duplicates({split: splits.pixel_digests[split] for split in named}, confirm_in(named))
        summary.update(duplicates=found.sentences(), leaked=found.leaked.get("eval", 0),
                       within_train=found.within.get("train", 0))
        for sentence in found.sentences():
            logger.warning("Exact duplicates: %s (`vit-pipeline audit` lists them, with near copies)", sentence)
    return summary


def cache_decision(model_args, training_args, image_processor):
    """What decides an unset `pixel_cache` while the data loads: the model's input (at `image_size` when it changes)
    and the epochs this run reads over the training rows. `benchmark` decides with it too."""
    import copy
    import functools

    from vit_pipeline.config.machine import planned_epochs
    from vit_pipeline.data.cache import CacheDecision
    from vit_pipeline.data.transforms import image_spec

    if model_args.image_size is not None:
        from vit_pipeline.model.resolution import set_processor_size

        image_processor = copy.deepcopy(image_processor)
        set_processor_size(image_processor, model_args.image_size)
    return CacheDecision(image_spec(image_processor), functools.partial(planned_epochs, training_args))


def _train(model, image_processor, datasets: tuple, compute_metrics, training_args, recipe: dict,
           resume_from: str | None, hub_callbacks: list, extra_callbacks: list):
    """Train and evaluate with the chosen backend, with the run's callbacks, the trackers' recipe and the fault
    handlers (signals, full disk) on both."""
    from vit_pipeline.training.faults import fault_callbacks
    from vit_pipeline.training.shared import backend
    from vit_pipeline.training.tracking import RecipeToTrackers
    from vit_pipeline.training.workers import CloseLoaderWorkers

    # The trackers of report_to get the whole resolved recipe once, beside the training arguments they log.
    loader_workers = CloseLoaderWorkers()
    with fault_callbacks() as faults:
        try:
            return backend(training_args.backend)(model, image_processor, *datasets, compute_metrics, training_args,
                                                  resume_from_checkpoint=resume_from,
                                                  callbacks=[*hub_callbacks, RecipeToTrackers(recipe),
                                                             *extra_callbacks, *faults, loader_workers])
        finally:
            # However the run ended: the loaders' workers are not left to the garbage collector.
            loader_workers.close()


def _fit_to_data(splits, data_args, training_args, recipe: dict, resume_from: str | None, token: str | None = None):
    """What the loaded data decides: an unset pixel_cache (recorded in the resolved recipe), multi-label defaults,
    and that a resumed checkpoint, and a teacher, have these labels. Returns the data arguments the run prepares its
    rows with."""
    from vit_pipeline.config.output_dir import check_same_labels

    if training_args.teacher_model_name_or_path:
        from vit_pipeline.training.distillation import check_teacher

        check_teacher(training_args.teacher_model_name_or_path, splits.labels, splits.multi_label, token)

    if not data_args.streaming:
        from vit_pipeline.config.machine import fit_workers_to_data

        data_args = dataclasses.replace(data_args, pixel_cache=splits.pixel_cache)
        recipe["pixel_cache"] = splits.pixel_cache
        fit_workers_to_data(training_args, splits.pixel_cache)
        for name in ("dataloader_num_workers", "dataloader_persistent_workers"):
            if name in recipe:
                recipe[name] = getattr(training_args, name)
    if splits.multi_label:
        _multi_label_defaults(training_args, recipe)
    if resume_from:
        check_same_labels(resume_from, splits.labels)
    return data_args


def _write_recipe(recipe: dict, training_args) -> None:
    """The resolved recipe in the output folder (after clearing a previous run there with overwrite_output_dir)."""
    from vit_pipeline.config import save_recipe
    from vit_pipeline.config.output_dir import clear_previous_run

    if training_args.overwrite_output_dir:
        clear_previous_run(training_args.output_dir)
    save_recipe(recipe, training_args.output_dir)


def _log_done(scores: dict, multi_label: bool, output_dir: str, data_summary: dict | None = None) -> None:
    headline = "map" if multi_label else "accuracy"
    leaked = (data_summary or {}).get("leaked")
    logger.info("Done: eval %s %.4f%s; outputs in %s; reuse with pipeline('image-classification', model=%r)",
                headline, scores.get(headline, float("nan")),
                f" ({leaked} eval images are exact copies of train images: optimistic)" if leaked else "",
                output_dir, output_dir)


def _report_saved_model(model, model_args, data_args, training_args, splits, result, compute_metrics):
    """After training, on the main process: peak memory, the saved (merged) model, multi-label thresholds, the
    evaluation report and training curves. Returns the model to describe and what the card shows of them."""
    from vit_pipeline.evaluation.run_report import report_training_run
    from vit_pipeline.model.prepare import finalize_model
    from vit_pipeline.training.throughput import peak_memory_mib

    # This process's peak while training (CUDA max_memory_allocated, or peak RSS on CPU): what benchmarks compare.
    merge_json(Path(training_args.output_dir) / "all_results.json",
               {"train_peak_memory_mib": round(peak_memory_mib(training_args.device), 1)})
    # LoRA: the saved model is the merged one, loadable with no peft.
    model = finalize_model(model, training_args.output_dir, model_args)
    per_class, thresholds = [], None
    if splits.multi_label:
        from vit_pipeline.evaluation.multilabel import tune_and_save_thresholds

        # The final evaluation scored the saved model: thresholds.json and the card's per-class table from it.
        per_class, thresholds = tune_and_save_thresholds(compute_metrics, splits.labels, splits.eval_split_name,
                                                         training_args.output_dir)
    temperature = _calibrate(model_args, training_args, splits)
    # The evaluation report of the saved model on the eval split (as `evaluate` writes it), training curves and
    # rollout maps. The card shows them.
    evaluation = report_training_run(
        training_args.output_dir, splits.eval, splits.labels, result.log_history,
        metric=training_args.metric_for_best_model, split=splits.eval_split_name, seed=training_args.seed,
        dataset_name=splits.hub_id or data_args.dataset_name or data_args.train_dir,
        batch_size=training_args.per_device_eval_batch_size, multi_label=splits.multi_label)
    test = _report_test_split(data_args, training_args, splits, result)
    calibration = _record_calibration(training_args, evaluation, test, temperature)
    if splits.skipped_images:
        merge_json(Path(training_args.output_dir) / "all_results.json",
                   {f"{k}_skipped_images": v for k, v in splits.skipped_images.items()})
    return model, {"per_class": per_class, "thresholds": thresholds, "evaluation": evaluation, "test": test,
                   "calibration": calibration}


def _calibrate(model_args, training_args, splits) -> float | None:
    """Temperature scaling of the saved model, fitted on the eval split (single-label runs with calibrate).
    Returns the temperature, or None when the run is not calibrated."""
    if not model_args.calibrate:
        return None
    if splits.multi_label:
        logger.info("Multi-label: not calibrated (the per-class thresholds tuned on the eval scores keep their "
                    "meaning)")
        return None
    from vit_pipeline.evaluation.calibration import calibrate_saved_model

    return calibrate_saved_model(training_args.output_dir, splits.eval, splits.labels,
                                 batch_size=training_args.per_device_eval_batch_size)


def _report_test_split(data_args, training_args, splits, result) -> dict | None:
    """The saved model scored once on the test split (report in OUTPUT_DIR/test/, `test_results.json`); None when
    the run has no test split."""
    if splits.test is None:
        return None
    from vit_pipeline.evaluation.heldout import report_test_split

    return report_test_split(training_args.output_dir, splits.test, splits.labels, metric_names=list(result.scores),
                             dataset_name=splits.hub_id or data_args.dataset_name or data_args.train_dir,
                             split=splits.test_split_name, seed=training_args.seed,
                             batch_size=training_args.per_device_eval_batch_size)


def _record_calibration(training_args, evaluation: dict, test: dict | None, temperature: float | None) -> dict | None:
    """T and ECE / NLL before and after it in all_results.json, measured on the test split when there is one (the
    eval split chose T)."""
    if temperature is None:
        return None
    from vit_pipeline.evaluation.heldout import record_calibration

    report, kind = (test["report"], "test") if test else (evaluation["report"], "eval")
    return record_calibration(training_args.output_dir, report, kind)


BASELINE_DIR = "baseline"


def _train_baseline(argv: list[str], training_args) -> str:
    """The same student, data, seed and schedule without the teacher, in OUTPUT_DIR/baseline (every process trains;
    not pushed). Returns its folder."""
    folder = str(Path(training_args.output_dir) / BASELINE_DIR)
    logger.info("Baseline: the same student without its teacher -> %s", folder)
    # Its own folder and checkpoints: a resume_from_checkpoint of the distillation run is not the baseline's.
    main([*argv, "--teacher_model_name_or_path", "", "--baseline", "false", "--push_to_hub", "false",
          "--resume_from_checkpoint", "", "--output_dir", folder])
    return folder


def _write_pareto(training_args, splits, baseline: str) -> None:
    """pareto.md / .csv / .png in the output folder: teacher, student without it, distilled student (and int8)."""
    import numpy as np

    from vit_pipeline.commands.pareto import write_pareto

    labels = np.asarray(splits.eval.select_columns(["label"]).with_format(None)["label"][:])
    write_pareto(training_args.output_dir, [("teacher", training_args.teacher_model_name_or_path),
                                            ("student, no teacher", baseline),
                                            ("student, distilled", training_args.output_dir)],
                 splits.eval, labels, eval_split=splits.eval_split_name)


@releases_locks
def main(argv: list[str], callbacks: list | None = None) -> dict:
    """`vit-pipeline train`: recipe -> data -> model -> train -> metrics -> card -> push. Returns eval metrics.

    `callbacks` are extra `TrainerCallback`s for either backend (what `search` adds in-process: the trial's pruning
    report).
    """
    from vit_pipeline.config import RecipeParser, resolved_recipe, speed_summary

    # Configuration: every check runs here, before data or weights are loaded.
    model_args, data_args, training_args, _ = RecipeParser().parse(argv)
    token, push_requested, hub_callbacks = _hub_setup(training_args)
    is_main = training_args.should_save

    # Logging, seed, resolved recipe; options that assume a ViT, checked on the checkpoint's config (one small file).
    setup_logging(is_main)
    from transformers import set_seed

    from vit_pipeline.model.inspect import check_model_options
    from vit_pipeline.model.load import load_config

    set_seed(training_args.seed)
    recipe = {**resolved_recipe(model_args, data_args, training_args), "push_to_hub": push_requested}
    resume_from = _claim_output_dir(training_args, recipe)
    check_model_options(load_config(model_args, token), model_args, training_args)

    # Image processor, data and model.
    from vit_pipeline.model.load import load_image_processor

    image_processor = load_image_processor(model_args, token=token)
    splits = _load_data(data_args, training_args, token, cache_decision(model_args, training_args, image_processor))
    data_args = _fit_to_data(splits, data_args, training_args, recipe, resume_from, token)
    model = _load_model(model_args, training_args, splits, image_processor, token)
    train_dataset, eval_dataset = _prepare_data(splits, image_processor, data_args, training_args)
    data_summary = _summarize_data(splits)
    logger.info("Speed settings: %s", speed_summary(training_args, data_args))
    if is_main:
        # Written once data and model have loaded: a run that fails on them leaves the folder as it was.
        _write_recipe(recipe, training_args)

    # Train and evaluate (either backend: same arguments, callbacks and output files).
    from vit_pipeline.evaluation.metrics import metrics_for

    compute_metrics = metrics_for(len(splits.labels), multi_label=splits.multi_label)
    result = _train(model, image_processor, (train_dataset, eval_dataset), compute_metrics, training_args, recipe,
                    resume_from, hub_callbacks, callbacks or [])
    # With baseline: the student again without its teacher (on every process, as the run itself).
    baseline = _train_baseline(argv, training_args) if training_args.baseline else None
    if not is_main:
        return result.scores
    model, shown = _report_saved_model(model, model_args, data_args, training_args, splits, result, compute_metrics)

    # Model card, push.
    from vit_pipeline.publish.card import write_card
    from vit_pipeline.publish.card_inputs import card_inputs

    write_card(card_inputs(model_args, data_args, training_args, splits=splits, result=result, recipe=recipe,
                           architecture=type(model).__name__, image_processor=image_processor,
                           push_requested=push_requested, data_summary=data_summary, **shown),
               training_args.output_dir)
    if baseline:
        _write_pareto(training_args, splits, baseline)
    _log_done(result.scores, splits.multi_label, training_args.output_dir, data_summary)
    if push_requested:
        from vit_pipeline.publish.push import push_or_explain

        push_or_explain(training_args.output_dir, training_args.hub_model_id, token=token,
                        private=training_args.hub_private_repo, revision=training_args.hub_revision)
    return result.scores
