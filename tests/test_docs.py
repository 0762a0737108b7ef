"""The README stays short, and every link in it and in docs/ leads somewhere."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def links(page: Path) -> list[str]:
    """The Markdown link targets of a page, code blocks left out."""
    return LINK.findall(FENCE.sub("", page.read_text()))


def relative(target: str) -> bool:
    return not re.match(r"(https?:|mailto:|#)", target)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, spaces to '-', other punctuation but '-' and '_' dropped."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def test_the_readme_is_at_most_250_lines() -> None:
    assert len(README.read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = [t for t in links(page) if relative(t) and not (page.parent / t.split("#")[0]).exists()]
    assert not broken, f"{page.name}: {broken}"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_every_anchor_into_a_page_names_a_heading(page: Path) -> None:
    wrong = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        if relative(target) and anchor and path.endswith(".md"):
            if anchor not in anchors(page.parent / path):
                wrong.append(target)
    assert not wrong, f"{page.name}: {wrong}"


def test_the_readme_links_every_docs_page() -> None:
    linked = {(README.parent / t.split("#")[0]).resolve() for t in links(README) if relative(t)}
    assert not [p.name for p in PAGES if p.resolve() not in linked]
