"""Errors that mean "the user's input is wrong": the command line turns them into a one-line message and exit 2."""


class UserInputError(ValueError):
    """Bad input from the user (a missing path, an unknown name, a malformed file); never a bug."""
