"""A plugin kind: sliding-window softmax attention whose window parameter is called ``size``.

Load it with ``python -m backend --plugin docs/examples/sliding_window_kind.py analyze DESIGN``
or ``BACKEND_PLUGINS=docs/examples/sliding_window_kind.py`` (CLI, app, Docker image); then
``attention: sliding_sdpa`` (string notation ``SLIDING_SDPA`` or ``SWA``) works in any design.

Two parts, one file (docs/KINDS.md):

1. the module -- plain torch, registered under the kind's name; the standalone export inlines it;
2. the declaration -- what the rest of the program asks the kind (schema, display, where it runs,
   its mask, cache and counts). Here most of it is inherited from the softmax declaration; the
   kind only says how *its* window is read. The export leaves this part out.
"""
from __future__ import annotations

from dataclasses import dataclass

from backend.nn.attention import SelfSDPA
from backend.nn.common import LayerContext, register

from backend.kinds.attention import SoftmaxKind
from backend.kinds.base import ParamInfo
from backend.registry import register_kind


@register("attention", "sliding_sdpa")
class SlidingSDPA(SelfSDPA):
    """Softmax attention over the last ``size`` keys (Beltagy et al. 2020, Longformer, arXiv 2004.05150).

    Query ``i`` sees keys ``j`` with ``i - j < size`` (itself included); in a
    bidirectional stack also ``j - i < size``. The decode cache keeps the last
    ``size`` tokens.
    """

    def __init__(self, ctx: LayerContext):
        super().__init__(ctx)
        self.window = int(ctx.params["size"])


@dataclass(frozen=True)
class SlidingKind(SoftmaxKind):
    def window(self, cfg: dict) -> int:
        return int(cfg["size"])


register_kind(SlidingKind(
    "sliding_sdpa", "attention", f"{__name__}:SlidingSDPA",
    "Softmax attention over a sliding window of `size` keys.",
    "Beltagy et al. 2020, Longformer, arXiv 2004.05150",
    {
        "size": ParamInfo("int", 16, "window size in tokens (the query itself included)", 1, 1 << 20),
        "backend": ParamInfo("choice", "auto", "SDPA kernel", choices=("auto", "math", "flash", "efficient")),
    },
    label="sliding window", abbrev="SWA", color="#1B9E77", aliases=("SWA",),
))
