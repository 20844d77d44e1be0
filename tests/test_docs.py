"""README.md as a newcomer reads it: every install command is one they can paste, nothing speaks of
the machines the project was built on, and the helper scripts need nothing the README does not name."""

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_install_commands_have_no_placeholders():
    for name in ("README.md", "pyproject.toml"):
        for line in (ROOT / name).read_text().splitlines():
            if "pip install" in line:
                assert not re.search(r"<[^>]*>", line), f"{name}: a placeholder in {line.strip()!r}"


def test_readme_speaks_to_its_reader_not_of_these_machines():
    assert "these machines" not in (ROOT / "README.md").read_text().lower()


def test_build_extension_script_needs_only_the_standard_library():
    # Blender's own tool comes from bpy or --blender; the test extras are not needed to build.
    tree = ast.parse((ROOT / "scripts" / "build_extension.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)
