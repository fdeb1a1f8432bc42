"""Model cards for hf_mmbalance checkpoints, rendered from the template in the repository's `model_cards/`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources

from huggingface_hub import ModelCard, ModelCardData

from ..modeling import MMBalanceConfig
from ..modeling.backbone import backbone_feature_size

TEMPLATE_NAME = "mmbalance_model_card.md"
METRIC_ORDER = ("accuracy", "f1_macro", "mae", "pearson", "loss")


def template_text() -> str:
    return resources.files("hf_mmbalance.model_cards").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


def split_metrics(metrics: Mapping[str, float], modality_names: Sequence[str]) -> tuple[dict, dict]:
    """`{"eval_accuracy": .., "eval_unimodal_fou_accuracy": ..}` -> (fused metrics, {modality: metrics})."""
    fused: dict[str, float] = {}
    unimodal: dict[str, dict[str, float]] = {name: {} for name in modality_names}
    for key, value in metrics.items():
        bare = key.split("_", 1)[1] if key.startswith(("eval_", "test_")) else key
        for name in modality_names:
            prefix = f"unimodal_{name}_"
            if bare.startswith(prefix):
                unimodal[name][bare[len(prefix):]] = float(value)
                break
        else:
            if bare in METRIC_ORDER:
                fused[bare] = float(value)
    return fused, {name: values for name, values in unimodal.items() if values}


def describe_modality(settings: Mapping) -> dict[str, str]:
    """The card's row for one modality: its encoder (an auto backbone by its model type, tower and frames), what
    it takes as input and its feature size. Never the backbone's local path."""
    if settings["encoder"] != "auto":
        input_size = settings["input_size"]
        shape = f"(batch, {input_size})" if settings["encoder"] == "mlp" else f"(batch, length, {input_size})"
        return {"encoder": settings["encoder"], "input": f"`{shape}` floats", "feature_size": str(settings["feature_size"])}
    backbone = settings.get("backbone_config") or {}
    tower = settings.get("tower")
    kind = backbone.get("model_type", "backbone") + (f" ({tower} tower)" if tower else "")
    encoder = f"auto: {kind}" + (f", frames pooled by {settings.get('temporal_pooling', 'mean')}" if settings.get("frames") else "")
    try:
        width = settings.get("feature_size") or backbone_feature_size(backbone.get(f"{tower}_config", {}) if tower else backbone)
    except ValueError:
        width = "the backbone's width"
    return {"encoder": encoder, "input": "the backbone's main input", "feature_size": str(width)}


def render_model_card(
    config: MMBalanceConfig,
    model_class: str,
    repo_id: str,
    metrics: Mapping[str, float] | None = None,
    *,
    eval_split: str | None = None,
    dataset: str | None = None,
    methods: Sequence[str] = (),
    citations: Sequence[str] = (),
    training_summary: str | None = None,
    model_name: str | None = None,
    has_processor: bool = False,
) -> ModelCard:
    """Render the model card: metadata, modalities, fusion, fused and per-modality metrics, how to load."""
    fused, unimodal = split_metrics(metrics or {}, config.modality_names)
    present = set(fused) | {key for values in unimodal.values() for key in values}
    card_data = ModelCardData(
        library_name="transformers",
        tags=["hf_mmbalance", "multimodal", f"fusion-{config.fusion}", *methods],
        datasets=[dataset] if dataset else None,
        pipeline_tag=None,
    )
    modalities = [{"name": name, **describe_modality(settings)} for name, settings in config.modalities.items()]
    return ModelCard.from_template(
        card_data,
        template_str=template_text(),
        model_name=model_name or repo_id.split("/")[-1],
        task=config.task,
        fusion=config.fusion,
        modality_names=config.modality_names,
        modalities=modalities,
        unimodal_heads=config.unimodal_heads,
        num_labels=config.num_labels,
        dataset=dataset,
        methods=list(methods),
        eval_split=eval_split,
        fused_metrics=fused,
        unimodal_metrics=unimodal,
        metric_keys=[key for key in METRIC_ORDER if key in present],
        model_class=model_class,
        repo_id=repo_id,
        training_summary=training_summary,
        citations=list(citations),
        has_processor=has_processor,
    )


def add_card_section(card_path: str, section: str, before: str = "## How to load") -> None:
    """Insert a markdown `section` (e.g. the "Balance report" of `hf-mmbalance diagnose`) into the saved card at
    `card_path`, just before the heading `before` (after the evaluation); at the end when the card has no such heading."""
    card = ModelCard.load(card_path)
    text = card.text
    position = text.find(before)
    block = section.strip() + "\n\n"
    card.text = text[:position] + block + text[position:] if position >= 0 else text.rstrip() + "\n\n" + block
    card.save(card_path)
