"""One exception type for everything the user can fix.

The CLI prints an EdgepackError as a single line and exits non-zero; anything else
is a bug in edgepack and keeps its traceback.
"""


class EdgepackError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def close_names(name: str, choices, n: int = 3) -> str:
    """' (did you mean: a, b?)' for the choices that look like `name`, else ''."""
    import difflib

    found = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(found)}?)" if found else ""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message: library errors can span pages."""
    text = str(e).strip().splitlines()
    return text[0][:limit] if text else type(e).__name__
