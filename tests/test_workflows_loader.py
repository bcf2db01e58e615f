"""Workflow YAML loading: every kind of mistake is reported at the exact line."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from mailticket.types import Classification
from mailticket.workflows import registry
from mailticket.workflows.loader import (
    DEFAULT_PATH,
    WorkflowIssue,
    WorkflowLoadError,
    load_workflows,
)
from mailticket.workflows.registry import ActionContext, ActionParams


class EchoParams(ActionParams):
    count: int
    label: str = "x"


@registry.action("test_loader_echo", EchoParams)
def _echo(ctx: ActionContext, params: EchoParams) -> dict[str, Any]:
    return {"count": params.count}


@registry.action("test_loader_noop")
def _noop(ctx: ActionContext, params: ActionParams) -> dict[str, Any]:
    return {}


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def issues(path: Path) -> list[tuple[int, str]]:
    with pytest.raises(WorkflowLoadError) as info:
        load_workflows(path)
    return [(issue.line, issue.reason) for issue in info.value.issues]


def only_issue(path: Path) -> tuple[int, str]:
    found = issues(path)
    assert len(found) == 1, found
    return found[0]


GOOD = """
workflows:
  - name: Support Email → Ticket
    classification_trigger: support_request
    confidence_threshold: 0.7
    workflow_steps:
      - action: test_loader_echo
        params: {count: 5}
"""


def test_good_file_loads(tmp_path: Path) -> None:
    ws = load_workflows(write(tmp_path, GOOD))
    (wf,) = ws.workflows
    assert wf.name == "Support Email → Ticket"
    assert wf.triggers == ("support_request",) and wf.confidence_threshold == 0.7
    assert wf.stop and wf.enabled and wf.line == 2
    (step,) = wf.steps
    assert step.action == "test_loader_echo" and step.line == 6
    assert isinstance(step.params, EchoParams) and step.params.count == 5


def test_yaml_syntax_error_points_at_the_mark(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        workflows:
          - name: a
            classification_trigger: any
           workflow_steps: [
        """,
    )
    line, reason = only_issue(path)
    assert line == 4 and reason.startswith("YAML syntax error")


def test_control_character_is_a_located_error_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("confidence_threshold", "confidence\x07threshold"))
    line, reason = only_issue(path)
    assert line == 4 and "U+0007 is not allowed" in reason


def test_yaml_unclosed_flow_sequence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        workflows:
          - name: a
            classification_trigger: [support_request, bulk
            workflow_steps:
              - action: test_loader_noop
        """,
    )
    line, reason = only_issue(path)
    assert reason.startswith("YAML syntax error") and line in (4, 5)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "settings:\n  x: 1\n")
    assert only_issue(path) == (8, "unknown top-level key 'settings' (expected: workflows)")


def test_missing_top_level_workflows(tmp_path: Path) -> None:
    path = write(tmp_path, "flows:\n  - name: a\n")
    assert issues(path) == [
        (1, "unknown top-level key 'flows' (expected: workflows)"),
        (1, "missing top-level key 'workflows'"),
    ]


def test_unknown_workflow_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD.replace("    confidence_threshold", "    trigger: x\n    confidence_threshold"),
    )
    line, reason = only_issue(path)
    assert line == 4
    assert reason.startswith("unknown key 'trigger' (allowed: name, ")


def test_missing_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        workflows:
          - name: fine
            classification_trigger: any
            workflow_steps: [{action: test_loader_noop}]
          - classification_trigger: any
            workflow_steps: [{action: test_loader_noop}]
        """,
    )
    assert only_issue(path) == (5, "missing required key 'name'")


def test_unquoted_yaml_boolean_name_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("name: Support Email → Ticket", "name: off"))
    line, reason = only_issue(path)
    assert line == 2 and "(got False)" in reason and "quote" in reason


def test_blank_name(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("name: Support Email → Ticket", "name: '  '"))
    line, reason = only_issue(path)
    assert line == 2 and "blank" in reason


