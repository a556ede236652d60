"""The README's API example is run as written, so it cannot drift from the library."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_api_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README.md has no ```python block"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert abs(float(namespace["gg"].item()) - (-2 * 0.46211715726000974 * (1 - 0.46211715726000974 ** 2))) < 1e-12
    assert float(namespace["x"].grad.numpy().sum()) == 3 + 5 + 7 + 9
