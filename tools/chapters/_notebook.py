"""What every chapter generator shares: collect cells, write a validated notebook with no
outputs (the form in which chapters are committed).

    from _notebook import Chapter
    nb = Chapter("05_attention")
    md, code = nb.md, nb.code
    md(r"# 5. ...")
    code("import minimm as mm")
    if __name__ == "__main__":
        nb.write()
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CHAPTERS = Path(__file__).resolve().parents[2] / "chapters"


class Chapter:
    def __init__(self, name):
        self.out = CHAPTERS / f"{name}.ipynb"
        self.cells = []

    def md(self, text):
        self.cells.append(new_markdown_cell(text.strip("\n")))

    def code(self, text):
        self.cells.append(new_code_cell(text.strip("\n")))

    def write(self):
        nb = new_notebook(cells=self.cells, metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        })
        nbformat.validate(nb)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(self.out))
        print("wrote", self.out)
