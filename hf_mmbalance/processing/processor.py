"""`MultimodalProcessor`: one Hugging Face processor per modality behind one object.

Naming scheme (the model side relies on it): for modality `m`, key `m` holds the modality's MAIN model input (the
sub-processor's `model_input_names[0]` unless `main_inputs[m]` says otherwise: `pixel_values`, `input_values`,
`input_features`, `input_ids`) and every other output `K` of the sub-processor goes to `m_K` (`m_attention_mask`,
`m_token_type_ids`, ...). Several backbones share input names, so only namespaced keys can sit in one batch.

Use it lazily, decoding images and audio per batch::

    dataset.set_transform(processor.transform)          # per-row outputs; the collator pads each batch
    trainer = Trainer(..., data_collator=MultimodalDataCollator(processor),
                      args=TrainingArguments(..., remove_unused_columns=False))

or ahead of time, storing the model inputs in the dataset::

    dataset = dataset.map(processor.transform, batched=True, remove_columns=processor.raw_columns)
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from . import serialization
from .audio import check_sampling_rate, is_raw_audio, load_audio
from .errors import ProcessingError
from .images import image_channels, is_raw_image, load_image
from .padding import PADDING_KWARGS, convert_rows, pad_with_feature_extractor, pad_with_tokenizer, stack_rows

RETURN_TENSORS = ("pt", "np")
RESERVED_KWARGS = frozenset({"return_tensors", "sampling_rate", "return_attention_mask"})
RESERVED_KWARGS_WHY = (
    "the processor sets them itself (outputs stay per row until padded, clips are resampled to the extractor's "
    "sampling_rate, padded audio always gets its attention mask)"
)
EXPECTED_BY_KIND = {
    "tokenizer": "strings (text for the tokenizer)",
    "image_processor": "images",
    "feature_extractor": "audio clips",
}


def processor_kind(processor: Any) -> str:
    """The processor's kind, "tokenizer", "image_processor" or "feature_extractor": which Auto class reloads it
    and how raw values are decoded for it. TypeError for anything else (a composite `ProcessorMixin` must be split
    into its parts)."""
    from transformers import FeatureExtractionMixin, PreTrainedTokenizerBase
    from transformers.image_processing_base import ImageProcessingMixin

    if isinstance(processor, PreTrainedTokenizerBase):
        return "tokenizer"
    if isinstance(processor, ImageProcessingMixin):
        return "image_processor"
    if isinstance(processor, FeatureExtractionMixin):
        return "feature_extractor"
    raise TypeError(
        f"{type(processor).__name__} is not a tokenizer, image processor or feature extractor; pass one of those "
        "per modality (split a composite processor, e.g. CLIPProcessor, into its tokenizer and image processor)"
    )


def _image_backend(processor: Any) -> str | None:
    """The image-processing backend ("pil" / "torchvision") to reload with; None for other processors."""
    from transformers import image_processing_backends as backends

    if isinstance(processor, backends.PilBackend):
        return "pil"
    if isinstance(processor, backends.TorchvisionBackend):
        return "torchvision"
    return None


def _accepts(function: Callable, parameter: str) -> bool:
    return parameter in inspect.signature(function).parameters


@dataclass(frozen=True)
class Modality:
    """One modality's settings, resolved: its sub-processor, the raw `column` it reads, the `main_input` output that
    becomes key `name`, whether a row is a list of `frames`, and extra `processor_kwargs` for the sub-processor."""

    name: str
    processor: Any
    column: str
    main_input: str
    frames: bool = False
    processor_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        serialization.check_safe_name(self.name, "modality name")
        if self.frames and self.kind != "image_processor":
            raise ValueError(f"modality {self.name!r}: frames=True needs an image processor, got {self.kind}")
        reserved = sorted(RESERVED_KWARGS & set(self.processor_kwargs))
        if reserved:
            raise ValueError(f"modality {self.name!r}: processor_kwargs may not set {reserved}; {RESERVED_KWARGS_WHY}")
        try:
            json.dumps(self.processor_kwargs)
        except TypeError as error:
            raise ValueError(f"modality {self.name!r}: processor_kwargs must be JSON-serializable ({error})") from error
        if self.kind == "feature_extractor":
            check_sampling_rate(getattr(self.processor, "sampling_rate", None))
        if self.kind == "image_processor":
            image_channels(self.processor)

    @cached_property
    def kind(self) -> str:
        return processor_kind(self.processor)

    @property
    def where(self) -> str:
        """How error messages name this modality."""
        return f"modality {self.name!r} (column {self.column!r})"

    @cached_property
    def pads(self) -> bool:
        """Whether rows vary in length and are padded by the sub-processor (tokenizers, wav2vec2-style extractors);
        otherwise the outputs have a fixed size and are stacked. An extractor without a `padding` argument (AST), or
        one that pads to `max_length` by default (Whisper's 30 s window), already gives fixed-size outputs."""
        if self.kind == "tokenizer":
            return True
        if self.kind == "image_processor":
            return False
        padding = inspect.signature(type(self.processor).__call__).parameters.get("padding")
        return padding is not None and padding.default != "max_length"

    def call_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the per-row (unpadded) sub-processor call. Padding is left to `pad_kwargs` so that
        a batch padded now and one padded by the collator come out the same, unless the user asked for fixed-size
        `padding="max_length"` rows."""
        kwargs = dict(self.processor_kwargs)
        if kwargs.get("padding") != "max_length":
            kwargs.pop("padding", None)
        if self.kind == "tokenizer":
            kwargs.setdefault("truncation", True)
        if self.kind == "feature_extractor":
            kwargs["sampling_rate"] = self.processor.sampling_rate  # clips are resampled to it before the call
            if self.pads and _accepts(type(self.processor).__call__, "return_attention_mask"):
                # Also marks processed rows, which the collator tells from raw 1-D clips by this companion key.
                kwargs["return_attention_mask"] = True
        return kwargs

    def pad_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `tokenizer.pad` / `SequenceFeatureExtractor.pad`: pad to the longest row unless
        `processor_kwargs` asks for `padding="max_length"` (then `max_length` applies) or `pad_to_multiple_of`."""
        padding = self.processor_kwargs.get("padding")
        kwargs: dict[str, Any] = {"padding": "max_length" if padding == "max_length" else True}
        kwargs.update({key: self.processor_kwargs[key] for key in PADDING_KWARGS if key in self.processor_kwargs})
        if padding != "max_length":
            kwargs.pop("max_length", None)  # a truncation length, not a padding target
        return kwargs

    def to_json(self) -> dict[str, Any]:
        """This modality's entry in `mmbalance_processor.json` (no paths, no tokens: only names and kwargs)."""
        return {
            "kind": self.kind,
            "processor_class": type(self.processor).__name__,
            "backend": _image_backend(self.processor),
            "subfolder": serialization.subfolder_for(self.name),
            "column": self.column,
            "main_input": self.main_input,
            "frames": self.frames,
            "processor_kwargs": dict(self.processor_kwargs),
        }


class MultimodalProcessor:
    """Turns raw dataset columns into namespaced model inputs, with one HF processor per modality.

    Args:
        processors: modality name -> tokenizer, image processor or feature extractor.
        columns: modality -> raw dataset column (default: the column named like the modality).
        main_inputs: modality -> which sub-processor output becomes key `m` (default `model_input_names[0]`).
        frames: modality -> True when each row is a list of images (video frames -> (T, C, H, W) per row).
        processor_kwargs: modality -> extra keyword arguments for the sub-processor call (`max_length`, `padding=
            "max_length"`, `pad_to_multiple_of`, ...); stored in the saved JSON, so they must be JSON values.
    """

    def __init__(
        self,
        processors: Mapping[str, Any],
        columns: Mapping[str, str] | None = None,
        main_inputs: Mapping[str, str] | None = None,
        frames: Mapping[str, bool] | None = None,
        processor_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        if not processors:
            raise ValueError("MultimodalProcessor needs at least one modality")
        options = {
            "columns": columns or {},
            "main_inputs": main_inputs or {},
            "frames": frames or {},
            "processor_kwargs": processor_kwargs or {},
        }
        for option, values in options.items():
            unknown = sorted(set(values) - set(processors))
            if unknown:
                raise ValueError(f"{option} names unknown modalities {unknown}; modalities are {sorted(processors)}")
        self.modalities: dict[str, Modality] = {
            name: Modality(
                name=name,
                processor=processor,
                column=options["columns"].get(name, name),
                main_input=options["main_inputs"].get(name) or _main_input(processor),
                frames=bool(options["frames"].get(name, False)),
                processor_kwargs=dict(options["processor_kwargs"].get(name, {})),
            )
            for name, processor in processors.items()
        }
        self._check_columns()

    def _check_columns(self) -> None:
        """A raw column may not carry another modality's name: rows could not say which one a value belongs to."""
        for mod in self.modalities.values():
            if mod.column != mod.name and mod.column in self.modalities:
                raise ValueError(f"{mod.where}: the column is named like modality {mod.column!r}")

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{m.name}={type(m.processor).__name__}(column={m.column!r})" for m in self.modalities.values()
        )
        return f"{type(self).__name__}({parts})"

    @property
    def raw_columns(self) -> list[str]:
        """The raw dataset columns read (for `Dataset.map(..., remove_columns=processor.raw_columns)`)."""
        return [mod.column for mod in self.modalities.values()]

    def owner(self, key: str) -> str | None:
        """The modality whose output `key` is (`m` or `m_K`; the longest matching name wins), or None. A raw column
        is nobody's output, even when it looks like one (column "image_raw" of modality "image")."""
        if key in self._renamed_raw_columns:
            return None
        matches = [name for name in self.modalities if key == name or key.startswith(name + "_")]
        return max(matches, key=len) if matches else None

    @cached_property
    def _renamed_raw_columns(self) -> frozenset[str]:
        return frozenset(mod.column for mod in self.modalities.values() if mod.column != mod.name)

    # ----------------------------------------------------------------------------------------------- processing

    def __call__(self, batch: Mapping[str, Sequence], padding: bool = True, return_tensors: str = "pt") -> dict:
        """A batched dict of raw columns (as `Dataset.map(batched=True)` and `set_transform` give) -> model inputs.

        Returns a dict: every modality's namespaced outputs, and every column that is not a raw modality column
        (labels, sample_idx, ...) unchanged. With `padding=True` each output is one batched tensor ("pt") or array
        ("np"); with `padding=False` each is a list with one tensor/array per row, for `map` / `set_transform`,
        padded later by `MultimodalDataCollator`. Raises ProcessingError for missing columns or unusable values.
        """
        if return_tensors not in RETURN_TENSORS:
            raise ValueError(f"return_tensors={return_tensors!r}; expected one of {RETURN_TENSORS}")
        raw = set(self.raw_columns)
        outputs = {key: value for key, value in batch.items() if key not in raw}
        for mod in self.modalities.values():
            outputs.update(self.process_modality(mod.name, self._column(batch, mod), padding, return_tensors))
        return outputs

    def transform(self, batch: Mapping[str, Sequence]) -> dict:
        """`self(batch, padding=False)`: the function to give `Dataset.set_transform` or `Dataset.map(batched=True)`.
        Rows keep their own lengths (per-row torch tensors); the collator pads each training batch."""
        return self(batch, padding=False)

    def _column(self, batch: Mapping[str, Sequence], mod: Modality) -> list:
        if mod.column not in batch:
            raise ProcessingError(
                f"{mod.where}: column {mod.column!r} is missing from the batch (columns: {sorted(batch)}); expected "
                f"{EXPECTED_BY_KIND[mod.kind]}"
            )
        values = batch[mod.column]
        if not isinstance(values, (list, tuple, np.ndarray)):
            raise ProcessingError(
                f"{mod.where}: expected a batched column (a list of {EXPECTED_BY_KIND[mod.kind]}, as "
                f"Dataset.map(batched=True) and set_transform give), got {type(values).__name__}"
            )
        return list(values)

    def process_modality(self, name: str, values: Sequence, padding: bool = True, return_tensors: str = "pt") -> dict:
        """One modality's raw values (one per row) -> its namespaced outputs (see `__call__` for `padding`)."""
        mod = self.modalities[name]
        columns = self._encode(mod, list(values))
        if padding:
            return self._namespace(mod, self._batch(mod, columns, return_tensors))
        return self._namespace(mod, {key: convert_rows(rows, return_tensors) for key, rows in columns.items()})

    def collate_modality(self, name: str, rows: Sequence[Mapping[str, Any]], return_tensors: str = "pt") -> dict:
        """Already processed rows (`m`, `m_K` keys, one row each) -> one padded batch of the same keys, padded by
        the modality's own sub-processor: un-namespace, pad, re-namespace."""
        mod = self.modalities[name]
        keys = [key for key in rows[0] if self.owner(key) == name]
        columns = {self._unprefix(mod, key): [row[key] for row in rows] for key in keys}
        if mod.main_input not in columns:
            raise ProcessingError(f"{mod.where}: processed rows have no {name!r} key (they hold {sorted(rows[0])})")
        return self._namespace(mod, self._batch(mod, columns, return_tensors))

    def is_raw(self, name: str, row: Mapping[str, Any]) -> bool:
        """Whether a row still holds modality `name` raw (to process) rather than processed (to pad).

        With a raw column named apart from the modality the keys decide; when they share the name the value's kind
        does: strings, PIL images, integer pixels, file dicts and decoders are raw, float features are not (see
        `is_raw_audio` for plain audio arrays).
        """
        mod = self.modalities[name]
        if mod.column != name and name in row:
            return False
        if mod.column not in row:
            raise ProcessingError(
                f"{mod.where}: the row has neither the raw column {mod.column!r} nor processed {name!r} inputs "
                f"(keys: {sorted(row)})"
            )
        if mod.column != name:
            return True
        value = row[name]
        if mod.kind == "tokenizer":
            return isinstance(value, str)
        if mod.kind == "image_processor":
            return is_raw_image(value)
        companions = any(key != name and self.owner(key) == name for key in row)
        return is_raw_audio(value, has_processed_companions=companions)

    def _unprefix(self, mod: Modality, key: str) -> str:
        return mod.main_input if key == mod.name else key[len(mod.name) + 1 :]

    def _namespace(self, mod: Modality, outputs: Mapping[str, Any]) -> dict:
        if mod.main_input not in outputs:
            raise ProcessingError(
                f"{mod.where}: {type(mod.processor).__name__} returned {sorted(outputs)}, not the main input "
                f"{mod.main_input!r}; set main_inputs={{{mod.name!r}: ...}}"
            )
        return {(mod.name if key == mod.main_input else f"{mod.name}_{key}"): value for key, value in outputs.items()}

    def _batch(self, mod: Modality, columns: dict[str, list], return_tensors: str) -> dict:
        """Per-row sub-processor outputs -> one batch: padded by the sub-processor when rows vary, else stacked."""
        try:
            if mod.kind == "tokenizer":
                return pad_with_tokenizer(mod.processor, columns, return_tensors, **mod.pad_kwargs())
            if mod.pads:
                return pad_with_feature_extractor(mod.processor, columns, return_tensors, **mod.pad_kwargs())
        except ProcessingError:
            raise
        except Exception as error:  # the sub-processor's own message says what was wrong with the rows
            raise ProcessingError(f"{mod.where}: {type(mod.processor).__name__}.pad failed: {error}") from error
        return stack_rows(columns, return_tensors, mod.where)

    # ------------------------------------------------------------------------------------------------- encoding

    def _encode(self, mod: Modality, values: list) -> dict[str, list]:
        """Raw values -> the sub-processor's outputs, un-namespaced, one entry per row (nothing padded)."""
        if mod.kind == "tokenizer":
            return self._encode_text(mod, values)
        if mod.kind == "image_processor":
            return self._encode_images(mod, values)
        return self._encode_audio(mod, values)

    def _encode_text(self, mod: Modality, values: list) -> dict[str, list]:
        for row, value in enumerate(values):
            if not isinstance(value, str):
                raise ProcessingError(f"{mod.where}, row {row}: expected a string, got {type(value).__name__}")
        return self._run(mod, values)

    def _encode_images(self, mod: Modality, values: list) -> dict[str, list]:
        channels = image_channels(mod.processor)
        if not mod.frames:
            return self._run(mod, _load_each(mod, values, lambda value: load_image(value, channels)))
        clips = _load_each(mod, values, lambda value: [load_image(frame, channels) for frame in _frames(value)])
        flat = self._run(mod, [frame for clip in clips for frame in clip])
        bounds = np.cumsum([0] + [len(clip) for clip in clips])
        return {
            key: [np.stack(per_frame[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])]
            for key, per_frame in flat.items()
        }

    def _encode_audio(self, mod: Modality, values: list) -> dict[str, list]:
        rate = check_sampling_rate(mod.processor.sampling_rate)
        return self._run(mod, _load_each(mod, values, lambda value: load_audio(value, rate)))

    def _run(self, mod: Modality, inputs: list) -> dict[str, list]:
        """Call the sub-processor on decoded inputs, unpadded and untensored: one output per row and key."""
        try:
            outputs = mod.processor(inputs, return_tensors=None, **mod.call_kwargs())
        except Exception as error:  # e.g. a clip shorter than AST's analysis window
            raise ProcessingError(f"{mod.where}: {type(mod.processor).__name__} failed: {error}") from error
        return {key: list(value) for key, value in outputs.items()}

    # ------------------------------------------------------------------------------------------ saving, loading

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Save to `save_directory`: `mmbalance_processor.json` (per modality: kind, column, main input, frames,
        processor kwargs, subfolder) and each sub-processor's own `save_pretrained` in `processor_<m>/`.

        Safe next to a model checkpoint: no top-level file but the JSON is written. Returns the JSON file's path.
        """
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        for mod in self.modalities.values():
            mod.processor.save_pretrained(os.fspath(directory / serialization.subfolder_for(mod.name)))
        entries = {mod.name: mod.to_json() for mod in self.modalities.values()}
        return os.fspath(serialization.write_config(directory, entries))

    @classmethod
    def from_pretrained(
        cls, path_or_repo_id: str | os.PathLike, *, trust_remote_code: bool = False, **hub_kwargs: Any
    ) -> MultimodalProcessor:
        """Load a processor saved by `save_pretrained`, from a local folder or a Hub repo id.

        For a repo id, only `mmbalance_processor.json` and the `processor_*/` subfolders are downloaded with
        `huggingface_hub.snapshot_download(**hub_kwargs)` (`revision`, `token`, `cache_dir`, `local_files_only`,
        ...). Sub-processors are rebuilt by the Auto class of their stored kind; remote code runs only with
        `trust_remote_code=True`.
        """
        directory = serialization.resolve_directory(path_or_repo_id, hub_kwargs)
        entries = serialization.read_config(directory)
        return cls(
            {name: serialization.load_sub_processor(directory, e, trust_remote_code) for name, e in entries.items()},
            columns={name: e["column"] for name, e in entries.items()},
            main_inputs={name: e["main_input"] for name, e in entries.items()},
            frames={name: bool(e.get("frames", False)) for name, e in entries.items()},
            processor_kwargs={name: e.get("processor_kwargs") or {} for name, e in entries.items()},
        )

    def push_to_hub(
        self,
        repo_id: str,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str = "Upload multimodal processor",
        revision: str | None = None,
    ):
        """Create `repo_id` if needed and upload the saved processor in one commit (other files in the repo, such
        as a model, are kept). The token only authenticates the requests; nothing saved contains it. Returns the
        `huggingface_hub.CommitInfo`."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            return api.upload_folder(
                repo_id=repo_id, folder_path=folder, commit_message=commit_message, revision=revision
            )


def _main_input(processor: Any) -> str:
    processor_kind(processor)  # a clear TypeError first for something that is no processor at all
    return processor.model_input_names[0]


def _load_each(mod: Modality, values: list, load: Callable[[Any], Any]) -> list:
    """`load` on every row's value; a ProcessingError gains the modality, column and row."""
    loaded = []
    for row, value in enumerate(values):
        try:
            loaded.append(load(value))
        except ProcessingError as error:
            raise ProcessingError(f"{mod.where}, row {row}: {error}") from error
    return loaded


def _frames(value: Any) -> list:
    if not isinstance(value, (list, tuple)) or not value:
        raise ProcessingError(f"expected a non-empty list of frames (images), got {type(value).__name__}")
    return list(value)
