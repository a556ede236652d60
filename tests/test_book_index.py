"""The book's table of contents stays true: chapters/README.md lists chapters 00–14 in order,
every chapter it links exists (under its own number), every chapter source present has its
row, and chapter 00's map names the same fifteen chapters; "chapter N" in a chapter never
points past the book."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"


def index_rows():
    text = (CHAPTERS / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^\| (?:\[)?(\d\d) [^|]*?(?:\]\((\d\d_\w+\.py)\))? \|", text, re.M)


def test_readme_lists_chapters_00_to_14_in_order():
    numbers = [n for n, _ in index_rows()]
    assert numbers == [f"{i:02d}" for i in range(15)]


def test_every_linked_chapter_exists_and_every_chapter_has_its_row():
    rows = index_rows()
    for number, link in rows:
        if link:
            assert link.startswith(number), f"row {number} links {link}"
            assert (CHAPTERS / link).is_file(), f"chapters/README.md links a missing {link}"
    numbers = {number for number, _ in rows}
    for path in CHAPTERS.glob("[0-9][0-9]_*.py"):
        assert path.name[:2] in numbers, f"{path.name} has no row in chapters/README.md"


def test_chapter_00_map_names_the_same_chapters():
    text = (CHAPTERS / "00_introduction.py").read_text(encoding="utf-8")
    section = text[text.index("Map of the book"):]
    rows = re.findall(r"^# \| (\d\d) ", section, re.M)
    assert rows == [f"{i:02d}" for i in range(15)]


def test_cross_references_point_inside_the_book():
    for path in sorted(CHAPTERS.glob("[0-9][0-9]_*.py")):
        for m in re.finditer(r"[Cc]hapter (\d+)", path.read_text(encoding="utf-8")):
            assert int(m.group(1)) <= 14, f"{path.name}: '{m.group(0)}' is not a chapter"
