"""Calibration and evaluation text: the bundled corpora, user files, deterministic token splits."""

from compressor.data.corpus import load_text
from compressor.data.tokens import calibration_chunks, eval_windows

__all__ = ["load_text", "calibration_chunks", "eval_windows"]
