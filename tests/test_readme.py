"""The README's Python examples run as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _examples():
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    blocks += re.findall(r"python - <<'PY'\n(.*?)\nPY", text, re.S)
    return blocks


def test_readme_has_examples_and_they_run(capsys):
    examples = _examples()
    assert len(examples) >= 2
    for code in examples:
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    assert "(64, 8, 8, 1) float32" in capsys.readouterr().out
