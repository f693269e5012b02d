"""The one way every ``kiban`` subcommand runs: handler in, exit status out.

Input errors (``ValueError`` and subclasses, missing or wrong-kind paths, undecodable files)
exit 2; runtime failures (``RuntimeError``, a full disk, other ``OSError``) exit 1; both print
one line ``kiban <command>: error: <message>`` and no traceback. Anything else is a bug in kiban:
its traceback is printed and the exit status is 1. Ctrl-C exits 130.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import Any

_INPUT_OS_ERRORS = (
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    FileExistsError,
)


def exit_code_of(error: BaseException) -> int | None:
    """The exit status for an expected error, or None for a bug (an unexpected exception)."""
    code = getattr(error, "exit_code", None)
    if isinstance(code, int):
        return code
    if isinstance(error, (ValueError, UnicodeError, _INPUT_OS_ERRORS, KeyError)):
        return 2
    if isinstance(error, (RuntimeError, OSError, MemoryError)):
        return 1
    return None


def describe(error: BaseException) -> str:
    """One line for the user: the error's message, with the OS's words for OS errors."""
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        reason = error.strerror
        if error.errno == errno.ENOSPC:
            reason += " (free some space, or write elsewhere; the job resumes from what was kept)"
        return f"{reason}{where}"
    if isinstance(error, UnicodeDecodeError):
        return (
            f"not a text file in UTF-8 ({error.reason} at byte {error.start}); is it a binary file?"
        )
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])
    text = str(error)
    return text if text else type(error).__name__


def run_command(prog: str, handler: Callable[[Any], int | None], args: Any) -> int:
    """Run ``handler(args)`` under the convention above; ``prog`` is e.g. ``"kiban corpus build"``."""
    try:
        status = handler(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as error:  # noqa: BLE001 - mapped to an exit status just below
        code = exit_code_of(error)
        if code is None:
            raise
        print(f"{prog}: error: {describe(error)}", file=sys.stderr)
        return code
    return 0 if status is None else int(status)
