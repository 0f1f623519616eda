"""Golden tests of ``decisionloop init`` and ``decisionloop validate`` on broken example projects.

Each project is a fresh copy of the example (``init_project``) with mistakes written into it. The
expected ``file:line:column`` of every problem is computed from the file as written, never copied
from the tool's output, and the exact shape of each message class is asserted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import Result

from decisionloop.engine.engine import compile_project
from decisionloop.errors import DefinitionError
from decisionloop.project.loader import load_project
from decisionloop.project.scaffold import EXAMPLE, init_project
from tests.conftest import cli, plain

OK = re.compile(
    r"^ok (?P<dir>.+): (?P<types>\d+) event types, (?P<features>\d+) features, "
    r"(?P<rules>\d+) rules, (?P<strategies>\d+) strategies, (?P<monitoring>\d+) monitoring rules "
    r"\(fingerprint (?P<fp>[0-9a-f]{12})\)$"
)


pytestmark = pytest.mark.usefixtures("isolated")


@dataclass
class Block:
    """One reported problem: its `where: reason` line and the highlight lines under it."""

    line: str
    highlight: list[str]

    @property
    def label(self) -> str:  # "rule syntax_error", "feature card_online_count"
        return self.line.split(": ", 1)[0].split(" ", 1)[1]


def blocks(result: Result) -> list[Block]:
    found: list[Block] = []
    for line in plain(result.stderr).splitlines()[1:]:
        if line.startswith("  - "):
            found.append(Block(line[4:], []))
        else:
            assert line.startswith("      "), line
            found[-1].highlight.append(line[6:])
    return found


class Project:
    """A broken copy of the example project, edited in place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        init_project(root)

    def write(self, rel: str, text: str) -> None:
        (self.root / rel).write_text(text)

    def edit(self, rel: str, old: str, new: str) -> None:
        file = self.root / rel
        text = file.read_text()
        assert text.count(old) == 1, f"{old!r} in {rel}"
        file.write_text(text.replace(old, new))

    def pos(self, rel: str, needle: str, after: str = "") -> tuple[int, int]:
        """1-based line and column of ``needle`` (the first one after the text ``after``)."""
        text = (self.root / rel).read_text()
        offset = text.index(needle, text.index(after) if after else 0)
        line = text.count("\n", 0, offset) + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        return line, column

    def at(self, rel: str, needle: str, after: str = "") -> str:
        """``rel:line:column`` of ``needle``, as problems print it."""
        line, column = self.pos(rel, needle, after)
        return f"{rel}:{line}:{column}"

    def validate(self) -> Result:
        return cli("validate", self.root)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "bank")


# -- init and the untouched example -------------------------------------------------------------
def test_untouched_example_validates(tmp_path: Path) -> None:
    root = tmp_path / "bank"
    created = cli("init", root)
    assert created.exit_code == 0, created.output
    files = sorted(p for p in EXAMPLE.rglob("*.yaml"))
    assert plain(created.stdout).splitlines() == [
        f"created {len(files)} files in {root}",
        f"next: decisionloop validate {root}",
    ]

    result = cli("validate", root)

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    found = OK.match(plain(result.stdout).strip())
    assert found, result.stdout
    # The counts, taken from the YAML files independently of the loader.
    docs = {
        p.relative_to(root).as_posix(): yaml.safe_load(p.read_text()) for p in root.rglob("*.yaml")
    }
    event_types = sum(len(d["event_types"]) for k, d in docs.items() if k.startswith("events/"))
    features = sum(
        len(f["windows"])
        for k, d in docs.items()
        if k.startswith("features/")
        for f in d["features"]
    )
    strategies = [d for k, d in docs.items() if k.startswith("strategies/")]
    rule_sets = {d["name"]: d for k, d in docs.items() if k.startswith("rules/")}
    rules = sum(
        1
        for s in strategies
        for name in s["rule_sets"]
        for r in rule_sets[name]["rules"]
        if r.get("status", "active") not in ("draft", "retired")
    )
    assert found["dir"] == str(root)
    assert (int(found["types"]), int(found["features"])) == (event_types, features)
    assert (int(found["rules"]), int(found["strategies"])) == (rules, len(strategies))
    monitoring = sum(len(d["rules"]) for k, d in docs.items() if k.startswith("monitoring/"))
    assert int(found["monitoring"]) == monitoring
    # The fingerprint identifies the definitions: stable, and changed by any edit.
    assert fingerprint(root) == found["fp"]
    (root / "project.yaml").write_text((root / "project.yaml").read_text() + "# edited\n")
    assert fingerprint(root) != found["fp"]


