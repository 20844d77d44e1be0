# SPDX-License-Identifier: GPL-3.0-or-later
"""Build and validate the installable Blender extension .zip.

    python scripts/build_extension.py                 # -> dist/nfsd_blender-<version>.zip
    python scripts/build_extension.py --output-dir D  # elsewhere
    python scripts/build_extension.py --blender /path/to/blender   # use Blender's own CLI

The manifest lives at the repository root and the code in nfsd_blender/, while an extension .zip
needs both side by side: the files are staged in a temporary folder, then Blender's extension
tool builds the .zip (``blender --command extension build``) and validates it (``... validate``).
Without ``--blender``, the same tool is taken from the bpy wheel (``bl_pkg/cli/blender_ext.py``),
run with this Python, with Blender's list of valid tags.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(ROOT, "nfsd_blender")
MANIFEST = os.path.join(ROOT, "blender_manifest.toml")


def find_extension_tool() -> tuple[str, str]:
    """Paths of ``blender_ext.py`` and Blender's ``tags.py`` inside the installed bpy wheel."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.origin:
        raise SystemExit("bpy is not installed: `pip install bpy==4.2.*` (or pass --blender /path/to/blender)")
    bpy_dir = os.path.dirname(spec.origin)  # .../site-packages/bpy (origin: bpy/__init__.so)
    tools = glob.glob(os.path.join(bpy_dir, "*", "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py"))
    if not tools:
        raise SystemExit(f"Blender's extension tool (bl_pkg/cli/blender_ext.py) is not in {bpy_dir}")
    tool = sorted(tools)[-1]
    scripts = tool.split(os.sep + "addons_core" + os.sep)[0]
    return tool, os.path.join(scripts, "modules", "_bpy_internal", "extensions", "tags.py")


def manifest_version() -> tuple[str, str]:
    import tomllib

    with open(MANIFEST, "rb") as file:
        manifest = tomllib.load(file)
    return manifest["id"], manifest["version"]


def stage(into: str) -> None:
    """Copy the manifest and the add-on's files (no caches) into ``into``."""
    shutil.copy2(MANIFEST, os.path.join(into, "blender_manifest.toml"))
    for name in sorted(os.listdir(PACKAGE_DIR)):
        path = os.path.join(PACKAGE_DIR, name)
        if name.startswith(".") or name == "__pycache__":
            continue
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(into, name), ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
        else:
            shutil.copy2(path, os.path.join(into, name))


def _run(command: list[str]) -> None:
    completed = subprocess.run(command, capture_output=True, text=True)
    output = (completed.stdout + completed.stderr).strip()
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{output}")
    if output:
        print(output)


def build(output_dir: str | None = None, blender: str | None = None) -> str:
    """Build and validate the extension; returns the path of the .zip."""
    ext_id, version = manifest_version()
    output_dir = os.path.abspath(output_dir or os.path.join(ROOT, "dist"))
    os.makedirs(output_dir, exist_ok=True)
    output = os.path.join(output_dir, f"{ext_id}-{version}.zip")
    if blender:
        prefix = [blender, "--factory-startup", "--command", "extension"]
        tags = []
    else:
        tool, tags_file = find_extension_tool()
        prefix = [sys.executable, tool]
        tags = ["--valid-tags", tags_file]
    with tempfile.TemporaryDirectory(prefix="nfsd_ext_") as staging:
        stage(staging)
        _run(prefix + ["validate", *tags, staging])
        _run(prefix + ["build", "--source-dir", staging, "--output-filepath", output, *tags])
    _run(prefix + ["validate", *tags, output])
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", help="where the .zip goes (default: dist/ at the repository root)")
    parser.add_argument("--blender", help="a Blender executable to build with instead of the bpy wheel's tool")
    args = parser.parse_args(argv)
    print(build(args.output_dir, args.blender))
    return 0


if __name__ == "__main__":
    sys.exit(main())
