"""bench/RESULTS.md is made of named sections; each benchmark rewrites only its own."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the text between <!-- NAME:BEGIN --> and <!-- NAME:END -->."""
    block = f"<!-- {name}:BEGIN -->\n{body.strip()}\n<!-- {name}:END -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"<!-- {name}:BEGIN -->.*<!-- {name}:END -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    print(block)
