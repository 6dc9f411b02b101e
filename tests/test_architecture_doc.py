"""docs/architecture.md names the one owner of each contract: every source path it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_named_path_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:src|tests|docs)/[^`\s]+)`", text))
    assert len(paths) >= 10
    missing = sorted(path for path in paths if not any(ROOT.glob(path)))
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
