"""Per-modality settings of a recipe: the model's encoder settings, the modality's processor and its raw column.

A recipe's `modalities:` section maps each modality to its settings, e.g.::

    modalities:
      audio:
        encoder: auto
        backbone_config: {model_type: resnet, num_channels: 1, layer_type: basic, depths: [2, 2, 2, 2], ...}
        processor: {class: ASTFeatureExtractor, sampling_rate: 8000, num_mel_bins: 40, max_length: 100}
      image:
        encoder: auto
        backbone: path/or/hub-id          # pretrained weights are loaded from here
        processor: path/or/hub-id          # a saved image processor / feature extractor / tokenizer
        processor_type: image_processor    # only needed for a Hub id (a local folder says what it holds)

The processing keys (`processor`, `processor_type`, `processor_kwargs`, `column`, `kind`) are taken out here; the
rest is the modality's `MMBalanceConfig` entry. `kind` (image | audio | frames | text | features) tells the file
loader how to read the column; it follows from the processor when not given.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .parser import RecipeError

PROCESSING_KEYS = ("processor", "processor_type", "processor_kwargs", "column", "kind")
PROCESSOR_TYPES = ("tokenizer", "image_processor", "feature_extractor")
KIND_OF_PROCESSOR = {"tokenizer": "text", "image_processor": "image", "feature_extractor": "audio"}


def split_settings(modalities: Any) -> tuple[dict[str, dict], dict[str, dict]]:
    """(model settings, processing settings) by modality, from a recipe's `modalities` section (a mapping or its
    JSON text, as a command-line flag gives it)."""
    if isinstance(modalities, str):
        try:
            modalities = json.loads(modalities)
        except json.JSONDecodeError as error:
            raise RecipeError(f"--modalities must be a JSON mapping of modality -> settings ({error})") from None
    if not isinstance(modalities, dict) or not modalities:
        raise RecipeError(f"modalities must be a mapping of modality name -> settings, got {modalities!r}")
    model, processing = {}, {}
    for name, settings in modalities.items():
        settings = {} if settings is None else settings
        if not isinstance(settings, dict):
            raise RecipeError(f"modalities.{name} must be a mapping of setting: value, got {settings!r}")
        processing[name] = {key: settings[key] for key in PROCESSING_KEYS if key in settings}
        model[name] = {key: value for key, value in settings.items() if key not in PROCESSING_KEYS}
    return model, processing


def column_of(name: str, processing: dict) -> str:
    return processing.get("column", name)


def data_kind(name: str, model_settings: dict, processing: dict) -> str:
    """How the file loader reads the modality's column: the recipe's `kind`, else what its processor takes."""
    if "kind" in processing:
        return processing["kind"]
    if "processor" not in processing:
        return "features"
    kind = KIND_OF_PROCESSOR[_processor_type(name, processing)]
    return "frames" if kind == "image" and model_settings.get("frames") else kind


def build_processor(model_settings: dict[str, dict], processing: dict[str, dict]):
    """A `MultimodalProcessor` over the modalities that name a `processor`, or None when none does."""
    named = {name: spec for name, spec in processing.items() if "processor" in spec}
    if not named:
        return None
    from ..processing import MultimodalProcessor

    try:
        return MultimodalProcessor(
            {name: load_sub_processor(name, spec) for name, spec in named.items()},
            columns={name: column_of(name, spec) for name, spec in named.items()},
            frames={name: bool(model_settings[name].get("frames", False)) for name in named},
            processor_kwargs={name: spec.get("processor_kwargs", {}) for name, spec in named.items()},
        )
    except (TypeError, ValueError) as error:
        raise RecipeError(f"modalities: {error}") from None


def load_sub_processor(name: str, spec: dict):
    """One modality's HF processor: `{class: <transformers class>, **kwargs}` builds it offline; a string is a
    saved folder or a Hub id loaded with the Auto class of its `processor_type` (never with remote code)."""
    import transformers

    source = spec["processor"]
    if isinstance(source, dict):
        options = dict(source)
        class_name = options.pop("class", None)
        cls = getattr(transformers, str(class_name), None)
        if cls is None or not _is_processor_class(cls):
            raise RecipeError(
                f"modalities.{name}.processor.class={class_name!r} is not a transformers tokenizer, image processor "
                "or feature extractor class"
            )
        try:
            return cls(**options)
        except (TypeError, ValueError, OSError) as error:
            raise RecipeError(f"modalities.{name}.processor: {class_name}({options}) failed: {error}") from None
    if not isinstance(source, str) or not source:
        raise RecipeError(f"modalities.{name}.processor must be a folder, a Hub id or {{class: ..., ...}}, got {source!r}")
    auto_class = {
        "tokenizer": transformers.AutoTokenizer,
        "image_processor": transformers.AutoImageProcessor,
        "feature_extractor": transformers.AutoFeatureExtractor,
    }[_processor_type(name, spec)]
    try:
        return auto_class.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise RecipeError(f"modalities.{name}.processor={source!r}: cannot load it ({error})") from None


def _is_processor_class(cls) -> bool:
    from transformers import FeatureExtractionMixin, PreTrainedTokenizerBase
    from transformers.image_processing_base import ImageProcessingMixin

    return isinstance(cls, type) and issubclass(cls, (PreTrainedTokenizerBase, ImageProcessingMixin, FeatureExtractionMixin))


def _processor_type(name: str, spec: dict) -> str:
    """tokenizer | image_processor | feature_extractor: given, or read from a class name / a saved folder's files."""
    given = spec.get("processor_type")
    if given is not None:
        if given not in PROCESSOR_TYPES:
            raise RecipeError(f"modalities.{name}.processor_type={given!r} is unknown; expected one of {list(PROCESSOR_TYPES)}")
        return given
    source = spec["processor"]
    if isinstance(source, dict):
        import transformers

        cls = getattr(transformers, str(source.get("class")), None)
        if cls is not None and _is_processor_class(cls):
            from transformers import FeatureExtractionMixin, PreTrainedTokenizerBase

            if issubclass(cls, PreTrainedTokenizerBase):
                return "tokenizer"
            return "feature_extractor" if issubclass(cls, FeatureExtractionMixin) else "image_processor"
        raise RecipeError(f"modalities.{name}.processor.class={source.get('class')!r} is not a processor class")
    return _saved_processor_type(name, str(source))


def _saved_processor_type(name: str, folder: str) -> str:
    config_path = os.path.join(folder, "preprocessor_config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as handle:
            saved = json.load(handle)
        return "image_processor" if "image_processor_type" in saved else "feature_extractor"
    if os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
        return "tokenizer"
    raise RecipeError(
        f"modalities.{name}.processor={folder!r}: not a saved processor folder; for a Hub id set "
        f"modalities.{name}.processor_type to one of {list(PROCESSOR_TYPES)}"
    )
