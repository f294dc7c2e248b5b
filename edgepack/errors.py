"""One exception type for everything the user can fix.

The CLI prints an EdgepackError as a single line and exits non-zero; anything else
is a bug in edgepack and keeps its traceback.
"""

EXCERPT_CHARS = 200  # how much of a user's input an error message may quote
MESSAGE_CHARS = 2000  # a whole message: one line a terminal can show, whatever it quotes


class EdgepackError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The message is bounded: a message built from hostile input (a 2 GB YAML value) must not
    become a 2 GB line on stderr, so anything past MESSAGE_CHARS is cut in the middle."""

    def __init__(self, message: object = "", *args):
        text = str(message)
        if len(text) > MESSAGE_CHARS:
            half = MESSAGE_CHARS // 2
            text = f"{text[:half]} ... [{len(text) - 2 * half} characters cut] ... {text[-half:]}"
        super().__init__(text, *args)


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """repr(value) cut to `limit` characters with an ellipsis: how an error quotes user input.

    Containers are summarised before repr so a huge (or alias-expanded) value is never rendered
    in full just to be cut."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, (str, bytes)) and len(value) > 4 * limit:
        value = value[:limit + 1]
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def close_names(name: str, choices, n: int = 3) -> str:
    """' (did you mean: a, b?)' for the choices that look like `name`, else ''."""
    import difflib

    found = difflib.get_close_matches(str(name)[:EXCERPT_CHARS], list(choices), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(found)}?)" if found else ""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message: library errors can span pages."""
    text = str(e).strip().splitlines()
    return text[0][:limit] if text else type(e).__name__
