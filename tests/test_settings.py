import pytest

from mailticket.settings import ConfigError, Priority, SubjectMatchPolicy, load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "TICKET_DEFAULT_PRIORITY", "TICKET_TIMEZONE"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.ticket_enabled and s.ticket_email_integration and s.email_workflows_enabled
    assert not s.ticket_auto_assign
    assert s.ticket_default_priority is Priority.normal
    assert s.database_url == "sqlite:///mailticket.db"
    assert s.ticket_subject_match is SubjectMatchPolicy.any


def test_env_names_from_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKET_ENABLED", "false")
    monkeypatch.setenv("TICKET_AUTO_ASSIGN", "true")
    monkeypatch.setenv("TICKET_DEFAULT_ASSIGNEE_ID", "5")
    monkeypatch.setenv("TICKET_DEFAULT_PRIORITY", "high")
    monkeypatch.setenv("TICKET_TIMEZONE", "Europe/Copenhagen")
    s = load_settings(_env_file=None)
    assert not s.ticket_enabled
    assert s.ticket_default_assignee_id == 5
    assert s.ticket_default_priority is Priority.high
    assert s.tz.key == "Europe/Copenhagen"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TICKET_DEFAULT_PRIORITY", "urgent"),
        ("TICKET_TIMEZONE", "Mars/Olympus"),
        ("TICKET_ENABLED", "maybe"),
        ("DATABASE_URL", "mysql://x"),
        ("TICKET_DEFAULT_ASSIGNEE_ID", "five"),
        ("WORKFLOWS_PATH", "/nonexistent/workflows.yaml"),
        ("TICKET_SUBJECT_MATCH", "everyone"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings(_env_file=None)
    assert name in str(err.value)


def test_auto_assign_needs_assignee(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKET_AUTO_ASSIGN", "true")
    monkeypatch.delenv("TICKET_DEFAULT_ASSIGNEE_ID", raising=False)
    with pytest.raises(ConfigError, match="TICKET_DEFAULT_ASSIGNEE_ID"):
        load_settings(_env_file=None)
