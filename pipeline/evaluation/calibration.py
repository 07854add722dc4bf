"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar T, fitted on the eval
split by negative log-likelihood, folded into the classifier so that `pipeline("image-classification")` itself
returns calibrated probabilities.

softmax(z / T) keeps the order of the logits, so top-1 never changes; only how sure the scores say the model is.
Folding divides the weight and bias of the classifier's final `nn.Linear` layers by T (a DeiT with a distillation
head averages two such heads: dividing both divides their mean), and records T in the config as
`calibration_temperature`, so every later report (`evaluate`, the test split) shows the scores before and after.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vit_pipeline import PipelineError

logger = logging.getLogger(__name__)

CONFIG_KEY = "calibration_temperature"


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of the softmax of `logits` [n, classes] against integer `labels` [n]."""
    from scipy.special import logsumexp

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    return float(np.mean(logsumexp(logits, axis=1) - logits[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T): a one-dimensional problem, solved on log T
    by bounded Brent (scipy's `minimize_scalar`), in float64.

    Args:
        logits: [n, classes] uncalibrated scores (of the eval split: never the test split).
        labels: [n] true label ids.

    Returns:
        T in [0.01, 1000] (above 1: the model was overconfident; below 1: underconfident).
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(logits / np.exp(log_t), labels),
                             bounds=(np.log(0.01), np.log(1000.0)), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def classifier_layers(model) -> list[torch.nn.Linear]:
    """The final `nn.Linear` layers that produce the logits: those named classifier (every transformers image
    classifier names its head so) with `num_labels` outputs.

    Raises:
        PipelineError: the model has no such layer (calibration cannot be folded into it).
    """
    layers = [module for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and module.out_features == model.config.num_labels
              and "classifier" in name]
    if not layers:
        raise PipelineError(f"calibrate: {type(model).__name__} has no classifier layer with {model.config.num_labels} "
                            "outputs to fold the temperature into; set calibrate: false")
    return layers


def fold_temperature(model, temperature: float) -> None:
    """Divide the classifier's weights and biases by `temperature`, so the model's logits are the calibrated ones,
    and record it in `model.config` (`calibration_temperature`, multiplied in when the model already had one)."""
    with torch.no_grad():
        for layer in classifier_layers(model):
            layer.weight.div_(temperature)
            if layer.bias is not None:
                layer.bias.div_(temperature)
    previous = getattr(model.config, CONFIG_KEY, None) or 1.0
    setattr(model.config, CONFIG_KEY, float(previous * temperature))


def calibration_section(logits: np.ndarray, labels: np.ndarray, temperature: float | None) -> dict[str, Any]:
    """The report's `calibration`: T, and ECE and NLL of the scores before (logits x T) and after temperature
    scaling, with the reliability bins before (the diagram draws both). Empty for a model never calibrated.

    Args:
        logits: [n, classes] logits of the calibrated model (the saved one).
        labels: [n] true label ids.
        temperature: the model's `calibration_temperature` (None: not calibrated).
    """
    if not temperature:
        return {}
    from vit_pipeline.evaluation.inference import softmax
    from vit_pipeline.evaluation.report import calibration_bins, expected_calibration_error

    logits = np.asarray(logits, dtype=np.float64)
    scores = {}
    for when, z in (("before", logits * temperature), ("after", logits)):
        probs = softmax(z)
        confidences, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
        scores[when] = {"ece": expected_calibration_error(confidences, correct),
                        "nll": negative_log_likelihood(z, labels), "bins": calibration_bins(confidences, correct)}
    return {"calibration": {"temperature": float(temperature),
                            "ece_before": scores["before"]["ece"], "ece_after": scores["after"]["ece"],
                            "nll_before": scores["before"]["nll"], "nll_after": scores["after"]["nll"],
                            "bins_before": scores["before"]["bins"]}}


def model_temperature(model) -> float | None:
    """The temperature folded into a saved model (`calibration_temperature` in its config), or None."""
    return getattr(model.config, CONFIG_KEY, None)


def calibrate_saved_model(output_dir: str | Path, eval_dataset, dataset_labels: list[str], batch_size: int = 32
                          ) -> float:
    """Fit T on the eval split's logits of the saved model in `output_dir`, fold it in and save the model again.

    Args:
        output_dir: the run's output folder (the saved, merged model and its image processor).
        eval_dataset: the eval split (canonical `image` / `label` columns): what T is fitted on.
        dataset_labels: the dataset's class names, in its label-id order.
        batch_size: images per forward pass.

    Returns:
        The temperature.
    """
    from vit_pipeline.evaluation.inference import load_trained, match_labels, predict_logits

    model, image_processor = load_trained(str(output_dir))
    logits, labels = predict_logits(model, eval_dataset, image_processor, batch_size=batch_size)
    labels = np.asarray(match_labels(dataset_labels, model))[labels]
    temperature = fit_temperature(logits, labels)
    fold_temperature(model, temperature)
    model.save_pretrained(output_dir)
    logger.info("Calibrated: temperature %.3f fitted on the eval split (NLL %.4f -> %.4f); pipeline() returns the "
                "calibrated scores", temperature, negative_log_likelihood(logits, labels),
                negative_log_likelihood(logits / temperature, labels))
    return temperature
