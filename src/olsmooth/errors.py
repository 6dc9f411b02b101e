"""Errors that mean "the user's input is wrong": the command line turns them into a one-line message and exit 2."""

from __future__ import annotations

_WORKER_PREFIX = "Caught UserInputError"


class UserInputError(ValueError):
    """Bad input from the user (a missing path, an unknown name, a malformed file); never a bug.

    A DataLoader worker's error reaches the main process re-raised by torch as this type with the worker's
    whole traceback as its message; the constructor keeps only the original message.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith(_WORKER_PREFIX):
            args = (args[0].rstrip().rsplit("UserInputError: ", 1)[-1],)
        super().__init__(*args)

    def line(self) -> str:
        """The message on one line, whitespace collapsed."""
        return " ".join(str(self).split()) or "bad input"
