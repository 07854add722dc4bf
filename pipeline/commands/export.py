"""`vit-pipeline export MODEL --output_dir E [--format onnx] [--quantize dynamic] [--opset N]`: ONNX export, checked.

E holds `model.onnx` with `config.json` and `preprocessor_config.json` beside it (the layout
`optimum.onnxruntime.ORTModelForImageClassification.from_pretrained(E)` reads), and `export_report.json`. The
exporter is optimum's (`optimum.exporters.onnx`) when it is installed and works with this transformers, else
`torch.onnx` on the model's logits. Either way a parity check runs on real images (the eval split of the run's recipe,
or `--dataset_name` / `--validation_dir`): the same pixel batches through PyTorch and ONNX Runtime, max absolute logit
difference and top-1 agreement; with `--quantize dynamic`, the int8 model's too, and the accuracy change.

The export input is the size the image processor produces, so a model fine-tuned at another resolution (position
embeddings interpolated, `image_size`) exports at that size: what tripped optimum's ViT exporter (optimum#1580) is a
dummy input built from a size the model was not trained at.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from vit_pipeline import PipelineError
from vit_pipeline.utils import one_line, setup_logging

logger = logging.getLogger("vit_pipeline")

PROG = "vit-pipeline export"
ONNX_FILE = "model.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
REPORT_FILE = "export_report.json"
EXTRA = "pip install 'vit-pipeline[export]'"


def require_export_extra() -> None:
    """Import onnx and onnxruntime, or say which extra installs them."""
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError as err:
            raise PipelineError(f"export needs the export extra ({module} is not installed): {EXTRA}") from err


def parity_data(name: str, args, data_overrides: dict):
    """The `DataArguments` of the parity images: the flags given, else the data of the run's `recipe.yaml`.

    Raises:
        PipelineError: neither flags nor a recipe name any data.
    """
    import dataclasses

    import yaml

    from vit_pipeline.config.arguments import RECIPE_FILE, DataArguments

    fields = {f.name for f in dataclasses.fields(DataArguments)}
    values = {k: v for k, v in data_overrides.items() if v is not None}
    recipe = Path(name) / RECIPE_FILE
    if not values.get("dataset_name") and not values.get("validation_dir") and recipe.is_file():
        loaded = yaml.safe_load(recipe.read_text()) or {}
        values = {**{k: v for k, v in loaded.items() if k in fields}, **values}
    if not values.get("dataset_name") and not values.get("train_dir") and not values.get("validation_dir"):
        raise PipelineError(f"export checks the ONNX model on real images: '{name}' has no {RECIPE_FILE} naming its "
                            "data, so pass --dataset_name (or --validation_dir)")
    if values.get("validation_dir") and not values.get("train_dir") and not values.get("dataset_name"):
        values["train_dir"] = values["validation_dir"]  # the labelled folder itself, nothing trains on it
    values["max_eval_samples"] = args.parity_samples
    values.setdefault("bad_images", "skip")
    return DataArguments(**values)


def logits_module(model):
    """The classifier as a module of pixel_values alone returning the logits tensor (what the ONNX graph computes)."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values=pixel_values).logits

    return Logits(model).eval()


def export_with_optimum(source: str, out: Path, opset: int) -> bool:
    """Export with optimum's ONNX exporter when it is installed and importable; False when it is not usable."""
    try:
        from optimum.exporters.onnx import main_export
    except Exception:  # not installed, or an optimum-onnx built for another transformers
        return False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            main_export(source, output=tmp, task="image-classification", opset=opset, do_validation=False)
            shutil.copy(Path(tmp) / ONNX_FILE, out / ONNX_FILE)
        return True
    except Exception as err:
        logger.warning("optimum's exporter failed (%s): exporting with torch.onnx instead", one_line(err)[:200])
        return False


def export_with_torch(model, size: tuple[int, int], path: Path, opset: int) -> None:
    """Export the logits with `torch.onnx` (TorchScript exporter), input `pixel_values` [batch, 3, H, W]."""
    import warnings

    import torch

    dummy = torch.zeros(1, 3, *size)
    kwargs = dict(input_names=["pixel_values"], output_names=["logits"], opset_version=opset,
                  dynamic_axes={"pixel_values": {0: "batch_size"}, "logits": {0: "batch_size"}})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches on shapes: fixed at export size
        try:
            torch.onnx.export(logits_module(model), (dummy,), str(path), dynamo=False, **kwargs)
        except TypeError:  # a torch without the dynamo switch
            torch.onnx.export(logits_module(model), (dummy,), str(path), **kwargs)


