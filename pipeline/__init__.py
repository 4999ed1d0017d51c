"""Reproducibility pipeline for score-based generative models (NCSN, Score SDE)."""
__version__ = "0.1.0"
