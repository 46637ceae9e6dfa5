"""The documentation lives in the repository: every page the code or a page cites exists, every relative
link of README.md and docs/*.md resolves, and nothing cites notes that only exist outside the repository."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = ("model.md", "data.md", "stack.md")
SKIPPED_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", "build", "dist", "runs"}

# Notes kept outside the repository that the code used to cite (spelled in pieces, so that this
# file does not match its own check).
EXTERNAL_NOTES = tuple(name + ".md" for name in ("MODEL-NOTES", "FACTS", "DATA-FORMATS"))

DOC_MENTION = re.compile(r"(?<![\w./-])docs/([\w.-]+\.md)(?:#([\w-]+))?")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", flags=re.M)
SHARED_PATH = re.compile(r"(?<![\w-])shared/(?!data\b)[\w.-]+")  # ../shared/data (datasets) may stay


def _files(*suffixes):
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")
                         and not d.startswith(".venv"))  # also benchmarks/.venv-recbole (benchmarks/recbole_sasrec.py)
        found += [Path(folder) / name for name in sorted(files) if name.endswith(suffixes)]
    return found


def _relative(path):
    return path.relative_to(ROOT).as_posix()


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _anchors(page):
    text = FENCE.sub("", page.read_text())
    anchors, seen = set(), {}
    for heading in HEADING.findall(text):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _markdown_pages():
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_the_pages_exist_and_the_readme_links_them():
    readme = (ROOT / "README.md").read_text()
    for page in PAGES:
        assert (DOCS / page).is_file(), f"docs/{page} is missing"
        assert f"](docs/{page})" in readme, f"README.md does not link docs/{page}"


def test_no_file_cites_notes_outside_the_repository():
    offenders = []
    for path in _files(".py", ".md"):
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            offenders += [f"{_relative(path)}:{number}: {name}" for name in EXTERNAL_NOTES if name in line]
            offenders += [f"{_relative(path)}:{number}: {match}" for match in SHARED_PATH.findall(line)]
    assert not offenders, "cite docs/model.md, docs/data.md or docs/stack.md instead:\n" + "\n".join(offenders)


def test_every_cited_docs_page_and_section_exists():
    anchors = {}
    problems = []
    for path in _files(".py", ".md"):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for page, anchor in DOC_MENTION.findall(line):
                target = DOCS / page
                if not target.is_file():
                    problems.append(f"{_relative(path)}:{number}: docs/{page} does not exist")
                elif anchor:
                    anchors.setdefault(page, _anchors(target))
                    if anchor not in anchors[page]:
                        problems.append(f"{_relative(path)}:{number}: docs/{page} has no section #{anchor}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", _markdown_pages(), ids=_relative)
def test_relative_links_resolve(page):
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text()))
    problems = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I):  # http:, https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            problems.append(f"{target}: no section #{anchor} in {_relative(resolved)}")
    assert not problems, f"broken links in {_relative(page)}:\n" + "\n".join(problems)


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The patterns above must match the forms they are meant to catch (else the tests pass vacuously)."""
    docs = "docs" + "/"  # spelled in pieces: this file must not cite pages that do not exist
    assert DOC_MENTION.findall(f"see {docs}notes.md#metrics.") == [("notes.md", "metrics")]
    assert DOC_MENTION.findall(f"({docs}notes.md)") == [("notes.md", "")]
    assert LINK.findall("[a](notes.md#y) and ![b](p.png)") == ["notes.md#y", "p.png"]
    shared = "../shared" + "/"
    assert SHARED_PATH.findall(f"`{shared}paper/x.txt`, {shared}data/beauty, {shared}data.") == [shared[3:] + "paper"]
    assert _slug("The paper's figures") == "the-papers-figures"
    assert _slug("Eq. 11: scores over every item") == "eq-11-scores-over-every-item"
    page = tmp_path / "page.md"
    page.write_text("# Top\n\n```\n# not a heading\n```\n\n## Top\n")
    assert _anchors(page) == {"top", "top-1"}