def test_duplicate_name_reports_the_second(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        workflows:
          - name: twice
            classification_trigger: any
            workflow_steps: [{action: test_loader_noop}]
          - name: other
            classification_trigger: any
            workflow_steps: [{action: test_loader_noop}]
          - name: twice
            classification_trigger: bulk
            workflow_steps: [{action: test_loader_noop}]
        """,
    )
    assert only_issue(path) == (
        8,
        f"duplicate workflow name 'twice' (first defined at {path}:2)",
    )


def test_unknown_action_lists_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("action: test_loader_echo", "action: create_tiket"))
    line, reason = only_issue(path)
    assert line == 6
    assert reason.startswith("unknown action 'create_tiket' (known: ")
    assert "test_loader_echo" in reason and "test_loader_noop" in reason


def test_unknown_param(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD.replace("params: {count: 5}", "params:\n          count: 5\n          colour: red"),
    )
    assert only_issue(path) == (
        9,
        "test_loader_echo: unknown param 'colour' (allowed: count, label)",
    )


def test_param_on_an_action_without_params(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD.replace("action: test_loader_echo", "action: test_loader_noop"),
    )
    assert only_issue(path) == (
        7,
        "test_loader_noop: unknown param 'count' (test_loader_noop takes no params)",
    )


def test_wrong_param_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD.replace("params: {count: 5}", "params:\n          label: ok\n          count: five"),
    )
    line, reason = only_issue(path)
    assert line == 9
    assert reason.startswith("test_loader_echo: count: Input should be a valid integer")
    assert reason.endswith("(got 'five')")


def test_missing_required_param_points_at_the_step(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("        params: {count: 5}\n", ""))
    assert only_issue(path) == (6, "test_loader_echo: missing required param 'count'")


def test_value_on_the_line_after_its_key(tmp_path: Path) -> None:
    path = write(
        tmp_path, GOOD.replace("params: {count: 5}", "params:\n          count:\n            nine")
    )
    line, _reason = only_issue(path)
    assert line == 9


@pytest.mark.parametrize("value", ["1.5", "-0.1", "high"])
def test_bad_confidence(tmp_path: Path, value: str) -> None:
    path = write(
        tmp_path, GOOD.replace("confidence_threshold: 0.7", f"confidence_threshold: {value}")
    )
    line, reason = only_issue(path)
    assert line == 4 and reason.startswith("confidence_threshold: ")


@pytest.mark.parametrize("steps", ["[]", "", "null"])
def test_empty_workflow_steps(tmp_path: Path, steps: str) -> None:
    path = write(
        tmp_path,
        f"""
        workflows:
          - name: nothing to do
            classification_trigger: any
            workflow_steps: {steps}
        """,
    )
    line, reason = only_issue(path)
    assert line == 4 and reason.startswith("workflow_steps")


def test_bad_step_shape(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        workflows:
          - name: a
            classification_trigger: any
            workflow_steps:
              - create_ticket
              - action: test_loader_noop
                param: {}
              - params: {}
        """,
    )
    assert issues(path) == [
        (5, "each step must be a mapping like `- action: NAME`"),
        (7, "unknown key 'param' (allowed: action, params, on_error)"),
        (8, "missing required key 'action'"),
    ]


@pytest.mark.parametrize(
    ("trigger", "words"),
    [
        ("5", "must be a label"),
        ("{label: spam}", "must be a label"),
        ("[]", "must be a label"),
        ("[spam, 3]", "non-empty string"),
        ("[any, spam]", "list it alone"),
        ("''", "non-empty string"),
    ],
)
def test_bad_trigger(tmp_path: Path, trigger: str, words: str) -> None:
    path = write(
        tmp_path,
        GOOD.replace(
            "classification_trigger: support_request", f"classification_trigger: {trigger}"
        ),
    )
    line, reason = only_issue(path)
    assert line == 3 and reason.startswith("classification_trigger: ") and words in reason


