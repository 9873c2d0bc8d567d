"""The one error type that the CLI turns into a one-line message and exit code 2."""


class JaxnasError(Exception):
    """A user-facing error: bad input, a missing dataset, a non-finite loss.

    The message names the bad value and what is allowed; the CLI prints it on one
    line without a traceback and exits with code 2.
    """


def unknown(kind: str, value: object, allowed) -> JaxnasError:
    """Build the standard 'unknown X' error listing the allowed values."""
    return JaxnasError(f"unknown {kind} {value!r}; allowed: {', '.join(map(str, allowed))}")
