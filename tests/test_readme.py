"""The README, its docs and the LICENSE say what is true: examples run, links resolve."""

from __future__ import annotations

import doctest
import hashlib
import inspect
import re
from pathlib import Path

import pytest

from lightning_embviz.loggers import log_tables

README = Path(__file__).resolve().parents[1] / "README.md"
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_readme_compute_prdc_example_runs_as_shown():
    text = README.read_text(encoding="utf-8")
    start = text.index("## `compute_prdc` without Lightning")
    block = text[start:].split("```python", 1)[1].split("```", 1)[0]
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block, {}, "README", str(README), 0)
    assert len(test.examples) >= 5
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0


def test_readme_names_the_ci_test_command():
    text = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    command = 'pip install torch==2.13.0 && pip install -e ".[dev]" && python -m pytest -q'
    assert command in text
    assert command in ci


def _section(text: str, heading: str) -> str:
    """The README section under ``heading`` (a whole line), up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n") + 1
    end = text.find(f"\n{level} ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def test_license_is_the_full_apache_2_text_that_pyproject_declares():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    root = README.parent
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    assert "License :: OSI Approved :: Apache Software License" in project["classifiers"]
    text = (root / "LICENSE").read_text(encoding="utf-8")
    # The canonical file of https://www.apache.org/licenses/LICENSE-2.0.txt, unchanged.
    assert hashlib.sha256(text.encode()).hexdigest() == APACHE_2_SHA256
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    assert "END OF TERMS AND CONDITIONS" in text
    assert "[LICENSE](LICENSE)" in README.read_text(encoding="utf-8")


def test_readme_quick_start_starts_from_a_clone():
    text = README.read_text(encoding="utf-8")
    quick = _section(text, next(line for line in text.splitlines() if line.startswith("## Quick")))
    commands = quick.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert commands[0].startswith("git clone ") and " lightning-embviz" in commands[0]
    assert commands[1] == "cd lightning-embviz"
    assert commands[2].startswith("pip install torch==2.13.0")
    assert commands[3] == "python examples/gan_digits.py"
    # pip downloads PyTorch: the README must not promise a run without downloads.
    assert "no download" not in text.lower()


def test_readme_says_where_tensorboard_shows_what_and_how_to_read_the_curves():
    text = README.read_text(encoding="utf-8")
    quick = _section(text, next(line for line in text.splitlines() if line.startswith("## Quick")))
    assert "TIME SERIES" in quick
    assert "?smoothing=0" in quick and "0.6" in quick
    assert "default_hp_metric=False" in quick
    # The text tag as TensorBoard shows it: what `add_text` makes of the logged tag.
    tag = inspect.signature(log_tables).parameters["markdown_tag"].default
    assert f"`{tag}/text_summary`" in quick
    assert f"`{tag}`" not in text.replace(f"`{tag}/text_summary`", "").replace(
        f"the tag `{tag}`", ""
    )


def test_readme_reads_in_the_order_a_newcomer_needs():
    text = README.read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    order = [
        "## Quick start",
        "## The callback",
        "## What each logged thing means",
        "## The `embviz` command",
        "## Exact and fast",
        "## Development",
    ]
    positions = [next(i for i, h in enumerate(headings) if h.startswith(o)) for o in order]
    assert positions == sorted(positions), headings


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a markdown page's headings (lower case, punctuation dropped)."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_readme_and_docs_links_point_to_files_and_headings_that_exist():
    root = README.parent
    pages = [README, *sorted((root / "docs").glob("*.md"))]
    assert {p.name for p in pages} >= {"README.md", "exactness.md", "benchmarks.md", "design.md"}
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text):
            if "://" in target:
                continue
            path = page.parent / target if target else page
            assert path.exists(), f"{page.name}: broken link {target}"
            if anchor and path.suffix == ".md":
                assert anchor in _anchors(path), f"{page.name}: no heading for {target}#{anchor}"