def fingerprint(root: Path) -> str:
    found = OK.match(plain(cli("validate", root).stdout).strip())
    assert found
    return found["fp"]


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    root = tmp_path / "bank"
    assert cli("init", root).exit_code == 0
    edited = "name: my_bank\n"
    (root / "project.yaml").write_text(edited)

    refused = cli("init", root)

    assert refused.exit_code == 2
    assert plain(refused.stderr).splitlines() == [
        "error DL100: a project already exists here",
        f"  - {root / 'project.yaml'}: exists; pass --force to overwrite",
    ]
    assert (root / "project.yaml").read_text() == edited

    forced = cli("init", root, "--force")

    assert forced.exit_code == 0, forced.output
    assert (root / "project.yaml").read_text() == (EXAMPLE / "project.yaml").read_text()


# -- definition errors: all at once, each located -----------------------------------------------
def test_definition_errors_in_several_files_are_all_reported_at_once(project: Project) -> None:
    # Unknown key.
    project.edit(
        "project.yaml", "fraud controls.\n", "fraud controls.\nowner_team: fraud-analytics\n"
    )
    # YAML syntax error: text after a flow mapping on the same line.
    project.write(
        "events/payments.yaml",
        "event_types:\n  card_swap:\n    fields:\n      reason: {type: string} extra\n",
    )
    # Missing required key: a rule without `when`.
    project.write(
        "rules/limits.yaml",
        "name: limits\nrules:\n  - id: large_amount\n    description: Above the hard limit\n"
        "    outcome: review\n",
    )
    # A feature on an unknown entity, and a strategy naming an unknown rule set.
    project.write(
        "features/devices.yaml",
        "features:\n  - name: new_devices\n    entity: custmer\n    aggregation: count\n"
        "    windows: [24h]\n    event_types: [device_bind]\n",
    )
    project.edit("strategies/transaction.yaml", "rule_sets: [fraud]", "rule_sets: [fruad]")

    result = project.validate()

    assert result.exit_code == 2
    assert result.stdout == ""
    at = project.at
    assert plain(result.stderr).splitlines() == [
        f"error DL200: 5 problem(s) in {project.root}",
        # Sorted by file, then line and column.
        f"  - {at('events/payments.yaml', 'extra')}: YAML syntax: expected <block end>, "
        "but found '<scalar>'",
        f"  - {at('features/devices.yaml', 'custmer')} features.0.entity: "
        "unknown entity 'custmer'; did you mean 'customer'?",
        # Unknown keys are located at their value (positions are recorded per value).
        f"  - {at('project.yaml', 'fraud-analytics', 'owner_team')} owner_team: unknown key",
        # A missing key is located at the mapping that lacks it: the rule.
        f"  - {at('rules/limits.yaml', 'id: large_amount')} rules.0.when: required key is missing",
        f"  - {at('strategies/transaction.yaml', 'fruad')} rule_sets.0: "
        "unknown rule set 'fruad'; did you mean 'fraud'?",
    ]


def test_definition_errors_carry_file_line_and_column_in_the_api(project: Project) -> None:
    project.edit("project.yaml", "fraud controls.\n", "fraud controls.\nowner_team: x\n")
    project.edit("entities.yaml", "  payee: {key: payee_id", "  payee: {kee: payee_id")

    with pytest.raises(DefinitionError) as caught:
        load_project(project.root)

    assert caught.value.code == "DL200"
    located = [(p.file, p.line, p.column, p.reason) for p in caught.value.problems]
    unknown = project.pos("entities.yaml", "payee_id", "kee")  # the value of `kee`
    missing = project.pos("entities.yaml", "{kee")  # the mapping that lacks `key`
    assert ("entities.yaml", *unknown, "unknown key") in located
    assert ("entities.yaml", *missing, "required key is missing") in located
    for p in caught.value.problems:
        assert p.where.startswith(f"{p.file}:{p.line}:{p.column} ")


