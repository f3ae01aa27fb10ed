"""The shared design library: the store (``store``), revision content (``content``), diffs (``diff``)
and the command line (``cli``). See ``store`` for the storage model."""
from .cli import cli_library
from .content import canonical_yaml, content_hash
from .diff import design_field_diff, diff_designs, format_diff, numbers_diff, plan_diff
from .store import (DB_FILE, DEFAULT_DATA_DIR, MAX_AUTHOR, MAX_MESSAGE, MAX_NAME, MAX_REVISION, DesignSummary, Library,
                    Revision, RevisionInfo, database_url, get_library)

__all__ = [
    "Library", "Revision", "RevisionInfo", "DesignSummary", "get_library", "database_url", "canonical_yaml",
    "content_hash", "diff_designs", "design_field_diff", "plan_diff", "numbers_diff", "format_diff", "cli_library",
    "DB_FILE", "DEFAULT_DATA_DIR", "MAX_NAME", "MAX_AUTHOR", "MAX_MESSAGE", "MAX_REVISION",
]
