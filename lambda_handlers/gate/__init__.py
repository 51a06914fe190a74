"""Gate: compares a training job's evaluation with a threshold and with the base model."""
