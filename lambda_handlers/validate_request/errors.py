"""The one error Validate raises for a bad request; its class name is the error the state machine catches."""

from __future__ import annotations


class InvalidRequest(Exception):
    """The execution input or its dataset cannot be trained on; each problem names the key or file and the fix.

    Lambda reports the class name as the error type, so the state machine's Catch matches ``InvalidRequest``
    and the message (every problem, ``; ``-separated) becomes the Fail state's cause.
    """

    def __init__(self, problems: list[str]):
        self.problems = [_cut(problem) for problem in problems]
        super().__init__("invalid fine-tuning request: " + "; ".join(self.problems))


#: Longest problem kept: a problem may quote the user's value, and the Fail state's cause has a size limit.
MAX_PROBLEM_CHARS = 1000


def _cut(problem: str) -> str:
    """The problem, with the middle of an over-long one (a quoted huge value) elided; the start names the key or
    file and the end says what to fix, so both are kept."""
    if len(problem) <= MAX_PROBLEM_CHARS:
        return problem
    return f"{problem[:600]} ...({len(problem) - 900} characters elided)... {problem[-300:]}"
