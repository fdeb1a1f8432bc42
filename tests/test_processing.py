"""The processing layer: raw images / frames / audio / text -> namespaced model inputs, the collator, save/load/Hub.

Every expected value is computed independently: by the sub-processor called directly, by scipy, or by hand.
Tiny processors are built from their constructors (no Hub downloads).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from scipy.signal import resample_poly
from torch.utils.data import DataLoader
from transformers import (
    ASTFeatureExtractor,
    BertTokenizerFast,
    ViTImageProcessor,
    Wav2Vec2FeatureExtractor,
    WhisperFeatureExtractor,
)

from hf_mmbalance.processing import (
    CONFIG_NAME,
    MultimodalDataCollator,
    MultimodalProcessor,
    ProcessingError,
    load_audio,
    pad_float_sequences,
    resample,
    serialization,
    to_mono,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import LocalHubServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = 8
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "red", "blue", "cat"]


# ------------------------------------------------------------------------------------------------------ fixtures


def vit(channels: int = 3) -> ViTImageProcessor:
    return ViTImageProcessor(
        size={"height": SIZE, "width": SIZE}, image_mean=[0.5] * channels, image_std=[0.5] * channels
    )


def wav2vec2() -> Wav2Vec2FeatureExtractor:
    return Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True)


def ast_extractor() -> ASTFeatureExtractor:
    return ASTFeatureExtractor(num_mel_bins=16, max_length=12)


def whisper() -> WhisperFeatureExtractor:
    return WhisperFeatureExtractor(feature_size=16, chunk_length=1)


@pytest.fixture
def tokenizer(tmp_path):
    vocab = tmp_path / "vocab" / "vocab.txt"
    vocab.parent.mkdir()
    vocab.write_text("\n".join(VOCAB) + "\n")
    return BertTokenizerFast(vocab=str(vocab))


def rgb(seed: int, height: int = 6, width: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def clip(seed: int, length: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(length)).astype(np.float32)


def sine(freq: float, rate: int, seconds: float = 0.5) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    soundfile.write(path, samples, rate, subtype="FLOAT")  # 32-bit float: the samples read back bit-identical
    return path


def as_tensor(value) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


def assert_same_batch(got: dict, expected: dict, keys=None) -> None:
    for key in keys or expected:
        a, b = as_tensor(got[key]), as_tensor(expected[key])
        assert a.shape == b.shape and a.dtype == b.dtype, (key, a.shape, b.shape, a.dtype, b.dtype)
        assert torch.equal(a, b), key


def rows_of(batch: dict) -> list[dict]:
    size = len(next(iter(batch.values())))
    return [{key: values[i] for key, values in batch.items()} for i in range(size)]


def multimodal(tokenizer) -> MultimodalProcessor:
    return MultimodalProcessor(
        {"image": vit(), "audio": wav2vec2(), "text": tokenizer, "spec": ast_extractor()},
        columns={"image": "img", "audio": "wav"},
        processor_kwargs={"text": {"max_length": 6}},
    )


def raw_batch(tmp_path: Path) -> dict:
    return {
        "img": [
            Image.fromarray(rgb(0)),
            rgb(1, 9, 5),
            {"bytes": png_bytes(Image.fromarray(rgb(2)).convert("L")), "path": None},
        ],
        "wav": [
            {"array": clip(0, 1600), "sampling_rate": 16000},
            clip(1, 900),
            {"path": str(write_wav(tmp_path / "c.wav", clip(2, 600), 8000)), "bytes": None},
        ],
        "text": ["hello world", "red blue cat hello world red", "cat"],
        "spec": [clip(3, 1600), clip(4, 2000), clip(5, 1200)],
        "labels": [0, 2, 1],
        "sample_idx": [10, 11, 12],
    }


# ------------------------------------------------------------------------------------------------------- images


def test_images_of_every_raw_kind_match_the_image_processor(tmp_path):
    proc = MultimodalProcessor({"image": vit()})
    gray = Image.fromarray(rgb(3)[..., 0])
    (tmp_path / "a.png").write_bytes(png_bytes(Image.fromarray(rgb(4))))
    values = [
        Image.fromarray(rgb(0)),  # PIL RGB
        gray,  # PIL grayscale -> RGB
        rgb(1),  # numpy HxWx3
        rgb(2)[..., 1],  # numpy HxW
        {"bytes": png_bytes(Image.fromarray(rgb(5))), "path": "x.png"},  # datasets.Image(decode=False)
        {"bytes": None, "path": str(tmp_path / "a.png")},
    ]
    expected_images = [
        Image.fromarray(rgb(0)),
        gray.convert("RGB"),
        Image.fromarray(rgb(1)),
        Image.fromarray(rgb(2)[..., 1]).convert("RGB"),
        Image.fromarray(rgb(5)),
        Image.fromarray(rgb(4)),
    ]
    out = proc({"image": values})
    expected = vit()(expected_images, return_tensors="pt")["pixel_values"]
    assert out["image"].shape == (6, 3, SIZE, SIZE) and out["image"].dtype == torch.float32
    assert torch.equal(out["image"], expected)
    assert set(out) == {"image"}

    # by hand: a white image rescales to 1, then (1 - 0.5) / 0.5 = 1; black gives -1
    white = proc({"image": [np.full((4, 4, 3), 255, np.uint8), np.zeros((4, 4), np.uint8)]})["image"]
    assert torch.allclose(white[0], torch.ones(3, SIZE, SIZE)) and torch.allclose(white[1], -torch.ones(3, SIZE, SIZE))


def test_grayscale_processor_gets_one_channel():
    proc = MultimodalProcessor({"digit": vit(channels=1)})
    colour = rgb(7)
    out = proc({"digit": [Image.fromarray(colour), colour[..., 0]]})["digit"]
    assert out.shape == (2, 1, SIZE, SIZE)
    expected = vit(channels=1)(
        [Image.fromarray(colour).convert("L"), Image.fromarray(colour[..., 0])], return_tensors="pt"
    )
    assert torch.equal(out, expected["pixel_values"])


def test_video_frames_give_b_t_c_h_w():
    proc = MultimodalProcessor({"video": vit()}, frames={"video": True})
    clips = [[rgb(10 * row + t) for t in range(3)] for row in range(2)]
    out = proc({"video": clips})["video"]
    assert out.shape == (2, 3, 3, SIZE, SIZE)
    for row in range(2):
        frames = vit()([Image.fromarray(f) for f in clips[row]], return_tensors="pt")["pixel_values"]
        assert torch.equal(out[row], frames)
    per_row = proc({"video": clips}, padding=False)["video"]
    assert [tuple(x.shape) for x in per_row] == [(3, 3, SIZE, SIZE)] * 2
    collator = MultimodalDataCollator(proc)  # raw frames (uint8) and processed ones (float) share the column name
    assert torch.equal(collator([{"video": c} for c in clips])["video"], out)
    assert torch.equal(collator([{"video": x} for x in per_row])["video"], out)
    with pytest.raises(ProcessingError, match=r"modality 'video' \(column 'video'\).*same number of frames"):
        proc({"video": [clips[0], clips[1][:2]]})
    with pytest.raises(ProcessingError, match=r"'video'.*row 0.*list of frames"):
        proc({"video": [rgb(0)]})


# -------------------------------------------------------------------------------------------------------- audio


def test_resample_matches_scipy_and_keeps_a_sine_frequency():
    tone = sine(440.0, 8000)
    up = resample(tone, 8000, 16000)
    assert up.dtype == np.float32 and len(up) == 2 * len(tone)
    np.testing.assert_allclose(up, resample_poly(tone, 2, 1), rtol=0, atol=1e-6)
    spectrum = np.abs(np.fft.rfft(up))
    peak_hz = np.argmax(spectrum) * 16000 / len(up)
    assert abs(peak_hz - 440.0) <= 16000 / len(up)  # within one FFT bin (2 Hz)
    down = resample(sine(1000.0, 44100), 44100, 16000)
    assert len(down) == int(np.ceil(len(sine(1000.0, 44100)) * 160 / 441))
    assert abs(np.argmax(np.abs(np.fft.rfft(down))) * 16000 / len(down) - 1000.0) <= 16000 / len(down)
    assert resample(tone, 8000.0, 8000) is tone
    for bad in (0, -8000, 22050.5, None, "fast"):
        with pytest.raises(ProcessingError, match="sampling rate .* cannot be used"):
            resample(tone, bad, 16000)


def test_to_mono_averages_the_channel_axis_either_way():
    left, right = clip(0, 100), clip(1, 100)
    np.testing.assert_allclose(to_mono(np.stack([left, right])), (left + right) / 2, atol=1e-7)  # (channels, N)
    np.testing.assert_allclose(to_mono(np.stack([left, right], axis=1)), (left + right) / 2, atol=1e-7)  # (N, channels)
    assert to_mono(left) is left


class FakeAudioDecoder:
    """Duck-types torchcodec's AudioDecoder: `.get_all_samples()` -> samples with `.data` (C, N) and `.sample_rate`."""

    def __init__(self, data: np.ndarray, rate: int):
        self.data, self.rate = data, rate

    def get_all_samples(self):
        return type("AudioSamples", (), {"data": torch.from_numpy(self.data), "sample_rate": self.rate})()


