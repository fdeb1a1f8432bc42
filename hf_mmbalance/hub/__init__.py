"""Model cards and Hub helpers."""

from .model_card import render_model_card, split_metrics

__all__ = ["render_model_card", "split_metrics"]
