"""Evaluation: metrics through offline `evaluate` modules. Never imports training."""
