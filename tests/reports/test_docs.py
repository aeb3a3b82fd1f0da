"""The manual's figures are generated from results/: a committed page that drifts from its files fails here."""

import json
import re
import shutil
from pathlib import Path

import pytest

from dynlen.reports import docs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The pages and the result files they are generated from, in a folder the test may change."""
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "results", repo / "results")
    shutil.copytree(ROOT / "docs", repo / "docs")
    shutil.copy(ROOT / "README.md", repo / "README.md")
    return repo


def test_committed_pages_match_the_result_files():
    assert docs.stale(ROOT) == [], "run `make docs` and commit the pages it rewrites"


def test_a_changed_figure_in_a_run_makes_the_readme_and_results_page_stale(copy, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(copy, repo)
    frontier = repo / "results" / "reference" / "frontier.csv"
    text = frontier.read_text()
    # the keep-all row's held-out F1 is the first figure of the headline's first row
    changed = text.replace("79.74593940967203", "79.94593940967203", 1)
    assert changed != text
    frontier.write_text(changed)
    run = repo / "results" / "reference" / "run.json"
    record = json.loads(run.read_text())
    record["keep_all_heldout_f1"] = 79.94593940967203
    run.write_text(json.dumps(record))
    assert set(docs.stale(repo)) == {repo / "README.md", repo / "docs" / "results.md"}
    assert docs.main(["--repo", str(repo), "--check"]) == 1
    assert docs.main(["--repo", str(repo)]) == 0
    assert docs.stale(repo) == []
    assert "| 79.95 " in (repo / "README.md").read_text()


def test_a_changed_retention_figure_makes_the_results_page_stale(copy, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(copy, repo)
    path = repo / "results" / "retention" / "retention.json"
    records = json.loads(path.read_text())
    records[1]["f1_delta"] += 0.5
    path.write_text(json.dumps(records))
    assert docs.stale(repo) == [repo / "docs" / "results.md"]


def test_a_new_result_folder_is_indexed_and_tabulated(copy, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(copy, repo)
    folder = repo / "results" / "bench-new"
    folder.mkdir()
    (folder / "result.json").write_text(
        json.dumps(
            {
                "benchmark": "evaluator_throughput",
                "command": "python benchmarks/evaluator_throughput.py --out results/bench-new",
                "commit": "0" * 40,
                "machine": "x86_64, 2 cores",
                "date": "2026-12-07 12:00 UTC",
                "figures": {"throughput_ratio": 4.79},
            }
        )
    )
    assert set(docs.stale(repo)) == {repo / "docs" / "results.md", repo / "results" / "README.md"}
    page = docs.results_page(repo / "results")
    assert "`results/bench-new`" in page and "throughput_ratio 4.79" in page


def test_readme_is_short_with_at_most_six_generated_headline_rows_and_no_goal_words():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    block = readme.split(docs.HEADLINE_START)[1].split(docs.HEADLINE_END)[0]
    rows = [line for line in block.strip().splitlines() if line.startswith("|")][2:]
    assert 1 <= len(rows) <= 6 and len(rows) == len(docs.HEADLINE)
    prose = readme.replace(block, "")
    for word in ("target", "stretch", "not met", "sup05", "art44"):
        assert word not in prose.lower(), word
    assert not re.search(r"\b[0-9a-f]{7,40}\b", prose), "no commit hashes in the prose"


def test_layout_names_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout")[1]
    paths = re.findall(r"`((?:dynlen|engine|bench|search|reports|cli)/[\w/<>.]*)`", layout)
    assert len(paths) >= 12
    for path in paths:
        if "<" not in path:
            assert (ROOT / path).exists(), path
