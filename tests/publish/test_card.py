"""The model card: template in model_cards/, metadata through ModelCardData, parsed back by huggingface_hub."""

from __future__ import annotations

from huggingface_hub import ModelCard, metadata_load

from vit_pipeline.publish.card import project_url, write_card
from vit_pipeline.publish.card_inputs import CardInputs, epoch_results
from vit_pipeline.utils import is_hub_id


def inputs(**overrides) -> CardInputs:
    values = dict(
        model_name="vit-beans", model_source="google/vit-base-patch16-224-in21k", from_scratch=False,
        architecture="ViTForImageClassification", labels=["angular_leaf_spot", "bean_rust", "healthy"],
        eval_metrics={"accuracy": 0.97, "f1": 0.969}, eval_split="validation", train_samples=1034,
        eval_samples=133, dataset_id="AI-Lab-Makerere/beans", dataset_display="AI-Lab-Makerere/beans",
        license="apache-2.0", hyperparameters={"learning_rate": 2e-5, "seed": 42},
        epoch_results=epoch_results([{"loss": 0.9, "epoch": 1.0, "step": 10},
                                     {"eval_loss": 0.5, "eval_accuracy": 0.9, "epoch": 1.0, "step": 10},
                                     {"eval_loss": 0.3, "eval_accuracy": 0.97, "epoch": 2.0, "step": 20}]),
        recipe={"model_name_or_path": "google/vit-base-patch16-224-in21k", "learning_rate": 2e-5},
        image_size=[224, 224], image_mean=[0.5] * 3, image_std=[0.5] * 3, hub_model_id="org/vit-beans")
    values.update(overrides)
    return CardInputs(**values)


def test_metadata_parses_back(tmp_path):
    path = write_card(inputs(), tmp_path)
    meta = metadata_load(path)
    assert meta["base_model"] == "google/vit-base-patch16-224-in21k"
    assert meta["datasets"] == ["AI-Lab-Makerere/beans"]
    assert meta["license"] == "apache-2.0" and meta["pipeline_tag"] == "image-classification"
    result = meta["model-index"][0]["results"][0]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"]["type"] == "AI-Lab-Makerere/beans" and result["dataset"]["split"] == "validation"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"accuracy": 0.97, "f1": 0.969}
    card = ModelCard.load(path)
    assert card.data.eval_results[0].metric_value == 0.97
    text = card.text
    assert 'pipeline("image-classification", model="org/vit-beans")' in text
    assert "angular_leaf_spot, bean_rust, healthy" in text
    assert "| 2.00 | 20 | 0.9000 | 0.3000 | 0.9700 |" in text  # results per epoch
    assert "learning_rate: 2e-05" in text and "transformers" in text
    assert "fine-tuned version of [google/vit-base-patch16-224-in21k]" in text


def test_from_scratch_is_said_and_local_paths_are_not_metadata(tmp_path):
    path = write_card(inputs(from_scratch=True, model_source="recipes/models/vit-tiny-digits", dataset_id=None,
                             dataset_display="scikit-learn's handwritten digits (embedded)"), tmp_path)
    meta = metadata_load(path)
    assert "base_model" not in meta and "datasets" not in meta
    assert "from random initialisation" in path.read_text()


def test_is_hub_id(tmp_path):
    assert is_hub_id("google/vit-base-patch16-224") and is_hub_id("beans")
    assert not is_hub_id(str(tmp_path)) and not is_hub_id("builtin:digits") and not is_hub_id("./a/b")
    # The Hub client's own id rule: one slash at most, no "..", no "--", no characters outside [\w.-].
    assert not any(is_hub_id(name) for name in ("a/b/c", "org/a..b", "org/a--b", "org/na me", "~/m", "", None))


def test_the_card_links_vit_pipeline_only_to_a_declared_url(tmp_path):
    from email.message import Message

    card = write_card(inputs(), tmp_path).read_text()
    assert "https://github.com/)" not in card  # the old dead link
    url = project_url()
    if url is None:  # pyproject declares no [project.urls]: the name, with no link
        assert "Trained with vit-pipeline (`trainer` backend)" in card
    else:
        assert f"Trained with [vit-pipeline]({url})" in card
    # The URL comes from the package metadata: Repository first, then Source, Homepage, any other.
    declared = Message()
    for entry in ("Documentation, https://example.org/docs", "Repository, https://example.org/vit-pipeline",
                  "Bad, not-a-url"):
        declared["Project-URL"] = entry
    assert project_url(declared) == "https://example.org/vit-pipeline"
    del declared["Project-URL"]
    declared["Project-URL"] = "Documentation, https://example.org/docs"
    assert project_url(declared) == "https://example.org/docs"
    assert project_url(Message()) is None


def test_evaluation_section_only_shows_what_was_measured(tmp_path):
    report = {"num_samples": 133, "accuracy": 0.97, "accuracy_ci95": [0.94, 0.99], "f1": 0.969, "ece": 0.021,
              "f1_ci95": [0.93, 0.99], "labels": ["angular_leaf_spot", "bean_rust", "healthy"]}
    rows = [(name, {"precision": 0.9, "recall": 0.95, "f1": 0.92, "support": 44, "recall_ci95": [0.88, 1.0]})
            for name in report["labels"]]
    evaluation = {"report": report, "per_class_top": rows, "per_class_bottom": [],
                  "confusion_matrix": "confusion_matrix.png", "training_curves": "training_curves.png",
                  "explanation": None}
    text = write_card(inputs(evaluation=evaluation), tmp_path).read_text()
    assert "accuracy 0.9700\n(95% bootstrap interval 0.9400-0.9900)" in text
    assert "macro f1 0.9690 (0.9300-0.9900)" in text
    assert "| bean_rust | 0.9000 | 0.9500 (0.8800-1.0000) | 0.9200 | 44 |" in text
    assert "](confusion_matrix.png)" in text and "](training_curves.png)" in text
    assert "rollout" not in text.lower() and "Where the model looks" not in text  # not drawn, not shown
    assert text.index("<details>") < text.index("| 2.00 | 20 |") < text.index("</details>")
    # With no evaluation (a card rendered before any report), no section and no figure at all.
    bare = write_card(inputs(), tmp_path / "bare").read_text()
    assert "## Evaluation" not in bare and ".png" not in bare
