"""The README and docs/ stay true: the README's Python example runs as written (with fewer
iterations), the README fits in 15 KiB, every relative link and anchor resolves, docs/README.md
lists every page, and every command block marked `<!-- runnable -->` runs."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]

#: a fenced block right after this comment is run by the docs check: mark only commands that need
#: no download and take seconds, since the whole check runs in the test suite
RUNNABLE = re.compile(r"^<!-- runnable -->\n```bash\n(.*?)^```", re.S | re.M)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_algorithm_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(block for block in blocks if "Algorithm 1" in block or "range(500)" in block)
    assert "range(500)" in code and "steps=100" in code
    code = code.replace("range(500)", "range(5)").replace("steps=100", "steps=3")
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    samples = namespace["samples"]
    assert samples.shape == (2000, 2) and torch.isfinite(samples).all()


def test_the_readme_is_read_in_five_minutes():
    """At most 15 KiB: set-up, own data, commands, an example and links; the rest is in docs/."""
    assert len(README.read_bytes()) <= 15 * 1024


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.*)$", text, re.M)}


def _links(page: Path) -> list[str]:
    """The page's link targets outside code, where `[x](y)` is text and not a link."""
    return LINK.findall(CODE_SPAN.sub("", FENCE.sub("", page.read_text())))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in _links(page):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto: are not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_docs_index_lists_every_page():
    index = DOCS / "README.md"
    listed = {(DOCS / target).resolve() for target in _links(index)}
    pages = {page.resolve() for page in DOCS.rglob("*.md")} - {index.resolve()}
    assert pages - listed == set()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_issue_numbers(page):
    """The docs say what holds and why; tracker numbers mean nothing to a reader."""
    assert not re.findall(r"\bissues?\s+#?\d+", page.read_text(), re.I)


def _runnable_blocks() -> list[tuple[str, str]]:
    return [(f"{page.relative_to(ROOT)}:{page.read_text()[:m.start()].count(chr(10)) + 1}", m.group(1))
            for page in PAGES for m in RUNNABLE.finditer(page.read_text())]


def test_the_readme_has_runnable_commands():
    assert any(where.startswith("README.md:") for where, _ in _runnable_blocks())


def _shims(folder: Path) -> Path:
    """`fdrl` and `python` on PATH as this interpreter, so the commands run the code under test."""
    folder.mkdir()
    for name, command in (("fdrl", f'"{sys.executable}" -m fdrl.cli'), ("python", f'"{sys.executable}"')):
        shim = folder / name
        shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.mark.parametrize("where, script", _runnable_blocks(), ids=[where for where, _ in _runnable_blocks()])
def test_runnable_commands_run(where, script, tmp_path):
    env = {**os.environ, "PATH": f"{_shims(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}"}
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{where}: exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