def quantize_dynamic(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the weights (ONNX Runtime); activations stay float, scaled at run time."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as quantize

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's "run pre-processing first" hint on the root logger
    try:
        quantize(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().setLevel(logging.INFO)


def parity(model, sessions: dict, dataset, image_processor, labels, batch_size: int) -> dict:
    """Run the same pixel batches through PyTorch (fp32, CPU) and each ONNX Runtime session.

    Returns:
        {"pytorch": {"accuracy"}, name: {"max_abs_logit_diff", "top1_agreement", "accuracy"}} for each session.
    """
    import torch

    from vit_pipeline.evaluation.inference import batches

    model = model.to("cpu").eval()
    reference, outputs = [], {name: [] for name in sessions}
    with torch.no_grad():
        for pixel_values, _ in batches(dataset, image_processor, batch_size=batch_size, device="cpu"):
            reference.append(model(pixel_values=pixel_values).logits.numpy())
            for name, session in sessions.items():
                outputs[name].append(session.run(["logits"], {"pixel_values": pixel_values.numpy()})[0])
    reference = np.concatenate(reference)
    result = {"pytorch": {"accuracy": float((reference.argmax(1) == labels).mean())}}
    for name, chunks in outputs.items():
        logits = np.concatenate(chunks)
        result[name] = {"max_abs_logit_diff": float(np.abs(logits - reference).max()),
                        "top1_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
                        "accuracy": float((logits.argmax(1) == labels).mean())}
    return result


def main(argv: list[str]) -> dict:
    """`vit-pipeline export`: load, export (and quantize), check on real images, write export_report.json."""
    from vit_pipeline.config.commands import CommandParser, ExportArguments

    parser = CommandParser((ExportArguments,), PROG, "MODEL --output_dir E")
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        sys.exit(0)
    positionals, (args,) = parser.parse_command(argv)
    if len(positionals) != 1:
        raise PipelineError(f"export takes one MODEL (an output folder or a Hub id), got {len(positionals)}: "
                            f"{' '.join(positionals) or 'none'}")
    name = positionals[0]
    require_export_extra()
    setup_logging()

    # Model, then the parity images: both fail before anything is written.
    from huggingface_hub import get_token

    from vit_pipeline.data.load import load_splits
    from vit_pipeline.evaluation.inference import load_trained, match_labels

    token = get_token()
    model, image_processor = load_trained(name, token=token, revision=args.model_revision)
    data_args = parity_data(name, args, {"dataset_name": args.dataset_name, "eval_split": args.eval_split,
                                         "dataset_config_name": args.dataset_config_name,
                                         "validation_dir": args.validation_dir})
    splits = load_splits(data_args, seed=args.seed, token=token)
    labels = np.asarray(match_labels(splits.labels, model))[
        np.asarray(splits.eval.select_columns(["label"]).with_format(None)["label"][:])]

    out, size, exporter = _export(name, model, image_processor, args)

    # Parity on real images.
    import onnxruntime

    files = {"onnx": ONNX_FILE, **({"quantized": QUANTIZED_FILE} if args.quantize == "dynamic" else {})}
    sessions = {key: onnxruntime.InferenceSession(str(out / file), providers=["CPUExecutionProvider"])
                for key, file in files.items()}
    checked = parity(model, sessions, splits.eval, image_processor, labels, args.batch_size)
    report = _report(name, args, exporter, size, checked, dataset=data_args.dataset_name or data_args.train_dir,
                     split=splits.eval_split_name, num_images=int(len(labels)))
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    p = report["parity"]
    print(f"Exported {name} to {out / ONNX_FILE} ({exporter}, opset {args.opset}); on {p['num_images']} images of "
          f"{p['split']}: max |logit diff| {p['max_abs_logit_diff']:.2e}, top-1 agreement {p['top1_agreement']:.4f}")
    if "quantized" in report:
        q = report["quantized"]
        print(f"Quantized (dynamic int8) {out / QUANTIZED_FILE}: max |logit diff| {q['max_abs_logit_diff']:.2e}, "
              f"top-1 agreement {q['top1_agreement']:.4f}, accuracy {q['accuracy']:.4f} "
              f"({q['accuracy_change']:+.4f} vs PyTorch)")
    if not p["within_atol"]:
        raise PipelineError(f"the ONNX model's logits differ from PyTorch's by up to {p['max_abs_logit_diff']:.2e} "
                            f"(more than --atol {args.atol:g}): see {out / REPORT_FILE}")
    return report


def _export(name: str, model, image_processor, args) -> tuple[Path, tuple[int, int], str]:
    """Write model.onnx (optimum for a local folder when it can, else torch.onnx), the config and the image
    processor, and the quantized model when asked. Returns the folder, the input size and the exporter used."""
    from vit_pipeline.data.transforms import image_spec

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = image_spec(image_processor).output_size
    exporter = "optimum" if Path(name).is_dir() and export_with_optimum(name, out, args.opset) else "torch.onnx"
    if exporter == "torch.onnx":
        export_with_torch(model, size, out / ONNX_FILE, args.opset)
    model.config.save_pretrained(out)
    image_processor.save_pretrained(out)
    if args.quantize == "dynamic":
        quantize_dynamic(out / ONNX_FILE, out / QUANTIZED_FILE)
    return out, size, exporter


def _report(name: str, args, exporter: str, size: tuple[int, int], checked: dict, *, dataset: str, split: str,
            num_images: int) -> dict:
    """export_report.json: what was exported, and the parity of each exported model with PyTorch."""
    report = {
        "model": name, "format": args.format, "exporter": exporter, "opset": args.opset, "file": ONNX_FILE,
        "input_size": list(size),
        "parity": {"dataset": dataset, "split": split, "num_images": num_images, "atol": args.atol,
                   **checked["onnx"], "accuracy_pytorch": checked["pytorch"]["accuracy"]},
    }
    report["parity"]["within_atol"] = report["parity"]["max_abs_logit_diff"] <= args.atol
    if "quantized" in checked:
        quantized = checked["quantized"]
        report["quantized"] = {"file": QUANTIZED_FILE, "method": "dynamic int8 weights (onnxruntime)", **quantized,
                               "accuracy_change": quantized["accuracy"] - checked["pytorch"]["accuracy"]}
    return report