# -- expression errors: all at once, each located with a caret ----------------------------------
EXTRA_RULES = """\
name: extra
description: Rules that do not compile, one per kind of mistake.
rules:
  - id: syntax_error
    when: amount > 1000 and channel = 'atm')
  - id: misspelt_field
    when: ammount > 5
  - id: subquery
    when: (select max(amount) from events) < amount
  - id: three_part_name
    when: "a.customer.debit_count_1h > 1"
  - id: unknown_function
    when: risk_score(amount) > 0.5
"""


def caret_under(source_line: str, needle: str, length: int | None = None) -> str:
    return " " * source_line.index(needle) + "^" * (len(needle) if length is None else length)


def test_expression_errors_in_several_files_are_all_reported_at_once(project: Project) -> None:
    project.edit(
        "features/velocity.yaml",
        "filter: channel = 'card_online'",
        "filter: chanel = 'card_online'",
    )
    project.edit("rules/fraud.yaml", "customer.debit_count_1h >= 8", "customer.debit_cnt_1h >= 8")
    project.write("rules/extra.yaml", EXTRA_RULES)
    project.edit("strategies/transaction.yaml", "rule_sets: [fraud]", "rule_sets: [fraud, extra]")

    result = project.validate()

    assert result.exit_code == 2
    found = blocks(result)
    assert plain(result.stderr).splitlines()[0] == (
        f"error DL200: {len(found)} problem(s) in {project.root}"
    )
    first: dict[str, Block] = {}
    for block in found:
        first.setdefault(block.label, block)
    # Every broken definition, from three files, in one run; nothing about the sound ones.
    assert list(first) == [  # sorted by file, then line
        "feature card_online_count",
        "rule syntax_error",
        "rule misspelt_field",
        "rule subquery",
        "rule three_part_name",
        "rule unknown_function",
        "rule velocity_spike",
    ]
    at = project.at
    filter_text = "chanel = 'card_online'"
    expected = {
        "feature card_online_count": (
            f"{at('features/velocity.yaml', 'chanel')} feature card_online_count: "
            "unknown name 'chanel'; did you mean channel?",
            [filter_text, caret_under(filter_text, "chanel")],
        ),
        # A qualified name is located at its start and underlined whole.
        "rule velocity_spike": (
            f"{at('rules/fraud.yaml', 'customer.debit_cnt_1h')} rule velocity_spike: unknown name "
            "'customer.debit_cnt_1h'; did you mean customer.debit_count_1h, "
            "customer.debit_count_24h, customer.debit_sum_24h?",
            [
                "direction = 'debit' and customer.debit_cnt_1h >= 8",
                caret_under(
                    "direction = 'debit' and customer.debit_cnt_1h >= 8", "customer.debit_cnt_1h"
                ),
            ],
        ),
        "rule syntax_error": (
            f"{at('rules/extra.yaml', ')', 'syntax_error')} rule syntax_error: unexpected ')'",
            [
                "amount > 1000 and channel = 'atm')",
                caret_under("amount > 1000 and channel = 'atm')", ")"),
            ],
        ),
        "rule misspelt_field": (
            f"{at('rules/extra.yaml', 'ammount')} rule misspelt_field: "
            "unknown name 'ammount'; did you mean amount?",
            ["ammount > 5", "^^^^^^^"],
        ),
        "rule subquery": (
            f"{at('rules/extra.yaml', '(select')} rule subquery: "
            "a subquery is not allowed in a rule expression",
            [
                "(select max(amount) from events) < amount",
                caret_under(
                    "(select max(amount) from events) < amount", "(select max(amount) from events)"
                ),
            ],
        ),
        # Quoted scalar: the column counts the opening quote.
        "rule three_part_name": (
            f"{at('rules/extra.yaml', 'a.customer', 'three_part_name')} rule three_part_name: "
            "'a.customer.debit_count_1h': names have at most one dot (entity.feature)",
            [
                "a.customer.debit_count_1h > 1",
                caret_under("a.customer.debit_count_1h > 1", "a.customer.debit_count_1h"),
            ],
        ),
        "rule unknown_function": (
            f"{at('rules/extra.yaml', 'risk_score')} rule unknown_function: "
            "unknown function 'risk_score' (custom functions: none)",
            ["risk_score(amount) > 0.5", None],  # the caret: checked below
        ),
    }
    for label, (line, highlight) in expected.items():
        block = first[label]
        assert block.line == line, label
        assert block.highlight[0] == highlight[0], label
        if highlight[1] is not None:
            assert block.highlight[1] == highlight[1], label
    assert first["rule unknown_function"].highlight[1].startswith("^")
    # Every problem of the subquery rule is a refused construct at the same place.
    for block in found:
        if block.label == "rule subquery":
            assert block.line.startswith(f"{at('rules/extra.yaml', '(select')} rule subquery: ")
            assert block.line.endswith(" is not allowed in a rule expression")