def test_every_audio_form_decodes_to_the_same_waveform(tmp_path):
    samples = clip(0, 800)
    path = write_wav(tmp_path / "a.wav", samples, 8000)
    expected = resample_poly(samples, 2, 1).astype(np.float32)
    forms = [
        {"array": samples, "sampling_rate": 8000},
        {"path": str(path), "bytes": None},
        {"path": "in-memory.wav", "bytes": path.read_bytes()},
        str(path),
        FakeAudioDecoder(samples[None, :], 8000),
        {"array": np.stack([samples, samples]), "sampling_rate": 8000},  # stereo -> mono
    ]
    for form in forms:
        np.testing.assert_allclose(load_audio(form, 16000), expected, rtol=0, atol=1e-6)
    plain = clip(1, 500)  # no rate: taken to be the extractor's already
    np.testing.assert_array_equal(load_audio(plain, 16000), plain)


def test_wav2vec2_variable_lengths_padded_with_a_mask(tmp_path):
    proc = MultimodalProcessor({"audio": wav2vec2()})
    a, b, c = clip(0, 1600), clip(1, 500), clip(2, 400)
    path = write_wav(tmp_path / "c.wav", c, 8000)  # 400 samples at 8 kHz -> 800 at 16 kHz
    out = proc({"audio": [{"array": a, "sampling_rate": 16000}, b, {"path": str(path), "bytes": None}]})
    assert set(out) == {"audio", "audio_attention_mask"}
    assert out["audio"].shape == (3, 1600) and out["audio_attention_mask"].dtype == torch.int64
    assert out["audio_attention_mask"].sum(1).tolist() == [1600, 500, 800]
    c16 = resample_poly(c, 2, 1).astype(np.float32)
    direct = wav2vec2()([a, b, c16], sampling_rate=16000, padding=True, return_attention_mask=True, return_tensors="pt")
    assert torch.allclose(out["audio"], direct["input_values"], atol=1e-6)
    assert torch.equal(out["audio_attention_mask"], direct["attention_mask"].long())
    assert torch.all(out["audio"][1, 500:] == 0)
    normalized = out["audio"][1, :500]  # wav2vec2 normalizes each clip over its own samples only
    assert abs(normalized.mean().item()) < 1e-5 and abs(normalized.std(unbiased=False).item() - 1) < 1e-3

    # column "audio" holds raw plain arrays or processed input_values alike: the collator must tell them apart
    # (processed rows carry audio_attention_mask), or it would normalize twice / never normalize
    plain = {"audio": [a, b, np.stack([c16, c16], axis=1)]}  # the last one stereo (N, 2)
    padded = proc(plain)
    collator = MultimodalDataCollator(proc)
    assert_same_batch(collator(rows_of(plain)), padded)
    assert_same_batch(collator(rows_of(proc(plain, padding=False))), padded)
    assert torch.allclose(padded["audio"], direct["input_values"], atol=1e-6)