def test_on_error(tmp_path: Path) -> None:
    ws = load_workflows(
        write(tmp_path, GOOD + "      - action: test_loader_noop\n        on_error: continue\n")
    )
    assert [step.continue_on_error for step in ws.workflows[0].steps] == [False, True]
    path = write(tmp_path, GOOD + "      - action: test_loader_noop\n        on_error: ignore\n")
    line, reason = only_issue(path)
    assert line == 9 and reason.startswith("on_error: Input should be 'fail' or 'continue'")


def test_missing_trigger(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    classification_trigger: support_request\n", ""))
    line, reason = only_issue(path)
    assert line == 2
    assert reason.startswith("missing required key 'classification_trigger' (or 'event_trigger'")


def test_duplicate_yaml_key_is_not_silently_dropped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD.replace(
            "    confidence_threshold: 0.7",
            "    confidence_threshold: 0.7\n    confidence_threshold: 0.1",
        ),
    )
    assert only_issue(path) == (5, "duplicate key 'confidence_threshold'")


def test_all_problems_reported_at_once_in_line_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        workflows:
          - name: one
            classification_trigger: any
            confidence_threshold: 2
            workflow_steps:
              - action: nope
          - name: two
            classification_trigger: any
            workflow_steps:
              - action: test_loader_echo
                params: {count: [1]}
        """,
    )
    assert [line for line, _ in issues(path)] == [4, 6, 11]


def test_error_text_is_file_line_reason(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("confidence_threshold: 0.7", "confidence_threshold: 7"))
    with pytest.raises(WorkflowLoadError) as info:
        load_workflows(path)
    assert (
        str(info.value)
        == f"{path}:4: confidence_threshold: Input should be less than or equal to 1 (got 7)"
    )
    assert str(WorkflowIssue("f.yaml", 3, "bad")) == "f.yaml:3: bad"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("", 1, "file is empty"),
        ("# only a comment\n", 1, "file is empty"),
        ("just a string\n", 1, "expected a list of workflows"),
        ("workflows: {name: a}\n", 1, "expected a list of workflows"),
        ("workflows:\n  - just a name\n", 2, "each workflow must be a mapping"),
        ("a: 1\n---\nb: 2\n", 2, "YAML syntax error"),
    ],
)
def test_bad_document_shapes(tmp_path: Path, text: str, line: int, words: str) -> None:
    got_line, reason = only_issue(write(tmp_path, text))
    assert got_line == line and words in reason


def test_safe_loader_only(tmp_path: Path) -> None:
    path = write(tmp_path, "workflows: !!python/object/apply:os.system ['true']\n")
    line, reason = only_issue(path)
    assert line == 1 and "YAML" in reason


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"workflows:\n  - name: caf\xe9\n")
    line, reason = only_issue(path)
    assert line == 1 and "UTF-8" in reason


def test_empty_workflows_list_is_allowed(tmp_path: Path) -> None:
    assert len(load_workflows(write(tmp_path, "workflows: []\n"))) == 0
    assert len(load_workflows(write(tmp_path, "workflows:\n", name="b.yaml"))) == 0


def test_bare_list_at_top_level(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        - name: a
          classification_trigger: any
          workflow_steps: [{action: test_loader_noop}]
        - name: b
          classification_trigger: [spam, bulk]
          workflow_steps: [{action: test_loader_noop}]
        """,
    )
    assert [wf.name for wf in load_workflows(path)] == ["a", "b"]


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    assert issues(tmp_path / "nope.yaml") == [(0, "no such file or folder")]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.txt").write_text("not a workflow")
    assert issues(empty) == [(0, "folder holds no *.yaml or *.yml files")]


def _wf(name: str, trigger: str = "any", extra: str = "") -> str:
    return (
        f"  - name: {name}\n    classification_trigger: {trigger}\n{extra}"
        "    workflow_steps: [{action: test_loader_noop}]\n"
    )


