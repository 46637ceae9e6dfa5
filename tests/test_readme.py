"""The README is the user's manual: its commands and code must be the ones that work."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_the_two_commands():
    first = _blocks("bash")[0].strip().splitlines()
    assert first == ['pip install -e . && python -m mfn4rec_tf.fit', 'pip install -e ".[dev]" && python -m pytest']
    assert README.index("```bash") < README.index("##")


def test_ci_runs_the_readme_test_command():
    test_command = _blocks("bash")[0].strip().splitlines()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci


def test_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks("python")
    assert blocks
    for block in blocks:
        namespace = {}
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "mfn4rec.keras").exists()
    assert namespace["top10"].shape == (2, 10)
    assert 0 not in namespace["top10"]  # padding is never recommended