def test_ast_and_whisper_give_fixed_size_features():
    clips = [clip(0, 1600), clip(1, 2400)]
    proc = MultimodalProcessor({"spec": ast_extractor(), "whisper": whisper()})
    out = proc({"spec": clips, "whisper": clips})
    assert set(out) == {"spec", "whisper"}
    assert out["spec"].shape == (2, 12, 16) and out["whisper"].shape == (2, 16, 100)  # 1 s window, 10 ms hop
    assert torch.equal(out["spec"], ast_extractor()(clips, sampling_rate=16000, return_tensors="pt")["input_values"])
    direct = whisper()(clips, sampling_rate=16000, return_tensors="pt")["input_features"]
    assert torch.equal(out["whisper"], direct)


# --------------------------------------------------------------------------------------------------------- text


def test_text_through_a_local_tokenizer(tokenizer):
    proc = MultimodalProcessor({"text": tokenizer}, processor_kwargs={"text": {"max_length": 5}})
    out = proc({"text": ["hello world", "red blue cat hello world", "cat"]})
    assert set(out) == {"text", "text_token_type_ids", "text_attention_mask"}
    ids = {token: i for i, token in enumerate(VOCAB)}
    cls, sep, pad = ids["[CLS]"], ids["[SEP]"], ids["[PAD]"]
    assert out["text"].tolist() == [
        [cls, ids["hello"], ids["world"], sep, pad],
        [cls, ids["red"], ids["blue"], ids["cat"], sep],  # truncated to max_length=5
        [cls, ids["cat"], sep, pad, pad],
    ]
    assert out["text_attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1] * 5, [1, 1, 1, 0, 0]]
    assert out["text"].dtype == torch.int64


def test_naming_scheme_and_main_input_override(tokenizer):
    proc = MultimodalProcessor(
        {"rgb": vit(), "depth": vit(channels=1), "caption": tokenizer, "audio": wav2vec2()},
        main_inputs={"caption": "attention_mask"},
    )
    out = proc({"rgb": [rgb(0)], "depth": [rgb(1)], "caption": ["hello"], "audio": [clip(0, 400)], "labels": [3]})
    assert set(out) == {
        "rgb",
        "depth",
        "caption",
        "caption_input_ids",
        "caption_token_type_ids",
        "audio",
        "audio_attention_mask",
        "labels",
    }
    assert out["caption"].tolist() == [[1, 1, 1]] and out["caption_input_ids"].tolist() == [[2, 5, 3]]
    assert out["rgb"].shape[1] == 3 and out["depth"].shape[1] == 1 and out["labels"] == [3]
    assert proc.modalities["rgb"].main_input == "pixel_values" and proc.modalities["audio"].main_input == "input_values"


# ----------------------------------------------------------------------------------------------------- collator


def test_unpadded_rows_through_the_collator_equal_padding_true(tokenizer, tmp_path):
    proc = multimodal(tokenizer)
    batch = raw_batch(tmp_path)
    padded = proc(batch, padding=True)
    as_numpy = proc(batch, return_tensors="np")
    assert all(
        isinstance(as_numpy[key], np.ndarray) and np.array_equal(as_numpy[key], padded[key].numpy())
        for key in padded
        if key not in ("labels", "sample_idx")
    )
    unpadded = proc(batch, padding=False)
    assert [len(x) for x in unpadded["audio"]] == [1600, 900, 1200] and len(unpadded["text"][0]) == 4
    collator = MultimodalDataCollator(proc)
    from_processed = collator(rows_of(unpadded))
    from_raw = collator(rows_of(batch))
    model_keys = [key for key in padded if key not in ("labels", "sample_idx")]
    assert set(model_keys) == {
        "image",
        "audio",
        "audio_attention_mask",
        "text",
        "text_token_type_ids",
        "text_attention_mask",
        "spec",
    }
    assert_same_batch(from_processed, padded, model_keys)
    assert_same_batch(from_raw, padded, model_keys)
    for out in (from_processed, from_raw):
        assert out["labels"].dtype == torch.int64 and out["labels"].tolist() == [0, 2, 1]
        assert out["sample_idx"].dtype == torch.int64 and out["sample_idx"].tolist() == [10, 11, 12]
        assert "img" not in out and "wav" not in out


def test_collator_pads_float_sequences_without_a_processor():
    rows = [
        {"seq": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "vec": [1.0, 2.0], "labels": 0.5, "sample_idx": 4, "name": "a"},
        {"seq": np.array([[7.0, 8.0]], np.float64), "vec": [3.0, 4.0], "labels": 1.5, "sample_idx": 5, "name": "b"},
    ]
    out = MultimodalDataCollator()(rows)
    assert out["seq"].dtype == torch.float32 and out["seq"].shape == (2, 3, 2)
    assert out["seq"].tolist() == [[[1, 2], [3, 4], [5, 6]], [[7, 8], [0, 0], [0, 0]]]
    assert out["seq_attention_mask"].dtype == torch.int64
    assert out["seq_attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].dtype == torch.float32 and out["labels"].tolist() == [0.5, 1.5]
    assert out["sample_idx"].dtype == torch.int64 and out["name"] == ["a", "b"]
    # rows of numbers are stacked as rows (default_collate would transpose a list of lists)
    assert "vec_attention_mask" not in out and out["vec"].tolist() == [[1.0, 2.0], [3.0, 4.0]]

    # a row's own mask is kept; an explicit list overrides detection
    masked = [
        {"s": torch.ones(2, 1), "s_attention_mask": [1, 0]},
        {"s": torch.ones(3, 1), "s_attention_mask": [1, 1, 1]},
    ]
    out = MultimodalDataCollator(sequence_modalities=["s"])(masked)
    assert out["s_attention_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    values, mask = pad_float_sequences([np.zeros((0,)), np.ones((2, 3))])
    assert values.shape == (2, 2, 3) and mask.tolist() == [[0, 0], [1, 1]]


def dataset_with_media(tmp_path: Path) -> datasets.Dataset:
    rates = [16000, 8000, 16000, 8000]
    lengths = [1600, 500, 700, 900]
    paths = [str(write_wav(tmp_path / f"{i}.wav", clip(i, n), r)) for i, (n, r) in enumerate(zip(lengths, rates))]
    images = [Image.fromarray(rgb(i, 5 + i, 6)) for i in range(4)]
    ds = datasets.Dataset.from_dict(
        {
            "img": images,
            "wav": paths,
            "text": ["hello", "red cat", "blue world hello", "cat"],
            "spec": [clip(9 + i, 1600).tolist() for i in range(4)],
            "labels": [0, 1, 1, 0],
            "sample_idx": list(range(4)),
        }
    )
    return ds.cast_column("img", datasets.Image()).cast_column("wav", datasets.Audio(decode=False))


def test_lazy_set_transform_and_ahead_of_time_map_through_a_dataloader(tokenizer, tmp_path):
    proc = multimodal(tokenizer)
    ds = dataset_with_media(tmp_path)
    raw = ds[:]  # decoded images, undecoded audio dicts: what the processor gets
    assert isinstance(raw["img"][0], Image.Image) and set(raw["wav"][0]) == {"bytes", "path"}
    expected = [proc({key: values[i : i + 2] for key, values in raw.items()}) for i in (0, 2)]

    batch_sizes = []

    def counting_transform(batch):
        batch_sizes.append(len(batch["text"]))
        return proc.transform(batch)

    lazy = ds.with_format(None)  # a copy: `ds` itself stays raw for `map`
    lazy.set_transform(counting_transform)
    row = lazy[1]
    assert row["audio"].shape == (1000,) and row["image"].shape == (3, SIZE, SIZE) and "img" not in row
    ahead = ds.map(proc.transform, batched=True, remove_columns=proc.raw_columns)
    assert "img" not in ahead.column_names and "audio_attention_mask" in ahead.column_names
    collator = MultimodalDataCollator(proc)
    for dataset in (lazy, ahead, ahead.with_format("torch")):
        batch_sizes.clear()
        batches = list(DataLoader(dataset, batch_size=2, collate_fn=collator))
        assert max(batch_sizes, default=0) <= 2  # lazy: decoded per batch, never the whole dataset at once
        assert sum(batch_sizes) == (4 if dataset is lazy else 0)
        assert len(batches) == 2
        for got, want in zip(batches, expected):
            assert_same_batch(got, want, [key for key in want if key not in ("labels", "sample_idx")])
            assert got["labels"].tolist() == want["labels"] and got["sample_idx"].dtype == torch.int64


# ------------------------------------------------------------------------------------------------------- errors


def test_errors_name_the_modality_the_column_and_what_was_expected(tokenizer, tmp_path):
    proc = multimodal(tokenizer)
    good = raw_batch(tmp_path)

    def fails(change: dict, pattern: str):
        with pytest.raises(ProcessingError, match=pattern):
            proc({**good, **change})

    with pytest.raises(ProcessingError, match=r"modality 'image' \(column 'img'\): column 'img' is missing.*images"):
        proc({key: value for key, value in good.items() if key != "img"})
    fails(
        {"img": [good["img"][0], 7, good["img"][2]]},
        r"modality 'image' \(column 'img'\), row 1: expected an image.*got int",
    )
    fails({"img": [np.zeros((4, 4), np.float32)] * 3}, r"'img'.*dtype float32")
    fails({"img": [{"bytes": b"not a png", "path": "bad.png"}] * 3}, r"'img'.*cannot decode image 'bad.png'")
    missing = str(tmp_path / "missing.wav")
    fails(
        {"wav": [{"path": missing, "bytes": None}] * 3},
        rf"modality 'audio' \(column 'wav'\), row 0: cannot read audio file '{missing}'",
    )
    (tmp_path / "junk.wav").write_bytes(b"RIFF junk")
    fails({"wav": [str(tmp_path / "junk.wav")] * 3}, r"'wav'.*cannot read audio file '.*junk.wav'")
    fails(
        {"wav": [{"array": clip(0, 100), "sampling_rate": 22050.5}] * 3}, r"'wav'.*sampling rate 22050.5 cannot be used"
    )
    fails({"wav": [{"array": clip(0, 100)}] * 3}, r"'wav'.*no 'sampling_rate'")
    fails({"wav": [3.5] * 3}, r"'audio' \(column 'wav'\), row 0: expected audio.*got float")
    fails({"wav": [np.arange(10)] * 3}, r"'wav'.*expected float audio samples")
    fails({"text": ["ok", 5, "ok"]}, r"modality 'text' \(column 'text'\), row 1: expected a string, got int")
    fails({"spec": [clip(0, 50)] * 3}, r"modality 'spec' \(column 'spec'\): ASTFeatureExtractor failed")
    fails({"text": "hello"}, r"'text'.*expected a batched column")
    with pytest.raises(ProcessingError, match=r"'image' \(column 'img'\).*neither the raw column 'img'"):
        MultimodalDataCollator(proc)([{"labels": 1}])
    with pytest.raises(ValueError, match="unknown modalities"):
        MultimodalProcessor({"text": tokenizer}, columns={"txt": "text"})
    with pytest.raises(ValueError, match=r"'audio': processor_kwargs may not set \['sampling_rate'\]"):
        MultimodalProcessor({"audio": wav2vec2()}, processor_kwargs={"audio": {"sampling_rate": 8000}})
    with pytest.raises(ValueError, match="JSON-serializable"):
        MultimodalProcessor({"text": tokenizer}, processor_kwargs={"text": {"max_length": object()}})
    with pytest.raises(TypeError, match="not a tokenizer, image processor or feature extractor"):
        MultimodalProcessor({"x": object()})


# ------------------------------------------------------------------------------------------- save / load / Hub


def saveable(tokenizer) -> MultimodalProcessor:
    return MultimodalProcessor(
        {"digit": vit(channels=1), "audio": wav2vec2(), "text": tokenizer, "whisper": whisper(), "video": vit()},
        columns={"digit": "img", "audio": "wav"},
        frames={"video": True},
        processor_kwargs={"text": {"max_length": 6}},
    )


def saveable_batch(tmp_path: Path) -> dict:
    return {
        "img": [rgb(0), Image.fromarray(rgb(1)).convert("L")],
        "wav": [
            {"array": clip(0, 800), "sampling_rate": 8000},
            {"path": str(write_wav(tmp_path / "s.wav", clip(1, 1200), 16000)), "bytes": None},
        ],
        "text": ["hello world red blue cat", "cat"],
        "whisper": [clip(2, 1600), clip(3, 900)],
        "video": [[rgb(4), rgb(5)], [rgb(6), rgb(7)]],
        "labels": [1, 0],
    }


def test_save_pretrained_round_trip_next_to_a_model_checkpoint(tokenizer, tmp_path, monkeypatch):
    proc = saveable(tokenizer)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    model_files = {
        "config.json": b'{"model_type": "mmbalance"}',
        "model.safetensors": b"weights",
        "README.md": b"# card",
    }
    for name, content in model_files.items():
        (folder / name).write_bytes(content)
    proc.save_pretrained(folder)

    for name, content in model_files.items():
        assert (folder / name).read_bytes() == content, name
    top_level = sorted(p.name for p in folder.iterdir())
    assert top_level == sorted(
        [
            *model_files,
            CONFIG_NAME,
            "processor_audio",
            "processor_digit",
            "processor_text",
            "processor_video",
            "processor_whisper",
        ]
    )
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["format_version"] == 1
    assert config["modalities"]["digit"] == {
        "kind": "image_processor",
        "processor_class": type(vit()).__name__,
        "backend": "pil",
        "subfolder": "processor_digit",
        "column": "img",
        "main_input": "pixel_values",
        "frames": False,
        "processor_kwargs": {},
    }
    assert config["modalities"]["text"]["kind"] == "tokenizer" and config["modalities"]["text"]["processor_kwargs"] == {
        "max_length": 6
    }
    assert (
        config["modalities"]["video"]["frames"] is True and config["modalities"]["audio"]["kind"] == "feature_extractor"
    )
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".txt"):
            text = path.read_text()
            assert str(tmp_path) not in text and "/tmp" not in text, path  # no absolute local paths
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pkl"))  # JSON only

    import transformers

    calls = []
    original = transformers.AutoTokenizer.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        calls.append(kwargs.get("trust_remote_code"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", classmethod(spy))
    loaded = MultimodalProcessor.from_pretrained(folder)
    assert calls == [False]  # remote code never runs unless asked
    for name, mod in proc.modalities.items():
        assert type(loaded.modalities[name].processor) is type(mod.processor)
        assert loaded.modalities[name].to_json() == mod.to_json()
    batch = saveable_batch(tmp_path)
    before, after = proc(batch), loaded(batch)
    assert set(before) == set(after)
    assert_same_batch(after, before, [key for key in before if key != "labels"])
    assert before["digit"].shape == (2, 1, SIZE, SIZE) and before["video"].shape == (2, 2, 3, SIZE, SIZE)


def test_read_config_refuses_paths_outside_the_folder(tmp_path):
    entry = {"kind": "tokenizer", "subfolder": "../elsewhere", "column": "t", "main_input": "input_ids"}
    serialization.write_config(tmp_path, {"text": entry})
    with pytest.raises(ValueError, match="subfolder of modality 'text'"):
        serialization.read_config(tmp_path)
    with pytest.raises(ValueError, match="no mmbalance_processor.json"):
        serialization.read_config(tmp_path / "nothing")


PUSH = """
    import json, sys
    from hf_mmbalance.processing import MultimodalProcessor
    info = MultimodalProcessor.from_pretrained(sys.argv[1]).push_to_hub("user/mm", commit_message="add processor")
    print(json.dumps({"oid": info.oid}))
"""

LOAD = """
    import json, pickle, sys
    import numpy as np
    from hf_mmbalance.processing import MultimodalProcessor
    sys.path.insert(0, sys.argv[3])
    from test_processing import saveable_batch
    from pathlib import Path
    proc = MultimodalProcessor.from_pretrained("user/mm", revision=sys.argv[1])
    out = proc(saveable_batch(Path(sys.argv[2])))
    np.savez(Path(sys.argv[2]) / "loaded.npz", **{k: v.numpy() for k, v in out.items() if k != "labels"})
"""


def _client(code: str, env: dict, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"client failed\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
    return proc.stdout


def test_push_to_hub_then_from_pretrained_gives_identical_inputs(tokenizer, tmp_path):
    proc = saveable(tokenizer)
    local = tmp_path / "local"
    proc.save_pretrained(local)
    with LocalHubServer(tmp_path / "hub") as hub:
        hub.create_repo("user/mm")
        hub.commit_files("user/mm", {"config.json": b"{}", "model.safetensors": b"weights"})  # a model already there
        env = hub.client_env(tmp_path / "home_push", PYTHONPATH=str(ROOT))
        oid = json.loads(_client(PUSH, env, str(local)).strip().splitlines()[-1])["oid"]
        assert oid == hub.head("user/mm")
        files = hub.files("user/mm")
        assert {
            "config.json",
            "model.safetensors",
            CONFIG_NAME,
            "processor_text/tokenizer.json",
            "processor_audio/preprocessor_config.json",
            "processor_digit/preprocessor_config.json",
        } <= set(files)
        for name in files:
            content = hub.read("user/mm", name)
            assert b"hf_dummy" not in content and str(tmp_path).encode() not in content, name
        assert hub.read("user/mm", CONFIG_NAME) == (local / CONFIG_NAME).read_bytes()

        data = tmp_path / "data"
        data.mkdir()
        _client(LOAD, hub.client_env(tmp_path / "home_load", PYTHONPATH=str(ROOT)), oid, str(data), str(ROOT / "tests"))
        assert hub.unhandled == []
    expected = proc(saveable_batch(data))
    loaded = np.load(data / "loaded.npz")
    assert sorted(loaded.files) == sorted(key for key in expected if key != "labels")
    for key in loaded.files:
        assert torch.equal(torch.from_numpy(loaded[key]), expected[key]), key