def test_folder_loads_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "20-second.yml").write_text("workflows:\n" + _wf("c") + _wf("d"))
    (folder / "10-first.yaml").write_text("workflows:\n" + _wf("a") + _wf("b"))
    (folder / "notes.txt").write_text("ignored")
    (folder / ".hidden.yaml").write_text("this: is not loaded: at all")
    ws = load_workflows(folder)
    assert [wf.name for wf in ws] == ["a", "b", "c", "d"]
    assert [wf.order for wf in ws] == [1, 2, 3, 4]
    assert ws.sources == (str(folder / "10-first.yaml"), str(folder / "20-second.yml"))


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    first = folder / "a.yaml"
    second = folder / "b.yaml"
    first.write_text("workflows:\n" + _wf("x") + _wf("shared"))
    second.write_text("workflows:\n" + _wf("y") + _wf("shared"))
    with pytest.raises(WorkflowLoadError) as info:
        load_workflows(folder)
    assert info.value.issues == [
        WorkflowIssue(
            str(second), 5, f"duplicate workflow name 'shared' (first defined at {first}:5)"
        )
    ]


def test_errors_in_several_files_keep_file_order(tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "a.yaml").write_text(
        "workflows:\n" + _wf("ok") + _wf("bad", extra="    stopp: true\n")
    )
    (folder / "b.yaml").write_text("workflows: [\n")
    with pytest.raises(WorkflowLoadError) as info:
        load_workflows(folder)
    assert [(Path(i.file).name, i.line) for i in info.value.issues] == [
        ("a.yaml", 7),
        ("b.yaml", 2),
    ]


def test_order_enabled_and_matching(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "workflows:\n"
        + _wf("late", "support_request", "    order: 50\n")
        + _wf("catch-all", "any", "    stop: false\n")
        + _wf("paused", "support_request", "    enabled: false\n")
        + _wf(
            "confident", "[support_request, bulk]", "    confidence_threshold: 0.8\n    order: 0\n"
        ),
    )
    ws = load_workflows(path)
    assert [wf.name for wf in ws] == ["confident", "catch-all", "late"]
    assert [wf.name for wf in ws.disabled] == ["paused"]
    assert ws.get("paused") is not None and not ws.get("paused").enabled  # type: ignore[union-attr]

    sure = Classification("support_request", 0.9)
    unsure = Classification("support_request", 0.5)
    spam = Classification("spam", 1.0)
    assert [wf.name for wf in ws.matching(sure)] == ["confident", "catch-all", "late"]
    assert [wf.name for wf in ws.matching(unsure)] == ["catch-all", "late"]
    assert [wf.name for wf in ws.below_threshold(unsure)] == ["confident"]
    assert [wf.name for wf in ws.triggered(unsure)] == ["confident", "catch-all", "late"]
    assert [wf.name for wf in ws.matching(spam)] == ["catch-all"]
    assert [wf.name for wf in ws.matching(Classification("bulk", 0.8))] == [
        "confident",
        "catch-all",
    ]
    assert not ws.get("catch-all").stop  # type: ignore[union-attr]


def test_shipped_default_loads() -> None:
    ws = load_workflows(None)
    assert ws.sources == (str(DEFAULT_PATH),)
    support = ws.matching(Classification("support_request", 0.3))
    assert support and support[0].steps[0].action == "create_ticket"
    for label in ("auto_reply", "bounce"):
        for wf in ws.matching(Classification(label, 1.0)):
            assert all(s.action not in ("create_ticket", "link_email_to_ticket") for s in wf.steps)
    for label in ("spam", "bulk"):
        assert [s.action for wf in ws.matching(Classification(label, 1.0)) for s in wf.steps] == [
            "ignore"
        ]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + textwrap.dedent(GOOD).lstrip("\n").encode("utf-8"))
    assert [wf.name for wf in load_workflows(path)] == ["Support Email → Ticket"]
