"""The API's fixed input limits (the settings-driven ones are in `api.settings`); no imports but `recsys.ids` (none
of its own), so the CLI and the settings can read them cheaply."""

from recsys.ids import ID_CHARS  # longest user or item id; the imports refuse longer ones

NAME_CHARS = 256  # longest title, category, brand or filter value
TEXT_CHARS = 10_000  # hard cap on free text; RECSYS_MAX_TEXT_CHARS (at most this) is the limit served
LIST_ITEMS = 10_000  # hard cap on id lists; RECSYS_MAX_SESSION_ITEMS / RECSYS_MAX_EXCLUDE_ITEMS are the limits served
FILTER_VALUES = 100  # most values one filter may list
EXCLUDE_VALUE_CHARS = LIST_ITEMS * (ID_CHARS + 1)  # one `exclude` query value: up to LIST_ITEMS ids, comma-
# separated (`exclude=P1,P2,…`; the served limit on the ids is RECSYS_MAX_EXCLUDE_ITEMS)
VISIBLE = r"[^ \t\n\r\f\v]"  # at least one character that is not (ASCII) white space; explicit, so that every
# regex engine reading the OpenAPI document (JSON Schema's ECMA-262, Python's, pydantic-core's Rust) agrees
