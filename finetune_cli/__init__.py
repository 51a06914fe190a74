"""``finetune``: the users' command-line tool for a team stage's fine-tuning platform."""

from .main import main

__all__ = ["main"]
