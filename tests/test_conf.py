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
        ({"FRESHCACHE_BACKEND": 5}, "freshcache.E008"),
        ({"FRESHCACHE_SERIALIZER": "no.such.Codec"}, "freshcache.E016"),
        ({"FRESHCACHE_SERIALIZER": "json.dumps"}, "freshcache.E016"),
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


@override_settings(FRESHCACHE={"testapp.Post": {"ops": "get", "timeout": 10}})
def test_profile_keys_are_case_insensitive() -> None:
    assert profile_for(Post) == Profile(ops=frozenset({"get"}), timeout=10)


@pytest.mark.parametrize(
    "conf",
    [
        "redis://10.0.0.1:7000",
        "redis+cluster://:s3cret@10.0.0.1:7000/0",
        {"startup_nodes": ["redis://a:7000", {"host": "b", "port": 7001}, ("c", 7002)]},
        {"url": "rediss://a:7000", "password": "x", "read_from_replicas": True},
        {"host": "a", "port": 7000, "socket_timeout": 0.5},
    ],
)
def test_cluster_settings_select_the_cluster_engine(conf: object) -> None:
    from freshcache.backends import backend_name, build_backend
    from freshcache.backends.cluster import ClusterBackend

    with override_settings(FRESHCACHE_CLUSTER=conf, FRESHCACHE_BACKEND=None):
        assert "freshcache.E015" not in [m.id for m in check_settings()]
        assert backend_name() == "cluster"
        assert isinstance(build_backend(), ClusterBackend)  # connects on first use only


@pytest.mark.parametrize(
    "overrides",
    [
        {"FRESHCACHE_CLUSTER": "http://10.0.0.1:7000"},
        {"FRESHCACHE_CLUSTER": "redis://10.0.0.1:7000/3"},
        {"FRESHCACHE_CLUSTER": 7000},
        {"FRESHCACHE_CLUSTER": {"host": "a", "db": 1}},
        {"FRESHCACHE_CLUSTER": {"startup_nodes": "redis://a:7000"}},
        {"FRESHCACHE_CLUSTER": {"startup_nodes": [7000]}},
        {"FRESHCACHE_CLUSTER": {"password": "x"}},
        {"FRESHCACHE_BACKEND": "cluster", "FRESHCACHE_REDIS": None},
        {"FRESHCACHE_CLUSTER": "redis://a:7000", "FRESHCACHE_CLIENT_CLASS": "redis.Redis"},
    ],
)
def test_bad_cluster_settings_are_reported(overrides: dict[str, object]) -> None:
    from freshcache.backends import build_backend
    from freshcache.exceptions import ImproperlyConfigured

    with override_settings(**{"FRESHCACHE_BACKEND": None, **overrides}):
        assert "freshcache.E015" in [m.id for m in check_settings()]
        with pytest.raises(ImproperlyConfigured, match="FRESHCACHE_C"):
            build_backend()


@pytest.mark.parametrize("url", ["valkey://localhost/0", "redis+sentinel://localhost/0"])
def test_urls_redis_py_cannot_open_are_rejected(url: str) -> None:
    assert "freshcache.E007" in ids(FRESHCACHE_REDIS=url)


def test_locmem_under_multiprocess_server_logs_at_runtime(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from freshcache.backends import build_backend

    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    with override_settings(FRESHCACHE_BACKEND="locmem"), caplog.at_level("WARNING"):
        build_backend()
    assert "in-process backend" in caplog.text


class UpperCodec:
    """A codec chosen by FRESHCACHE_SERIALIZER: wraps the default and marks its payloads."""

    def dumps(self, obj: object) -> bytes:
        from freshcache.serializers import dumps_rows

        return b"UP" + dumps_rows(obj)

    def loads(self, data: bytes) -> object:
        from freshcache.serializers import loads_rows

        assert data.startswith(b"UP")
        return loads_rows(data[2:])


@pytest.mark.django_db(transaction=True)
def test_serializer_setting_chooses_the_rows_codec() -> None:
    from freshcache.backends import get_backend
    from freshcache.serializers import RowsCodec, rows_codec

    Category.objects.create(title="x", slug="x")
    assert type(rows_codec()) is RowsCodec  # read before the change: the setting still wins
    with override_settings(FRESHCACHE_SERIALIZER="tests.test_conf.UpperCodec"):
        assert type(rows_codec()) is UpperCodec
        assert [c.title for c in Category.objects.all()] == ["x"]
        assert [c.title for c in Category.objects.all()] == ["x"]
        backend = get_backend()
        keys = [k for k in _all_keys(backend) if ":q:" in k]
        assert keys and all(b"UP" in (backend.get_many([k])[0] or b"") for k in keys)
    assert type(rows_codec()) is RowsCodec


def _all_keys(backend: object) -> list[str]:
    from freshcache.backends.redis import RedisBackend

    if isinstance(backend, RedisBackend):
        return [k.decode() for k in backend.client.keys("*")]
    return list(backend._data)  # type: ignore[attr-defined]


def test_profile_key_case_does_not_trip_the_model_check() -> None:
    assert ids(FRESHCACHE={"TestApp.Post": {"timeout": 1}, "Auth.User": {"timeout": 1}}) == []


@pytest.mark.parametrize(("timeout", "error"), [(-5, ValueError), ("60", TypeError)])
def test_cache_timeout_is_validated(timeout: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="timeout"):
        Post.objects.cache(timeout=timeout)  # type: ignore[attr-defined]
