"""The longest user or item id, in characters: the API takes ids up to this long (paths, queries, bodies) and the
imports refuse longer ones, so every imported user and item can be asked about. No imports: the API's limits read
it cheaply."""

ID_CHARS = 256


def too_long(what: str) -> str:
    """The problem of an id over `ID_CHARS` (`what`: the id's column or kind)."""
    return f"{what} longer than {ID_CHARS} characters, the longest id the API serves"