def test_expression_errors_carry_file_line_column_and_highlight_in_the_api(
    project: Project,
) -> None:
    project.write("rules/extra.yaml", EXTRA_RULES)
    project.edit("strategies/transaction.yaml", "rule_sets: [fraud]", "rule_sets: [fraud, extra]")

    with pytest.raises(DefinitionError) as caught:
        compile_project(project.root)

    problems = caught.value.problems
    assert {p.file for p in problems} == {"rules/extra.yaml"}
    for p in problems:
        assert p.where.startswith(f"{p.file}:{p.line}:{p.column} rule ")
        assert p.highlight is not None
        assert len(p.highlight.splitlines()) == 2
    misspelt = next(p for p in problems if "'ammount'" in p.reason)
    assert (misspelt.line, misspelt.column) == project.pos("rules/extra.yaml", "ammount")
    assert misspelt.highlight == "ammount > 5\n^^^^^^^"


# -- locations of errors in block scalars and refused constructs --------------------------------
def test_load_errors_and_expression_errors_are_reported_in_one_run(project: Project) -> None:
    project.edit("project.yaml", "fraud controls.\n", "fraud controls.\nowner_team: x\n")
    project.write("rules/extra.yaml", EXTRA_RULES)
    project.edit("strategies/transaction.yaml", "rule_sets: [fraud]", "rule_sets: [fraud, extra]")

    result = project.validate()

    assert result.exit_code == 2
    text = plain(result.stderr)
    assert f"{project.at('project.yaml', 'x', 'owner_team')} owner_team: unknown key" in text
    assert f"{project.at('rules/extra.yaml', 'ammount')} rule misspelt_field: " in text


def test_errors_in_block_scalar_rules_point_at_the_file_column(project: Project) -> None:
    project.edit(
        "rules/fraud.yaml",
        "customer.card_online_count_10m >= 4",
        "customer.card_online_cnt_10m >= 4",
    )

    result = project.validate()

    assert result.exit_code == 2
    (block,) = blocks(result)
    assert block.line.startswith(
        f"{project.at('rules/fraud.yaml', 'customer.card_online_cnt_10m')} "
        "rule card_testing_burst: "
    )


@pytest.mark.parametrize(
    ("when", "construct"),
    [
        ("amount > (select max(amount) from events)", "(select max(amount) from events)"),
        ("amount > 1 and risk_score(amount) > 0.5", "risk_score"),
    ],
    ids=["subquery", "unknown-function"],
)
def test_refused_constructs_are_located_at_the_construct(
    project: Project, when: str, construct: str
) -> None:
    project.write("rules/extra.yaml", f"name: extra\nrules:\n  - id: odd\n    when: {when}\n")
    project.edit("strategies/transaction.yaml", "rule_sets: [fraud]", "rule_sets: [fraud, extra]")

    result = project.validate()

    assert result.exit_code == 2
    (block,) = blocks(result)  # one problem per construct, not one per node inside it
    line, column = (int(n) for n in block.line.split(" ", 1)[0].split(":")[1:])
    construct_line, start = project.pos("rules/extra.yaml", construct)
    assert line == construct_line
    assert start <= column < start + len(construct)
    text_start = project.pos("rules/extra.yaml", when)[1]
    caret = block.highlight[1]
    assert caret.lstrip().startswith("^")
    assert len(caret) - len(caret.lstrip()) == column - text_start
    assert len(caret) <= len(block.highlight[0])
