"""The docs match the code: the generated configuration page is current, every config field is
described, and every link of the README and the docs pages leads to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from serve_app import configdoc

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Variables the tests and the benchmarks read, not the service (so not in Settings).
TEST_ONLY_ENV = {
    "SOUL_TEST_POSTGRES_URL",
    "SOUL_TEST_STRICT",
    "SOUL_FUZZ_EXAMPLES",
    "SOUL_FUZZ_SEED",
}


def test_every_config_field_has_a_description() -> None:
    assert configdoc.undescribed() == []


def test_configuration_page_is_current() -> None:
    assert configdoc.PAGE.read_text(encoding="utf-8") == configdoc.render(), (
        "docs/configuration.md is stale: run `soul docs config`"
    )


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings."""
    headings = re.findall(r"^#+ (.*)$", page.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_links_lead_to_files_and_headings_that_exist(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in anchors(linked)
        ):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_environment_variables_named_are_settings(page: Path) -> None:
    known = {
        configdoc.env_name(model, name)
        for model in configdoc.ENVIRONMENT
        for name in model.model_fields
    }
    named = set(re.findall(r"\bSOUL_[A-Z0-9_]*[A-Z0-9]\b", page.read_text(encoding="utf-8")))
    assert named - known - TEST_ONLY_ENV == set()


def test_readme_is_a_quick_start() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert "make serve" in readme and "make test" in readme
