"""``python -m backend library save|list|show|diff|delete``: the library on the command line."""
from __future__ import annotations

import json
from typing import Any

from ..errors import DesignError
from .content import content_hash
from .diff import format_diff
from .store import Library


# ---------------------------------------------------------------------------
# CLI: python -m backend library save|list|show|diff|delete


def cli_library(args: Any) -> int:
    cmd = args.library_command
    lib = Library()
    try:
        if cmd == "save":
            info = lib.save(args.design, author=args.author, message=args.message, name=args.name)
            print(f"saved {info.name}@{info.revision} ({info.content_hash[:12]}) by {info.author} at {info.created_at.isoformat(timespec='seconds')}")
            return 0
        if cmd == "list":
            rows = lib.list(search=args.search)
            if args.json:
                print(json.dumps([r.to_dict() for r in rows], indent=2))
                return 0
            if not rows:
                print("no designs" + (f" matching {args.search!r}" if args.search else ""))
                return 0
            print(f"{'name':<32} {'revs':>4}  {'latest':<20} {'author':<16} message")
            for r in rows:
                when = r.latest.created_at.strftime("%Y-%m-%d %H:%M UTC")
                msg = r.latest.message.splitlines()[0] if r.latest.message else ""
                print(f"{r.name:<32} {r.n_revisions:>4}  {when:<20} {r.latest.author:<16} {msg}")
            return 0
        if cmd == "show":
            rev = lib.get(args.name, args.revision)
            print(f"# {rev.name}@{rev.revision} by {rev.author} at {rev.created_at.isoformat(timespec='seconds')}: {rev.message}")
            print(f"# sha256 {rev.content_hash}")
            print(rev.design_yaml, end="")
            return 0
        if cmd == "diff":
            d = lib.diff(args.name, args.rev_a, args.rev_b)
            print(json.dumps(d, indent=2, default=str) if args.json else format_diff(d))
            return 0
        if cmd == "delete":
            n = lib.delete(args.name, confirm=bool(args.yes))
            print(f"deleted {args.name} ({n} revision{'s' if n != 1 else ''})")
            return 0
        raise DesignError("library", f"unknown command {cmd!r}")
    finally:
        lib.close()
