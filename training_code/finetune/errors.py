"""The error a run reports as its failure reason (the config and data errors are defined beside their checks)."""


class TrainingError(RuntimeError):
    """A problem that stops training, with a message that says what to change."""
