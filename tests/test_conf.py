"""Settings: lazy, reset by override_settings, profiles resolved; checks name the fix."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from freshcache.checks import check_settings
from freshcache.conf import ALL_OPS, Profile, normalize_ops, profile_for, settings
from tests.testapp.models import Category, Post


def ids(**overrides: object) -> list[str]:
    with override_settings(**overrides):
        return [m.id for m in check_settings()]


def test_defaults_and_override_settings() -> None:
    assert settings.ENABLED is True
    with override_settings(FRESHCACHE_ENABLED=False, FRESHCACHE_PREFIX="x:"):
        assert settings.ENABLED is False
        assert settings.PREFIX == "x:"
    assert settings.ENABLED is True
    assert settings.PREFIX == "fc:"


def test_unknown_setting_name_is_an_error() -> None:
    with pytest.raises(AttributeError):
        settings.NOPE  # noqa: B018


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ("all", ALL_OPS),
        ("get", {"get"}),
        (("fetch", "get"), {"fetch", "get"}),
        ({"count"}, {"count"}),
        ((), set()),
        (None, set()),
        (["all"], ALL_OPS),
    ],
)
def test_ops_spellings(ops: object, expected: set[str]) -> None:
    assert normalize_ops(ops) == frozenset(expected)


PROFILES = {
    "testapp.post": {"ops": "get", "timeout": 10},
    "testapp.*": {"ops": ("fetch",)},
    "*.*": {"timeout": 99},
    "auth.*": None,
}


@override_settings(FRESHCACHE=PROFILES, FRESHCACHE_DEFAULTS={"timeout": 3600, "lock": True})
def test_profile_resolution_most_specific_first() -> None:
    assert profile_for(Post) == Profile(ops=frozenset({"get"}), timeout=10, lock=True)
    assert profile_for(Category) == Profile(ops=frozenset({"fetch"}), timeout=3600, lock=True)
    assert profile_for(User) is None  # explicitly forbidden


@override_settings(FRESHCACHE={"*.*": {"timeout": 5}})
def test_star_star_catches_everything() -> None:
    assert profile_for(User) == Profile(ops=frozenset(), timeout=5)


def test_profiles_follow_override_settings() -> None:
    with override_settings(FRESHCACHE={"testapp.*": {"ops": "all", "timeout": 1}}):
        assert profile_for(Post).timeout == 1  # type: ignore[union-attr]
    with override_settings(FRESHCACHE={"testapp.*": {"ops": "all", "timeout": 2}}):
        assert profile_for(Post).timeout == 2  # type: ignore[union-attr]


def test_valid_configuration_has_no_errors() -> None:
    assert ids() == []


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"FRESHCACHE": ["testapp.*"]}, "freshcache.E001"),
        ({"FRESHCACHE": {"testapp.*": "all"}}, "freshcache.E002"),
        ({"FRESHCACHE": {"testapp.*": {"ops": "fetchall", "timeout": 1}}}, "freshcache.E003"),
        ({"FRESHCACHE": {"testapp.*": {"ops": 5, "timeout": 1}}}, "freshcache.E003"),
        (
            {"FRESHCACHE": {"testapp.*": {"ops": "get"}}, "FRESHCACHE_DEFAULTS": {}},
            "freshcache.E004",
        ),
        ({"FRESHCACHE": {"testapp.*": {"timeout": 1, "tiemout": 2}}}, "freshcache.E005"),
        ({"FRESHCACHE": {"testapp.nosuchmodel": {"timeout": 1}}}, "freshcache.E006"),
        ({"FRESHCACHE": {"noapp.*": {"timeout": 1}}}, "freshcache.E006"),
        ({"FRESHCACHE": {"testapp": {"timeout": 1}}}, "freshcache.E006"),
        ({"FRESHCACHE_REDIS": "http://localhost:6379/0"}, "freshcache.E007"),
        ({"FRESHCACHE_REDIS": "redis://localhost:6379/zero"}, "freshcache.E007"),
        ({"FRESHCACHE_REDIS": "redis://localhost:port/0"}, "freshcache.E007"),
        ({"FRESHCACHE_BACKEND": "memcache"}, "freshcache.E008"),
        ({"FRESHCACHE": {"testapp.*": {"timeout": "soon"}}}, "freshcache.E009"),
        ({"FRESHCACHE": {"testapp.*": {"timeout": -1}}}, "freshcache.E009"),
        ({"FRESHCACHE_REDIS": 6379}, "freshcache.E010"),
        ({"FRESHCACHE_SENTINEL": {"locations": []}}, "freshcache.E011"),
        ({"FRESHCACHE_CLIENT_CLASS": "no.such.Client"}, "freshcache.E012"),
        ({"FRESHCACHE_PREFIX": 42}, "freshcache.E013"),
        ({"FRESHCACHE_DEFAULTS": 3600}, "freshcache.E014"),
    ],
)
def test_every_settings_error_has_its_id(overrides: dict[str, object], check_id: str) -> None:
    with override_settings(**overrides):
        messages = check_settings()
    assert check_id in [m.id for m in messages]
    message = next(m for m in messages if m.id == check_id)
    assert message.hint, "every error says what to write instead"


def test_locmem_under_multiprocess_server_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    with override_settings(FRESHCACHE_BACKEND="locmem"):
        assert "freshcache.W001" in [m.id for m in check_settings()]
    with override_settings(FRESHCACHE_BACKEND="redis", FRESHCACHE_REDIS="redis://localhost/0"):
        assert "freshcache.W001" not in [m.id for m in check_settings()]
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    with override_settings(FRESHCACHE_BACKEND="locmem"):
        assert "freshcache.W001" not in [m.id for m in check_settings()]
