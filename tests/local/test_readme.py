"""The README is tested: each ```bash block runs, in order, against a local stack it starts itself.

Every block runs in ``bash -euo pipefail`` from a fresh environment holding only
``SLUICE_STAGE=dev``, ``PATH`` (``.venv/bin`` first) and a ``HOME`` of its own (where the local
stack registers itself, so the commands find this stack and no other). The working directory is
a temporary folder with ``cdk.out`` linked to the session's synthesized app.

Markers, on the line before a block:

- ``<!-- needs-aws -->``: needs a real AWS account; not run.
- ``<!-- readme-test: setup -->`` / ``<!-- readme-test: teardown -->``: run before and after the
  others (the block that starts the local stack, and the one that stops it).

The README's first block (``make demo``, ``make test``) is not run: it is what runs this.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.local

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VENV_BIN = ROOT / ".venv" / "bin"
NEEDS_AWS = "<!-- needs-aws -->"
SETUP = "<!-- readme-test: setup -->"
TEARDOWN = "<!-- readme-test: teardown -->"
TOP_COMMANDS = ("make demo", "make test")
_FENCE = re.compile(r"^```bash\s*$")


@dataclass(frozen=True)
class Block:
    """One ```bash block: where it starts (1-based line), the marker before it and its code."""

    line: int
    marker: str
    code: str


def readme_blocks(text: str) -> list[Block]:
    """The README's ```bash blocks, in order, each with the non-empty line before it as marker."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if _FENCE.match(lines[i]):
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append(Block(i + 1, before, "\n".join(lines[i + 1 : end])))
            i = end
        i += 1
    return blocks


def is_top(block: Block) -> bool:
    commands = [line.split("#")[0].strip() for line in block.code.splitlines() if line.strip()]
    return bool(commands) and all(c in TOP_COMMANDS for c in commands)


def to_run(blocks: list[Block]) -> list[Block]:
    """The blocks run between setup and teardown, in README order."""
    return [b for b in blocks if not is_top(b) and b.marker not in (NEEDS_AWS, SETUP, TEARDOWN)]


def run_block(block: Block, *, cwd: Path, env: dict[str, str], timeout: float = 900) -> None:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"README.md line {block.line}: exit {done.returncode}\n{block.code}\n"
        f"--- stdout (tail)\n{done.stdout[-3000:]}\n--- stderr (tail)\n{done.stderr[-3000:]}"
    )


def test_the_readme_has_the_blocks_this_test_expects():
    blocks = readme_blocks(README.read_text())
    assert is_top(blocks[0]), "the first block is `make demo` / `make test`"
    assert [b.marker for b in blocks].count(SETUP) == 1
    assert [b.marker for b in blocks].count(TEARDOWN) == 1
    assert any(b.marker == NEEDS_AWS for b in blocks)
    assert len(to_run(blocks)) >= 6
    # The documented commands need no variable but the stage: none exports a resource name.
    for block in to_run(blocks):
        assert not re.search(r"export (SLUICE_(?!STAGE)|AWS_)", block.code), block.line


@pytest.fixture(scope="module")
def readme_stack(assembly_dir, tmp_path_factory):
    """A folder and an environment like a new user's shell, with the README's local stack up."""
    home = tmp_path_factory.mktemp("readme-home")
    work = tmp_path_factory.mktemp("readme-work")
    (work / "cdk.out").symlink_to(assembly_dir, target_is_directory=True)
    # The README runs from the repository's root, where the example project is.
    (work / "examples").symlink_to(README.parent / "examples", target_is_directory=True)
    env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "SLUICE_STAGE": "dev"}
    blocks = readme_blocks(README.read_text())
    [setup] = [b for b in blocks if b.marker == SETUP]
    [teardown] = [b for b in blocks if b.marker == TEARDOWN]
    try:
        run_block(setup, cwd=work, env=env)
        yield work, env, blocks
    finally:
        run_block(teardown, cwd=work, env=env, timeout=120)


def test_every_readme_block_runs_against_the_local_stack(readme_stack):
    work, env, blocks = readme_stack
    for block in to_run(blocks):
        run_block(block, cwd=work, env=env)
    # And the files the commands were told to write are exactly there
    assert (work / "drift.html").is_file()
    assert (work / "model" / "schema.json").is_file()
