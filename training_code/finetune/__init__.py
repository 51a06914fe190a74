"""Fine-tuning container package. Kept import-light: no torch or transformers here."""
