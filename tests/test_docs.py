"""Every citation of the design document (``docs/design.md, section N``) in the repository points to a
section it has, and nothing cites the design by another name."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs" / "design.md"
CITATION = re.compile(r"docs/design\.md,? sections? (\d+(?:\.\d+)?(?:(?:, | and )\d+(?:\.\d+)?)*)")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names if n.endswith((".py", ".md", ".sh", ".cpp", ".h", ".cu", ".toml"))]


def citations(text: str) -> list[str]:
    """Section numbers cited in ``text``, a citation wrapped over lines (and comment markers) included."""
    joined = re.sub(r"\s*\n\s*(?:#+|//|\*)?\s*", " ", text)
    return [n for match in CITATION.finditer(joined) for n in re.split(r", | and ", match.group(1))]


def sections() -> set[str]:
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", DESIGN.read_text(), flags=re.M))


def test_the_citation_scan_reads_wrapped_and_listed_sections():
    text = "see docs/design.md,\n    # section 2.5 and docs/design.md, sections 5.3 and 5.6; docs/design.md section 7"
    assert citations(text) == ["2.5", "5.3", "5.6", "7"]
    assert {"1", "2", "2.5", "7"} <= sections()


def test_every_citation_points_to_a_section_of_the_design():
    known, bad, count = sections(), [], 0
    for path in tracked_text_files():
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for number in citations(text):
            count += 1
            if number not in known:
                bad.append(f"{path.relative_to(REPO)}: section {number}")
        if "DESIGN section" in text and path.name != "test_docs.py":
            bad.append(f"{path.relative_to(REPO)}: cites 'DESIGN section'")
    assert count > 40 and not bad, bad
