"""The ExtensionsIndex entry passes the index's own lint, and the extension's metadata is real.

The index runs prettier with prettier-plugin-multiline-arrays
(``multilineArraysWrapThreshold: 0``: every non-empty array spread over lines,
even with one element). ``prettier_json`` reproduces that output for a JSON
object of strings, numbers and arrays; it always runs. Where ``npx prettier``
and the plugin are installed (``npm install prettier prettier-plugin-multiline-arrays``),
the real prettier checks the file too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from module_paths import MODULE_DIR, ROOT

# Reads the module's source and metadata only: no slicer marker, it runs without slicer-core too.
CATALOG = ROOT / "MissingModalityTools.json"
PRETTIERRC = """const config = {
  plugins: [require.resolve("prettier-plugin-multiline-arrays")],
  multilineArraysWrapThreshold: 0,
};
module.exports = config;
"""


def prettier_json(data) -> str:
    """Prettier's JSON output under the index's configuration: two-space indent, every
    non-empty array and object spread over lines, empty ones as [] and {}, a final newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def test_catalog_entry_is_formatted_as_the_index_lint_wants():
    text = CATALOG.read_text(encoding="utf-8")
    assert text == prettier_json(json.loads(text)), "format MissingModalityTools.json with prettier (see this file)"
    assert '"build_dependencies": [\n    "PyTorch"\n  ]' in text


def test_prettier_json_agrees_with_the_index_examples():
    assert prettier_json({"a": [], "b": ["x"]}) == '{\n  "a": [],\n  "b": [\n    "x"\n  ]\n}\n'


def test_real_prettier_if_installed(tmp_path):
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("npx is not installed (the Python check above always runs)")
    probe = subprocess.run(
        [npx, "--no-install", "prettier", "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    if probe.returncode != 0:
        pytest.skip("prettier is not installed for npx (npm install prettier prettier-plugin-multiline-arrays)")
    (tmp_path / ".prettierrc.js").write_text(PRETTIERRC)
    shutil.copy(CATALOG, tmp_path / CATALOG.name)
    out = subprocess.run(
        [npx, "--no-install", "prettier", "--check", CATALOG.name],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    if "Cannot find package 'prettier-plugin-multiline-arrays'" in out.stderr + out.stdout:
        pytest.skip("prettier-plugin-multiline-arrays is not installed")
    assert out.returncode == 0, out.stdout + out.stderr


def _cmake(name: str) -> str:
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    return re.search(rf'set\({name}\s+"([^"]*)"\)', text).group(1)


def test_metadata_is_real_and_the_help_links_the_documentation():
    contributors = _cmake("EXTENSION_CONTRIBUTORS")
    assert contributors and "contributors" not in contributors.lower()  # not the template's placeholder
    src = (MODULE_DIR / "MissingModalityTools.py").read_text(encoding="utf-8")
    homepage = _cmake("EXTENSION_HOMEPAGE")
    docs_url = re.search(r'DOCUMENTATION_URL = "([^"]+)"', src).group(1)
    assert docs_url == homepage + "/blob/main/README.md" and (ROOT / "README.md").exists()
    assert "DOCUMENTATION_URL" in src.split("helpText", 1)[1].split("acknowledgementText", 1)[0]
    assert f'CONTRIBUTORS = ["{contributors}"]' in src
    for url in (_cmake("EXTENSION_ICONURL"), _cmake("EXTENSION_SCREENSHOTURLS")):
        assert (ROOT / url.split("/main/", 1)[1]).exists(), url
