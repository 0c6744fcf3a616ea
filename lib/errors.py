"""The one exception type that means "the user's input is wrong".

Stages turn it into a single `Error: ...` line and a non-zero exit code (see lib/pipeline/cli.py);
anything else is a bug and keeps its traceback.
"""


class InputError(Exception):
    """Bad input: the message names the file (and line) and what belongs there."""


def error_line(error: BaseException) -> str:
    """An error in one line, its type and the first line of its message (a probe's reason, a failed fetch)."""
    text = str(error)
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
