"""The one error Validate raises for a bad request; its class name is the error the state machine catches."""

from __future__ import annotations


class InvalidRequest(Exception):
    """The execution input or its dataset cannot be trained on; each problem names the key or file and the fix.

    Lambda reports the class name as the error type, so the state machine's Catch matches ``InvalidRequest``
    and the message (every problem, ``; ``-separated) becomes the Fail state's cause.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid fine-tuning request: " + "; ".join(self.problems))
