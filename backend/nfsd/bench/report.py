"""Where the benchmarks write their tables: BENCHMARKS.md, one marked section per benchmark.

Each benchmark owns the text between its two markers (``<!-- NAME-benchmark:start -->`` and
``... :end -->``) and replaces only that on ``--write``; the prose around the sections is the team's.
"""

from __future__ import annotations

from pathlib import Path


def repo_root() -> Path:
    """The checkout this package runs from (the folder holding pyproject.toml), else the working folder."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def write_section(path: Path, text: str, start: str, end: str) -> None:
    """Put ``text`` between the markers ``start`` and ``end`` in ``path`` (created, or the section
    appended, if missing), leaving the rest of the file as it was."""
    path = Path(path)
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.is_file() else "# Benchmarks\n\n"
    if start in old and end in old:
        before, rest = old.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        new = before + block + ("\n" + after if after else "")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    path.write_text(new)
