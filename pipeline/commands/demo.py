"""`vit-pipeline demo MODEL`: a Gradio page to try a model in the browser; `--write_space DIR` writes it as a Space.

The page (pipeline/publish/space_app.py): upload or drop an image, see the top-k labels with their scores, where the
model looks beside it (attention rollout for a ViT-family model, Grad-CAM for the rest), and the evaluation results of
the model card. A multi-label
model shows every label's sigmoid score and marks those at or above the thresholds saved with it (thresholds.json).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

from vit_pipeline import PipelineError
from vit_pipeline.utils import CommandParser, first_line, is_hub_id, parse_bool, setup_logging

logger = logging.getLogger("vit_pipeline")

SPACE_FILES = ("app.py", "rollout.py", "cam.py", "requirements.txt", "README.md")


def demo_parser() -> argparse.ArgumentParser:
    """The parser of `vit-pipeline demo`."""
    parser = CommandParser(prog="vit-pipeline demo",
                             description="Try a model in the browser (Gradio), or write it as a Hugging Face Space.")
    parser.add_argument("model", help="Output folder of a `vit-pipeline train` run, or a Hub model id ORG/NAME.")
    parser.add_argument("--port", type=int, default=7860, help="Port to serve on (default 7860).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to serve on (default 127.0.0.1: this machine only; 0.0.0.0 for the network).")
    parser.add_argument("--share", type=parse_bool, default=False,
                        help="Also open a temporary public gradio.live link (default false).")
    parser.add_argument("--top_k", type=int, default=5, help="Labels shown with their scores (default 5).")
    parser.add_argument("--hub_token", help="Token for a private model (default: HF_TOKEN, else `hf auth login`).")
    parser.add_argument("--write_space", metavar="DIR",
                        help="Write a ready Space (app.py, rollout.py, requirements.txt, README.md) to DIR instead "
                        "of serving; the Space loads the model by its Hub id.")
    return parser


def _check(args) -> None:
    if not 1 <= args.port <= 65535:
        raise PipelineError(f"--port must be in 1-65535 (got {args.port})")
    if args.top_k < 1:
        raise PipelineError(f"--top_k must be at least 1 (got {args.top_k})")
    local = Path(args.model)
    if args.write_space is None:
        if not local.exists() and not is_hub_id(args.model):
            raise PipelineError(f"no model '{args.model}': give a `vit-pipeline train` output folder or a Hub id "
                                "(ORG/NAME)")
        if local.exists() and not (local / "config.json").is_file():
            raise PipelineError(f"'{args.model}' holds no model (no config.json): give the output_dir of a finished "
                                "`vit-pipeline train` run")


def space_model_id(model: str) -> str:
    """The Hub id a Space loads: `model` itself, or the `hub_model_id` of an output folder's recipe.yaml.

    Raises:
        PipelineError: a local folder that names no Hub repo (push it first), or neither a folder nor a Hub id.
    """
    local = Path(model)
    if local.is_dir():
        import yaml

        recipe_file = local / "recipe.yaml"
        recipe = yaml.safe_load(recipe_file.read_text()) if recipe_file.is_file() else {}
        repo_id = (recipe or {}).get("hub_model_id")
        if repo_id and (recipe or {}).get("push_to_hub"):
            return repo_id
        raise PipelineError(f"a Space loads its model from the Hub, and {model} names no pushed repo: push it "
                            f"(vit-pipeline push {model} --hub_model_id ORG/NAME) and give ORG/NAME")
    if not is_hub_id(model):
        raise PipelineError(f"a Space loads its model from the Hub: give its id ORG/NAME (got '{model}')")
    return model


def vendored(module) -> str:
    """The source of `module` (evaluation/rollout.py or cam.py) with its one package import replaced, for a Space.

    Imports inside functions the page never calls may stay; none may run when the module loads.
    """
    source, n_import = re.subn(r"^from vit_pipeline import PipelineError$",
                               "class PipelineError(ValueError):\n    \"\"\"A bad input, said in one line.\"\"\"",
                               Path(module.__file__).read_text(), flags=re.M)
    assert n_import == 1 and not re.search(r"^(from|import) (vit_)?pipeline", source, flags=re.M), \
        f"{module.__name__} imports more of the package at module level"
    return source


def write_space(model_id: str, folder: str | os.PathLike, top_k: int = 5) -> Path:
    """Write a Hugging Face Space that serves `model_id` (a Hub id) to `folder`: app.py, rollout.py, cam.py,
    requirements.txt and README.md with the Space metadata (sdk gradio, app_file app.py). Returns the folder.

    app.py is pipeline/publish/space_app.py with `MODEL_ID` and `TOP_K` set; rollout.py and cam.py are
    pipeline/evaluation/'s with the package's one import replaced, so the Space needs no vit-pipeline.
    """
    import importlib.metadata

    from huggingface_hub import SpaceCard, SpaceCardData

    from vit_pipeline.evaluation import cam, rollout
    from vit_pipeline.publish import space_app

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PipelineError(f"--write_space {folder} is a file: give a folder")
    folder.mkdir(parents=True, exist_ok=True)
    app = Path(space_app.__file__).read_text()
    app, n_model = re.subn(r"^MODEL_ID = None$", f"MODEL_ID = {model_id!r}", app, flags=re.M)
    app, n_top = re.subn(r"^TOP_K = \d+$", f"TOP_K = {int(top_k)}", app, flags=re.M)
    assert n_model == 1 and n_top == 1, "space_app.py lost its MODEL_ID / TOP_K lines"
    (folder / "app.py").write_text(app)
    for module in (rollout, cam):
        (folder / Path(module.__file__).name).write_text(vendored(module))

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return ""

    pins = {"transformers": f">={version('transformers')}", "torch": "", "pillow": "", "numpy": "",
            "matplotlib": "", "huggingface-hub": f">={version('huggingface-hub')}",
            # Grad-CAM, the map of a model that is not a ViT (cam.py).
            "grad-cam": f">={version('grad-cam')}"}
    (folder / "requirements.txt").write_text("".join(f"{name}{pin if pin != '>=' else ''}\n"
                                                     for name, pin in pins.items()))
    data = SpaceCardData(title=model_id.split("/")[-1], sdk="gradio", sdk_version=version("gradio") or None,
                         app_file="app.py", models=[model_id], tags=["image-classification", "vit-pipeline"],
                         pinned=False)
    card = SpaceCard.from_template(
        data, template_str="---\n{{ card_data }}\n---\n\n# {{ title }}\n\n{{ body }}\n",
        title=model_id, body=f"Try [{model_id}](https://huggingface.co/{model_id}) in the browser: drop an image to "
        "see the top labels with their scores and where the model looks (attention rollout for a ViT-family model, "
        "Grad-CAM for the rest). "
        "Written by `vit-pipeline demo --write_space`.")
    card.save(folder / "README.md")
    return folder


def main(argv: list[str]) -> None:
    """`vit-pipeline demo MODEL [--port P] [--host H] [--share false] [--top_k K] [--write_space DIR]`."""
    args = demo_parser().parse_args(argv)
    _check(args)
    setup_logging()

    # A Space folder: written, not served.
    if args.write_space is not None:
        folder = write_space(space_model_id(args.model), args.write_space, top_k=args.top_k)
        print(f"Wrote a Space to {folder} ({', '.join(SPACE_FILES)}); publish it with: hf upload --repo-type space "
              f"ORG/NAME {folder}")
        return

    try:
        import gradio  # noqa: F401
    except ImportError as err:
        raise PipelineError("vit-pipeline demo needs the demo extra: pip install 'vit-pipeline[demo]'") from err
    # No usage statistics sent from a local page.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from vit_pipeline.publish.space_app import build_demo

    try:
        demo = build_demo(args.model, token=args.hub_token or None, top_k=args.top_k)
    except OSError as err:  # what transformers raises for a repo it cannot find or reach
        raise PipelineError(f"cannot load model '{args.model}': {first_line(err)} (give a `vit-pipeline train` output "
                            "folder, or a Hub id that exists and is reachable)") from err
    logger.info("Serving %s on http://%s:%d (Ctrl+C stops it)", args.model, args.host, args.port)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, ssr_mode=False,
                    show_error=True, quiet=False)
    except OSError as err:
        raise PipelineError(f"cannot serve on {args.host}:{args.port} ({err}): pick another --port") from err
