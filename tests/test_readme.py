"""The README's Python examples run as written, and pyproject.toml installs every package."""

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


def test_pyproject_installs_every_subpackage_and_the_configs():
    import tomllib
    root = pathlib.Path(__file__).resolve().parents[1]
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(root).parts)
               for p in (root / "ganaug_jax").rglob("*") if p.suffix in (".py", ".h")
               and "__pycache__" not in p.parts}
    assert set(setuptools["packages"]) == on_disk | {"ganaug_jax.configs"}
    assert setuptools["package-dir"] == {"ganaug_jax.configs": "configs"}
    assert {p.name for p in (root / "configs").glob("*.py")} >= {"__init__.py", "default.py"}
