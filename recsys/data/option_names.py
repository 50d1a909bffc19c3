"""How an import's messages name its caller's options: the Python keywords of `import_table` / `read_item_table`
(`on_bad_rows='skip'`) or a command's own flags (`--on-bad-rows skip`), and only the options that caller has."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OptionNames:
    """`flags`: a command's `--options`, else Python keywords. `items_delimiter`: whether the caller reads an item
    file beside an interactions file and has an option for the item file's delimiter alone (`import table` does,
    `push-items` reads one file)."""

    flags: bool = False
    items_delimiter: bool = True

    def name(self, keyword: str) -> str:
        """`keyword` as the caller names the option: `--kind-names` or `kind_names`."""
        return f"--{keyword.replace('_', '-')}" if self.flags else keyword

    def option(self, keyword: str, value: str | None = None, flag_value: str | None = None) -> str:
        """`keyword` as the caller writes it, with a value if given: `on_bad_rows='skip'` or `--on-bad-rows skip`
        (`flag_value`: the value as a command line writes it, when not `value`)."""
        if self.flags:
            shown = value if flag_value is None else flag_value
            return self.name(keyword) + ("" if shown is None else f" {shown}")
        return f"{keyword}=" + ("" if value is None else repr(value))

    def invalid(self, keyword: str, problem: str) -> OptionValueError:
        """The error for a bad value of `keyword`: a command names its flag beside the message (`param_hint`),
        Python's message starts with the keyword."""
        return OptionValueError(keyword, problem if self.flags else f"{keyword}: {problem}")


KEYWORDS = OptionNames()  # import_table's
ITEM_TABLE_KEYWORDS = OptionNames(items_delimiter=False)  # read_item_table's: one file
IMPORT_TABLE_FLAGS = OptionNames(flags=True)  # recsys import table
PUSH_ITEMS_FLAGS = OptionNames(flags=True, items_delimiter=False)  # recsys push-items
MOVIELENS_FLAGS = OptionNames(flags=True, items_delimiter=False)  # recsys import movielens (tab-separated files)
RECBOLE_FLAGS = OptionNames(flags=True, items_delimiter=False)  # recsys import recbole


class OptionValueError(ValueError):
    """A bad option value; `keyword` names the option (a command shows its flag as the error's `param_hint`)."""

    def __init__(self, keyword: str, problem: str) -> None:
        self.keyword = keyword
        super().__init__(problem)

    def flag(self) -> str:
        """The option as a command line writes it."""
        return f"--{self.keyword.replace('_', '-')}"
