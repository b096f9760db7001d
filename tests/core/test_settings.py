from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.errors import ConfigError
from core.settings import Settings, load_settings, variable_name


def test_defaults_put_everything_under_var() -> None:
    settings = load_settings()
    assert settings.data_dir == Path("var")
    assert settings.database_url == "sqlite:///var/kb.db"
    assert settings.is_sqlite
    assert settings.index_dir == Path("var/index")
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8080)
    assert settings.llm.url is None


def test_environment_variables_use_the_kb_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_PORT", "9123")
    monkeypatch.setenv("KB_LOG_LEVEL", "debug")
    monkeypatch.setenv("KB_WEB_USER_GROUPS", '["hr", "managers"]')
    settings = load_settings()
    assert settings.server.port == 9123
    assert settings.log_level == "DEBUG"
    assert settings.server.web_user_groups == ["hr", "managers"]


def test_dotenv_file_in_the_working_directory_is_read(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (isolated_env / ".env").write_text("KB_TOP_K=7\nKB_SLACK_BOT_TOKEN=xoxb-from-dotenv\n")
    settings = load_settings()
    assert settings.retrieval.top_k == 7
    monkeypatch.setenv("KB_TOP_K", "3")  # the environment wins over .env
    assert load_settings().retrieval.top_k == 3


def test_secrets_never_show_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_SLACK_BOT_TOKEN", "xoxb-very-secret-value")
    monkeypatch.setenv("KB_DATABASE_URL", "postgresql://kb:hunter2@db.internal:5432/kb")
    settings = load_settings()
    assert settings.slack.bot_token is not None
    assert settings.slack.bot_token.get_secret_value() == "xoxb-very-secret-value"
    assert "very-secret" not in repr(settings) and "very-secret" not in str(settings)
    assert "hunter2" not in settings.database_url_for_display()


def test_postgres_urls_are_normalized_to_psycopg3() -> None:
    settings = load_settings(database_url="postgresql://kb@localhost:5432/kb")
    assert settings.database_url == "postgresql+psycopg://kb@localhost:5432/kb"
    assert not settings.is_sqlite


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("mysql://root@localhost/kb", "unsupported database 'mysql'"),
        ("not a url", "not a database URL"),
        ("postgresql://kb@localhost:5432", "must name a database"),
    ],
)
def test_bad_database_url_names_the_variable_and_the_reason(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("KB_DATABASE_URL", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "KB_DATABASE_URL" in caught.value.message
    assert reason in caught.value.message


def test_bad_numbers_name_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_PORT", "70000")
    monkeypatch.setenv("KB_TOP_K", "many")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "KB_PORT" in caught.value.message and "KB_TOP_K" in caught.value.message


def test_overlap_must_be_smaller_than_the_chunk() -> None:
    with pytest.raises(ConfigError, match="KB_CHUNK_OVERLAP"):
        load_settings(chunk_tokens=64, chunk_overlap=64)


def test_settings_object_can_be_built_directly() -> None:
    settings = Settings(data_dir=Path("/srv/kb"))
    assert settings.database_url == "sqlite:////srv/kb/kb.db"


def test_values_are_grouped_by_area_and_keep_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_PUSH_DIGEST_HOUR", "6")
    monkeypatch.setenv("KB_REDACT_INDEX_KINDS", '["SECRET"]')
    monkeypatch.setenv("KB_LLM_EXTERNAL", "true")
    settings = load_settings(bot_claim_lease_s=30)
    assert settings.push.digest_hour == 6
    assert settings.privacy.index_kinds == ["SECRET"]
    assert settings.llm.external is True
    assert settings.bot.claim_lease_s == 30
    assert variable_name("push", "digest_hour") == "KB_PUSH_DIGEST_HOUR"
    assert variable_name("sources", "timeout_s") == "KB_SOURCE_TIMEOUT_S"


def test_groups_are_immutable_and_replace_gives_a_changed_copy() -> None:
    settings = load_settings(top_k=4)
    with pytest.raises(ValidationError):
        settings.retrieval.top_k = 9  # type: ignore[misc]
    changed = settings.replace(top_k=9, push_enabled=False)
    assert (changed.retrieval.top_k, changed.push.enabled) == (9, False)
    assert settings.retrieval.top_k == 4
    assert changed.data_dir == settings.data_dir


def test_a_misspelt_setting_is_named_with_the_form_to_use() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting.*topk") as caught:
        load_settings(topk=3)
    assert "top_k for KB_TOP_K" in (caught.value.hint or "")


def test_a_bad_value_inside_a_group_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_PUSH_DIGEST_HOUR", "25")
    monkeypatch.setenv("KB_SLACK_DIRECTORY_TTL_S", "-1")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "KB_PUSH_DIGEST_HOUR" in caught.value.message
    assert "KB_SLACK_DIRECTORY_TTL_S" in caught.value.message


def test_every_variable_the_readme_documents_is_a_setting() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    documented = set(re.findall(r"`(KB_[A-Z0-9_]+)`", readme)) - {"KB_PUSH_"}
    known = {f"KB_{name.upper()}" for name in Settings().flat()}
    assert documented - known == set()
