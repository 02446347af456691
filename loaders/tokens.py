"""Compatibility: the tokenizer moved beside the ``tokens`` view, to ``loaders.views.tokenizer``; this module
re-exports its public names for code that imports them from here."""

from __future__ import annotations

from .views.tokenizer import PER_SAMPLE_MIN_VALUES, Tokenizer

__all__ = ["PER_SAMPLE_MIN_VALUES", "Tokenizer"]
