"""Any image classifier through the same recipe keys: loading, depth units for layer decay, LoRA targets,
resolution changes, and one-line refusals of options that assume a ViT."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import FAMILIES, save_tiny_model, tiny_family
from vit_pipeline import PipelineError
from vit_pipeline.config import ModelArguments
from vit_pipeline.model.inspect import check_model_options, depth_pattern, layer_id, num_layers
from vit_pipeline.model.load import load_model

LABELS = ["a", "b", "c", "d"]
# Depth units of each tiny family: 2 transformer blocks, or 2 stages (Swin, ConvNeXt, ResNet), or MBConv blocks.
UNITS = {"vit": 2, "deit": 2, "beit": 2, "dinov2": 2, "swin": 2, "convnext": 2, "resnet": 2}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    return {f: save_tiny_model(tmp_path_factory.mktemp(f"tiny-{f}"), f) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_loads_with_a_fresh_head_and_runs(checkpoints, family):
    model = load_model(ModelArguments(model_name_or_path=str(checkpoints[family])), LABELS)
    assert model.config.id2label == dict(enumerate(LABELS))
    assert "WithTeacher" not in type(model).__name__  # DeiT: the trainable class, not the distilled one
    _, processor = tiny_family(family)
    logits = model(pixel_values=torch.zeros(2, 3, 32, 32), labels=torch.tensor([0, 3])).logits
    assert logits.shape == (2, len(LABELS))


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_decay_numbers_blocks_or_stages(checkpoints, family):
    from vit_pipeline.training.optim import param_groups

    model = load_model(ModelArguments(model_name_or_path=str(checkpoints[family])), LABELS)
    layers = num_layers(model)
    assert layers == UNITS.get(family, layers) and layers >= 2
    pattern = depth_pattern(model)
    ids = {layer_id(n, layers, pattern) for n, _ in model.named_parameters() if not n.startswith("classifier")}
    # Stem at 0, every unit its own id, the final norm / top convolution with the head.
    assert ids <= set(range(layers + 2)) and {0, 1, layers} <= ids
    groups = param_groups(model, learning_rate=1e-3, layer_decay=0.5)
    rates = {g["name"].removesuffix("_no_decay"): g["lr"] for g in groups}
    assert rates["head"] == 1e-3 and rates["layer_0"] == pytest.approx(1e-3 * 0.5 ** (layers + 1))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_resnet_stages_not_the_layers_inside_them(checkpoints):
    model = load_model(ModelArguments(model_name_or_path=str(checkpoints["resnet"])), LABELS)
    pattern = depth_pattern(model)
    assert layer_id("resnet.encoder.stages.1.layers.0.shortcut.convolution.weight", 2, pattern) == 2
    assert layer_id("resnet.embedder.embedder.convolution.weight", 2, pattern) == 0


def config_of(family):
    return tiny_family(family)[0]


@pytest.mark.parametrize("family, flags, message", [
    ("resnet", {"use_peft": True}, "use_peft: resnet models have no attention projections"),
    ("efficientnet", {"use_peft": True}, "use_peft: efficientnet models"),
    ("beit", {"image_size": 64}, "image_size is not supported for beit models"),
])
def test_options_that_assume_a_vit_are_refused_in_one_line(family, flags, message):
    with pytest.raises(PipelineError, match=message) as info:
        check_model_options(config_of(family), ModelArguments(model_name_or_path="x", **flags), None)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("family, flags", [
    ("convnext", {"use_peft": True}), ("swin", {"use_peft": True}), ("resnet", {"image_size": 48}),
    ("resnet", {"use_peft": True, "lora_target_modules": ["convolution"]}), ("dinov2", {"image_size": 48}),
])
def test_options_that_work_per_architecture_pass(family, flags):
    check_model_options(config_of(family), ModelArguments(model_name_or_path="x", **flags), None)


def test_lora_on_convnext_targets_its_pointwise_layers(checkpoints):
    from vit_pipeline.model.lora import apply_lora

    model = load_model(ModelArguments(model_name_or_path=str(checkpoints["convnext"])), LABELS)
    wrapped = apply_lora(model, ModelArguments(model_name_or_path="x", use_peft=True, lora_r=2))
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert any("pwconv1.lora_A" in n for n in trainable) and any("classifier" in n for n in trainable)
    assert not [n for n in trainable if "dwconv" in n]


def test_image_size_on_a_cnn_changes_only_the_processor(checkpoints):
    from vit_pipeline.data.transforms import image_spec
    from vit_pipeline.model.load import load_image_processor
    from vit_pipeline.model.prepare import prepare_model

    args = ModelArguments(model_name_or_path=str(checkpoints["resnet"]), image_size=48)
    model = load_model(args, LABELS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    processor = load_image_processor(args)
    prepare_model(model, processor, args)
    assert image_spec(processor).output_size == (48, 48)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model(pixel_values=torch.zeros(1, 3, 48, 48)).logits.shape == (1, len(LABELS))


def test_a_frozen_resnet_backbone_keeps_its_batch_norm_statistics(checkpoints):
    from vit_pipeline.model.inspect import backbone, freeze_backbone

    model = load_model(ModelArguments(model_name_or_path=str(checkpoints["resnet"])), LABELS)
    freeze_backbone(model)
    before = {k: v.clone() for k, v in backbone(model).state_dict().items()}
    head = model.classifier[1].weight.detach().clone()
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        loss = model(pixel_values=torch.randn(4, 3, 32, 32) * 3, labels=torch.tensor([0, 1, 2, 3])).loss
        loss.backward()
        optimizer.step()
    after = backbone(model).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running statistics alike
    assert not torch.equal(model.classifier[1].weight, head)  # the head trained


@pytest.mark.parametrize("family", ["deit", "dinov2", "swin"])
def test_image_size_works_for_other_transformer_families(checkpoints, family):
    from vit_pipeline.data.transforms import image_spec
    from vit_pipeline.model.load import load_image_processor
    from vit_pipeline.model.prepare import prepare_model

    args = ModelArguments(model_name_or_path=str(checkpoints[family]), image_size=48)
    model = load_model(args, LABELS)
    processor = load_image_processor(args)
    model = prepare_model(model, processor, args)
    assert image_spec(processor).output_size == (48, 48) and model.config.image_size == 48
    position = getattr(getattr(model, model.base_model_prefix).embeddings, "position_embeddings", None)
    if family != "swin":  # learned absolute position embeddings on the new 6 x 6 grid (+ [CLS], DeiT's distillation)
        assert position.shape[1] - 36 in (1, 2)
    assert model(pixel_values=torch.zeros(1, 3, 48, 48)).logits.shape == (1, len(LABELS))
