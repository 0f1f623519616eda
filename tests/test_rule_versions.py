"""Ruleset versions: history, diffs, byte-exact rollback, author fallback, the CLI."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from decisionloop.errors import NotFoundError
from decisionloop.rules.versions import (
    RuleHistory,
    content_hash,
    read_rule_files,
    resolve_author,
    ruleset_version,
)
from tests.conftest import cli, plain
from tests.test_durability import free_port

RULES = "rules/fraud.yaml"


@pytest.fixture
def history(tmp_path: Path) -> RuleHistory:
    return RuleHistory.in_data_dir(tmp_path / "state")


def edit(project_dir: Path, old: str, new: str, path: str = RULES) -> None:
    file = project_dir / path
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new, 1))


def test_each_change_is_a_new_version_and_no_change_records_nothing(
    project_dir: Path, history: RuleHistory
) -> None:
    first = history.record(project_dir, "ann", "initial rules")
    assert first is not None
    assert history.record(project_dir, "ann", "same again") is None
    edit(project_dir, "score: 30", "score: 35")
    second = history.record(project_dir, "bob", "night transfers weigh more")
    assert second is not None
    versions = history.versions()
    assert [(v.id, v.author, v.message) for v in versions] == [
        ("v1", "ann", "initial rules"),
        ("v2", "bob", "night transfers weigh more"),
    ]
    assert versions[0].content_hash != versions[1].content_hash
    assert versions[1].content_hash == content_hash(read_rule_files(project_dir))
    assert versions[0].created_at <= versions[1].created_at
    assert history.files("v2") == read_rule_files(project_dir)
    assert set(history.files("v1")) == {RULES, "strategies/transaction.yaml"}


def test_stored_diff_and_diff_between_versions(project_dir: Path, history: RuleHistory) -> None:
    history.record(project_dir, "ann")
    edit(project_dir, "score: 30", "score: 35")
    edit(project_dir, "{score: 90, outcome: decline}", "{score: 95, outcome: decline}",
         "strategies/transaction.yaml")  # fmt: skip
    second = history.record(project_dir, "ann")
    assert second is not None
    expected_lines = [
        "--- v1/rules/fraud.yaml",
        "+++ v2/rules/fraud.yaml",
        "-    score: 30",
        "+    score: 35",
        "--- v1/strategies/transaction.yaml",
        "+++ v2/strategies/transaction.yaml",
        "-  - {score: 90, outcome: decline}",
        "+  - {score: 95, outcome: decline}",
    ]
    changed = [line for line in second.diff.splitlines() if line[:1] in "+-"]
    assert changed == expected_lines
    assert history.diff("v1", "v2") == second.diff
    reverse = history.diff(2, 1)
    assert "-    score: 35\n+    score: 30\n" in reverse
    # The first version's diff is every line added.
    first = history.get("v1")
    assert first.diff.startswith("--- /dev/null\n+++ v1/rules/fraud.yaml\n")


def test_diff_working_folder_shows_added_and_removed_files(
    project_dir: Path, history: RuleHistory
) -> None:
    history.record(project_dir, "ann")
    assert history.diff_working(project_dir) == ""
    (project_dir / "rules" / "extra.yaml").write_text("name: extra\nrules: []\n")
    text = history.diff_working(project_dir)
    assert "--- /dev/null\n+++ working/rules/extra.yaml\n" in text
    assert "+name: extra\n+rules: []\n" in text
    (project_dir / "rules" / "extra.yaml").unlink()
    (project_dir / RULES).unlink()
    assert "--- v1/rules/fraud.yaml\n+++ /dev/null\n" in history.diff_working(project_dir)


def test_rollback_restores_files_byte_for_byte_and_is_recorded(
    project_dir: Path, history: RuleHistory
) -> None:
    # Bytes a careless text round trip would change: CRLF, no final newline, non-ASCII.
    (project_dir / "rules" / "odd.yaml").write_bytes(b"# r\xc3\xa8gles\r\nname: odd\r\nrules: []")
    original = read_rule_files(project_dir)
    history.record(project_dir, "ann", "v1")
    edit(project_dir, "score: 30", "score: 35")
    (project_dir / "rules" / "odd.yaml").unlink()
    (project_dir / "rules" / "later.yaml").write_text("name: later\nrules: []\n")
    history.record(project_dir, "bob", "v2")

    rolled = history.rollback(project_dir, "v1", author="carol")

    assert rolled is not None
    assert read_rule_files(project_dir) == original
    assert not (project_dir / "rules" / "later.yaml").exists()
    assert (rolled.id, rolled.author, rolled.message) == ("v3", "carol", "rollback to v1")
    assert rolled.content_hash == history.get("v1").content_hash
    assert history.files("v3") == original
    assert ruleset_version(project_dir, history.path.parent) == "v3"


def test_rollback_keeps_unpublished_edits_as_a_version_first(
    project_dir: Path, history: RuleHistory
) -> None:
    history.record(project_dir, "ann")
    edit(project_dir, "score: 30", "score: 99")
    rolled = history.rollback(project_dir, 1, author="carol")
    assert rolled is not None
    messages = [v.message for v in history.versions()]
    assert messages[1:] == ["unpublished edits before rollback to v1", "rollback to v1"]
    assert b"score: 99" in history.files("v2")[RULES]


def test_versions_are_never_rewritten(project_dir: Path, history: RuleHistory) -> None:
    history.record(project_dir, "ann")
    with sqlite3.connect(history.path) as db:
        for statement in (
            "UPDATE versions SET author = 'mallory'",
            "DELETE FROM versions",
            "UPDATE blobs SET content = x'00'",
            "DELETE FROM files",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="never rewritten"):
                db.execute(statement)
    assert history.get("v1").author == "ann"


def test_unknown_versions_are_clear_errors(project_dir: Path, history: RuleHistory) -> None:
    with pytest.raises(NotFoundError) as empty:
        history.get("v1")
    assert "none recorded yet" in str(empty.value)
    history.record(project_dir, "ann")
    with pytest.raises(NotFoundError, match=r"no version v7 \(latest: v1\)"):
        history.files("v7")
    with pytest.raises(NotFoundError, match="versions look like v1"):
        history.get("latest")


def test_author_falls_back_to_git_then_to_the_os_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[user]\n\tname = Grace Git\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository config
    monkeypatch.setenv("LOGNAME", "os-user")
    assert resolve_author("  Ada  ", tmp_path) == "Ada"
    assert resolve_author(None, tmp_path) == "Grace Git"
    gitconfig.write_text("")
    assert resolve_author(None, tmp_path) == "os-user"
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert resolve_author("", tmp_path) == "os-user"


def test_ruleset_version_is_the_published_id_or_the_content_hash(
    project_dir: Path, history: RuleHistory
) -> None:
    data_dir = history.path.parent
    unpublished = ruleset_version(project_dir, data_dir)
    assert unpublished == content_hash(read_rule_files(project_dir))
    assert not history.path.exists()  # looking never creates the history
    history.record(project_dir, "ann")
    assert ruleset_version(project_dir, data_dir) == "v1"
    edit(project_dir, "score: 30", "score: 31")
    assert ruleset_version(project_dir, data_dir) == content_hash(read_rule_files(project_dir))


# -- the command line ----------------------------------------------------------------------------
@pytest.mark.usefixtures("isolated")
def test_cli_publish_history_diff_and_rollback(project_dir: Path, tmp_path: Path) -> None:
    where = ("--project", project_dir, "--data-dir", tmp_path / "state")
    published = cli("rules", "publish", "--author", "ann", "-m", "first", *where)
    assert published.exit_code == 0, published.output
    assert "published v1 by ann" in plain(published.output)
    edit(project_dir, "score: 30", "score: 35")

    working = plain(cli("rules", "diff", *where).output)
    assert "--- v1/rules/fraud.yaml\n+++ working/rules/fraud.yaml\n" in working
    assert "-    score: 30\n+    score: 35\n" in working

    assert cli("rules", "publish", "--author", "bob", "-m", "second", *where).exit_code == 0
    again = cli("rules", "publish", "--author", "bob", *where)
    assert "nothing to record: the rules equal the latest version v2" in plain(again.output)
    assert "-    score: 30\n+    score: 35\n" in plain(
        cli("rules", "diff", "v1", "v2", *where).output
    )

    rolled = cli("rules", "rollback", "v1", "--author", "carol", *where)
    assert rolled.exit_code == 0, rolled.output
    assert "rolled back v3 by carol" in plain(rolled.output)
    assert "score: 30" in (project_dir / RULES).read_text()

    listing = plain(cli("rules", "history", *where).output)
    for expected in ("v1", "ann", "first", "v2", "bob", "second", "v3", "carol", "rollback to v1"):
        assert expected in listing


@pytest.mark.usefixtures("isolated")
def test_cli_publish_refuses_an_invalid_project_with_every_problem(
    project_dir: Path, tmp_path: Path
) -> None:
    where = ("--project", project_dir, "--data-dir", tmp_path / "state")
    edit(project_dir, "amount > 1000", "amount > 'lots'")
    edit(
        project_dir,
        "rule_sets: [fraud]",
        "rule_sets: [fraud, missing]",
        "strategies/transaction.yaml",
    )
    result = cli("rules", "publish", "--author", "ann", *where)
    assert result.exit_code == 2
    output = plain(result.output)
    assert "2 problem(s)" in output
    assert "rules/fraud.yaml" in output
    assert "unknown rule set 'missing'" in output
    assert RuleHistory.in_data_dir(tmp_path / "state").versions() == []


@pytest.mark.usefixtures("isolated")
def test_cli_rollback_refuses_to_leave_an_invalid_project(
    project_dir: Path, tmp_path: Path
) -> None:
    where = ("--project", project_dir, "--data-dir", tmp_path / "state")
    assert cli("rules", "publish", "--author", "ann", *where).exit_code == 0
    # v1's rules read a feature that a later edit of the features removes.
    features = project_dir / "features" / "velocity.yaml"
    features.write_text(features.read_text().replace("name: payee_adds", "name: payee_additions"))
    edit(project_dir, "customer.payee_adds_24h >= 1", "true")
    edit(project_dir, "customer.payee_adds_24h >= 1", "true")
    assert cli("rules", "publish", "--author", "ann", *where).exit_code == 0
    before = read_rule_files(project_dir)
    result = cli("rules", "rollback", "v1", *where)
    assert result.exit_code == 2
    assert "invalid after this rollback" in plain(result.output)
    assert "payee_adds_24h" in plain(result.output)
    assert read_rule_files(project_dir) == before
    assert len(RuleHistory.in_data_dir(tmp_path / "state").versions()) == 2


@pytest.mark.usefixtures("isolated")
def test_cli_publish_reports_an_unreachable_service_after_recording(
    project_dir: Path, tmp_path: Path
) -> None:
    where = ("--project", project_dir, "--data-dir", tmp_path / "state")
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("rules", "publish", "--author", "ann", "--reload", url, *where)
    assert result.exit_code == 2
    assert "could not reach the service" in plain(result.output)
    assert [v.id for v in RuleHistory.in_data_dir(tmp_path / "state").versions()] == ["v1"]
