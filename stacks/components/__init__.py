"""Reusable constructs: each builds one logical unit and exposes its resources as attributes."""
