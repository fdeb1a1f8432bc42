"""Tiny transformers backbone configs built in the tests (no download), with a matching input for each.

Shared by the backbone tests: each entry gives the modality settings for `encoder="auto"` and a function that makes
a batch of that backbone's main input (and extras), so every backbone is checked the same way.
"""

from __future__ import annotations

import torch
import transformers as T

_ATTENTION = dict(num_attention_heads=2, intermediate_size=32)


def vit_config(num_channels: int = 3, image_size: int = 16):
    return T.ViTConfig(image_size=image_size, patch_size=8, num_channels=num_channels, hidden_size=16, num_hidden_layers=2, **_ATTENTION)


def resnet_config(num_channels: int = 1):
    # The paper-style ResNet-18 is layer_type="basic", depths [2, 2, 2, 2], hidden_sizes [64, 128, 256, 512].
    return T.ResNetConfig(num_channels=num_channels, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")


def convnext_config():
    return T.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, patch_size=2)


def clip_config():
    return T.CLIPConfig(
        vision_config=dict(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, **_ATTENTION),
        text_config=dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, max_position_embeddings=16, bos_token_id=0, eos_token_id=2, pad_token_id=1, **_ATTENTION),
        projection_dim=8,
    )


def wav2vec2_config():
    return T.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 4),
        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, vocab_size=8, **_ATTENTION,
    )


def ast_config():
    return T.ASTConfig(hidden_size=16, num_hidden_layers=1, max_length=32, num_mel_bins=16, patch_size=8,
                       frequency_stride=8, time_stride=8, **_ATTENTION)


def whisper_config():
    return T.WhisperConfig(
        d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=16, max_source_positions=10, max_target_positions=8,
        vocab_size=64, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=0,
    )


def bert_config():
    return T.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, max_position_embeddings=32, **_ATTENTION)


def videomae_config():
    return T.VideoMAEConfig(image_size=16, patch_size=8, num_channels=3, num_frames=4, tubelet_size=2, hidden_size=16,
                            num_hidden_layers=1, **_ATTENTION)


def image_batch(channels: int, size: int = 16):
    return lambda b, g: {"": torch.randn(b, channels, size, size, generator=g)}


def _token_batch(b, g):
    ids = torch.randint(3, 64, (b, 7), generator=g)
    mask = torch.ones(b, 7, dtype=torch.long)
    mask[0, 5:] = 0
    return {"": ids, "attention_mask": mask}


def _waveform_batch(b, g):
    mask = torch.ones(b, 400, dtype=torch.long)
    mask[0, 300:] = 0
    return {"": torch.randn(b, 400, generator=g), "attention_mask": mask}


# name -> (modality settings, batch maker (batch size, generator) -> {"": main input, extra: tensor})
BACKBONES = {
    "vit": (lambda: {"backbone_config": vit_config()}, image_batch(3)),
    "resnet": (lambda: {"backbone_config": resnet_config()}, image_batch(1)),
    "convnext": (lambda: {"backbone_config": convnext_config()}, image_batch(3)),
    "clip_vision": (lambda: {"backbone_config": clip_config(), "tower": "vision"}, image_batch(3)),
    "clip_text": (lambda: {"backbone_config": clip_config(), "tower": "text"}, _token_batch),
    "wav2vec2": (lambda: {"backbone_config": wav2vec2_config()}, _waveform_batch),
    "ast": (lambda: {"backbone_config": ast_config()}, lambda b, g: {"": torch.randn(b, 32, 16, generator=g)}),
    "whisper": (lambda: {"backbone_config": whisper_config()}, lambda b, g: {"": torch.randn(b, 16, 20, generator=g)}),
    "bert": (lambda: {"backbone_config": bert_config()}, _token_batch),
    "vit_frames": (lambda: {"backbone_config": vit_config(), "frames": True}, lambda b, g: {"": torch.randn(b, 3, 3, 16, 16, generator=g)}),
    # a video backbone takes (batch, frames, C, H, W) as its own pixel_values
    "videomae": (lambda: {"backbone_config": videomae_config()}, lambda b, g: {"": torch.randn(b, 4, 3, 16, 16, generator=g)}),
}


def modality_batch(name: str, modality: str, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The namespaced batch keys of `modality` for backbone `name`: `modality` and `modality_<extra>`."""
    generator = torch.Generator().manual_seed(seed)
    made = BACKBONES[name][1](batch_size, generator)
    return {modality if key == "" else f"{modality}_{key}": value for key, value in made.items()}


def auto_settings(name: str, **overrides) -> dict:
    return {"encoder": "auto", **BACKBONES[name][0](), **overrides}
