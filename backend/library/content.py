"""A revision's stored text and its hash: canonical YAML of a design and the SHA-256 of that text."""
from __future__ import annotations

import hashlib

from ..errors import DesignError
from ..spec import Design, parse_design_text


def canonical_yaml(design: Design) -> str:
    """Every field in the model's field order: equal designs give equal text.

    The text must load back to the same design; where the full dump does not
    (a validator that rejects an explicitly written default), the form
    without defaults is stored instead.
    """
    for exclude_defaults in (False, True):
        text = design.to_yaml(exclude_defaults=exclude_defaults)
        try:
            if parse_design_text(text, "yaml") == design:
                return text
        except DesignError:
            pass
    raise DesignError("library", f"design {design.name!r} does not survive a YAML round trip; please report this")


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
