"""The README is the front page for Ansible users: the two set-up/test commands come first
(without sudo: they run as root), then what it is, the measured table, install and links;
every link it has leads somewhere, and it links every page of the docs' table of contents."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
#: [text](target), not images.
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rules) gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def readme_links() -> list[str]:
    return LINK.findall(README.read_text())


def test_the_setup_and_test_commands_come_first() -> None:
    lines = README.read_text().splitlines()
    assert lines[0] == "```"
    assert lines[1].startswith("bash scripts/demo.sh ")
    assert lines[2].startswith("bash scripts/test.sh ")
    assert lines[3] == "```"
    assert "sudo" not in " ".join(lines[:4])
    for script in "demo.sh", "test.sh":
        assert (REPO / "scripts" / script).is_file()


def test_the_front_page_sections_come_in_order() -> None:
    headings = [line for line in README.read_text().splitlines() if line.startswith("#")]
    front = ["## How much faster", "## Install", "## Documentation"]
    positions = [headings.index(h) for h in front]
    assert positions == sorted(positions) and positions[0] == 1, headings
    table = README.read_text().split("## How much faster", 1)[1].split("## Install", 1)[0]
    assert "| workload | stock Ansible | Mitogen | faster |" in table
    assert "benchmarks/ansible_bench.py" in table and "2026-12-01" in table


def test_every_relative_link_exists() -> None:
    anchors = {
        slug(line.lstrip("#")) for line in README.read_text().splitlines() if line.startswith("#")
    }
    broken = []
    for target in readme_links():
        if re.match(r"[a-z]+:", target):
            continue  # absolute URLs are not checked (no network)
        path, _, anchor = target.partition("#")
        if path and not (REPO / path).exists():
            broken.append(target)
        elif not path and anchor not in anchors:
            broken.append(target)
    assert not broken, broken


def test_every_docs_page_is_linked() -> None:
    index = (REPO / "docs" / "index.rst").read_text()
    pages = []
    for block in re.findall(r"\.\. toctree::\n((?:   .*\n|\n)+)", index):
        pages += [
            line.strip()
            for line in block.splitlines()
            if line.strip() and not line.strip().startswith(":")
        ]
    assert len(pages) >= 8, pages
    linked = {target.partition("#")[0] for target in readme_links()}
    missing = [page for page in pages if f"docs/{page}.rst" not in linked]
    assert not missing, missing
