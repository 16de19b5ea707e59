"""The README's quick start runs as written.

Every ```python block under the heading containing "Quick start" is run, in
order, as one script in a fresh interpreter. Skipped when the README is not
next to the tests (for example when testing an installed wheel).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start_blocks(text: str) -> list[str]:
    """The ```python blocks in the section whose heading contains "quick start"."""
    blocks: list[str] = []
    level = None          # heading level of the quick start section, while inside it
    in_code = False
    lang = ""
    buf: list[str] = []
    for line in text.splitlines():
        fence = re.match(r"^\s*(```|~~~)\s*([\w+-]*)", line)
        if fence:
            if not in_code:
                in_code, lang, buf = True, fence.group(2).lower(), []
            else:
                in_code = False
                if level is not None and lang in ("python", "py", "python3"):
                    blocks.append("\n".join(buf) + "\n")
            continue
        if in_code:
            buf.append(line)
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        if heading:
            depth = len(heading.group(1))
            if "quick start" in heading.group(2).lower():
                level = depth
            elif level is not None and depth <= level:
                level = None
    return blocks


def test_block_extraction():
    text = ("# Title\n```python\nnot_this()\n```\n## Quick Start\ntext\n```python\na = 1\n```\n"
            "### Sub\n```bash\nls\n```\n```python\nb = a + 1\n```\n## Next\n```python\nnot_this()\n```\n")
    assert quick_start_blocks(text) == ["a = 1\n", "b = a + 1\n"]


def test_readme_quick_start_runs(tmp_path):
    if not README.is_file():
        pytest.skip("README.md is not next to the tests (installed-package run)")
    blocks = quick_start_blocks(README.read_text(encoding="utf-8"))
    if not blocks:
        pytest.skip("README.md has no ```python block under a 'Quick start' heading yet")
    script = tmp_path / "quick_start.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    try:
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the quick start did not finish within 60 s; output so far:\n{e.stdout}\n{e.stderr}")
    assert proc.returncode == 0, f"quick start failed:\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
