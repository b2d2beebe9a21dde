"""The README stays a front page: short, with the commands CI runs, linking the documentation site in docs/.

(The site itself is checked by `mkdocs build --strict` in .ci/run: broken links, anchors and API references.)"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_is_at_most_200_lines():
    assert len(README.splitlines()) <= 200, "README.md is the front page: move the detail into docs/"


def test_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install torch==2.13.0 && pip install -e ".[test,distributed]" && python -m pytest -q' in README
    assert "pip install -q torch==2.13.0" in ci and 'pip install -q -e ".[test,distributed]"' in ci
    assert "\npython -m pytest -q\n" in ci
    assert "mkdocs build --strict" in ci


def test_readme_links_the_docs_and_every_link_resolves():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert "docs/index.md" in local
    assert [link for link in local if not (ROOT / link).exists()] == []
