"""What every bench does last: print its figures as JSON, and write them to ``--out`` too."""

from __future__ import annotations

import json
from pathlib import Path


def report(result: dict, out: Path | None) -> None:
    text = json.dumps(result, indent=1)
    if out:
        out.write_text(text + "\n")
    print(text)
