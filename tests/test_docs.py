"""The pages a user reads (README.md and docs/*.md): every relative link points to a file in the repository, and
every #anchor (in the same page or another .md) is the GitHub-style slug of a heading of the page it names.
They tell no work history: no issue numbers.

Stdlib only (no torch): these checks run in a second.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if not p.name.endswith(".in.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"""!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)""")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks, inline code spans blanked out."""
    fenced = False
    for i, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield i, CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (code spans, emphasis and links reduced to their text),
    lower-cased, every character but letters, digits, '_', '-' and ' ' dropped, spaces made '-'."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("**", "").replace("__", "")
    text = re.sub(r"(?<![\w*])\*(?!\s)|(?<!\s)\*(?![\w*])", "", text)  # *emphasis*
    out = []
    for ch in text.strip().lower():
        cat = unicodedata.category(ch)
        if ch in "-_" or ch == " " or cat[0] in "LN" or cat == "Mn":
            out.append("-" if ch == " " else ch)
    return "".join(out)


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeated headings numbered as GitHub numbers them (-1, -2)."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if not m:
            continue
        s = slug(m.group(2))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(path: Path):
    """(line, target) of every inline link or image of a Markdown page, outside code."""
    for i, line in _prose_lines(path.read_text()):
        for m in LINK.finditer(line):
            yield i, m.group(1)


def test_the_pages_exist():
    assert (ROOT / "README.md").is_file()
    assert len(PAGES) > 1, "docs/ holds no generated page"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_and_anchors_resolve(page):
    bad = []
    for line, target in links(page):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
            continue  # an absolute URL (https:, mailto:): not checked here
        where, _, anchor = target.partition("#")
        dest = (page.parent / unquote(where)).resolve() if where else page
        if not dest.exists():
            bad.append(f"{page.relative_to(ROOT)}:{line}: {target}: {where} does not exist")
            continue
        try:
            dest.relative_to(ROOT)
        except ValueError:
            bad.append(f"{page.relative_to(ROOT)}:{line}: {target}: points outside the repository")
            continue
        if anchor:
            if dest.suffix != ".md":
                bad.append(f"{page.relative_to(ROOT)}:{line}: {target}: an anchor into a file that is not Markdown")
            elif unquote(anchor) not in anchors(dest):
                bad.append(f"{page.relative_to(ROOT)}:{line}: {target}: no heading of {dest.relative_to(ROOT)} has "
                           f"the anchor #{anchor}")
    assert not bad, "\n".join(bad)


def test_the_pages_carry_no_issue_numbers():
    """`grep -riE "issue [0-9]" README.md docs/` finds nothing: the work history is in CHANGELOG.md."""
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
            for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"issue [0-9]", line, re.I)]
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("heading,want", [
    ("The auditor's answer over 3 seeds: the verdict, Table 10 and U-LiRA",
     "the-auditors-answer-over-3-seeds-the-verdict-table-10-and-u-lira"),
    ("Several classes at once (`compare --scenario multiclass`, 3 seeds)",
     "several-classes-at-once-compare---scenario-multiclass-3-seeds"),
    ("What each part of CNR buys (`cnr-fast ablate`, 3 seeds)", "what-each-part-of-cnr-buys-cnr-fast-ablate-3-seeds"),
    ("Choosing a method on your own model: `compare` with your recipe",
     "choosing-a-method-on-your-own-model-compare-with-your-recipe"),
    ("**auto** and the [docs](docs/x.md)", "auto-and-the-docs"),
    ("torch.compile", "torchcompile"),
    ("snake_case_name", "snake_case_name"),
])
def test_slug_is_githubs(heading, want):
    assert slug(heading) == want


def test_repeated_headings_are_numbered_and_code_blocks_are_not_headings(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("# Notes\n\n```bash\n# not a heading\n```\n\n## Notes\n\n### Notes\n")
    assert anchors(md) == {"notes", "notes-1", "notes-2"}
    md.write_text("see [a](#notes) and `[b](nope.md)` and\n```\n[c](gone.md)\n```\n[d](y.md#top 'title')\n")
    assert [t for _, t in links(md)] == ["#notes", "y.md#top"]
