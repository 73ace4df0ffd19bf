"""The test run uses the database and cache backend its environment asks for.

``make test`` runs the suite once per combination of ``FRESHCACHE_TEST_DB`` (sqlite,
postgres) and ``FRESHCACHE_TEST_BACKEND`` (locmem, redis), with private servers named by
``FRESHCACHE_TEST_PG_*`` and ``FRESHCACHE_TEST_REDIS_URL``.  These tests make sure a
combination really runs against what it claims, so that a green "postgres + redis" line
is not silently a SQLite/in-memory run (a typo in a variable would otherwise fall back to
the defaults in ``tests/settings.py``).  They depend on Django and redis-py only, not on
freshcache's internals.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings
from django.db import connections

DB = os.environ.get("FRESHCACHE_TEST_DB", "sqlite")
BACKEND = os.environ.get("FRESHCACHE_TEST_BACKEND", "locmem")

VENDORS = {"sqlite": "sqlite", "postgres": "postgresql"}
BACKENDS = {"locmem", "redis"}


def test_requested_combination_is_known() -> None:
    assert DB in VENDORS, f"FRESHCACHE_TEST_DB={DB!r}: expected one of {sorted(VENDORS)}"
    assert BACKEND in BACKENDS, (
        f"FRESHCACHE_TEST_BACKEND={BACKEND!r}: expected one of {sorted(BACKENDS)}"
    )


@pytest.mark.django_db(databases=["default", "other"])
@pytest.mark.parametrize("alias", ["default", "other"])
def test_database_vendor_matches_environment(alias: str) -> None:
    connection = connections[alias]
    assert connection.vendor == VENDORS[DB]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 + 1")
        assert cursor.fetchone() == (2,)


@pytest.mark.django_db
def test_database_is_the_private_server_and_a_test_database() -> None:
    connection = connections["default"]
    params = connection.settings_dict
    if DB == "sqlite":
        assert connection.vendor == "sqlite"
        assert connection.is_in_memory_db()
        return
    assert params["HOST"] == os.environ["FRESHCACHE_TEST_PG_HOST"]
    assert str(params["PORT"]) == os.environ["FRESHCACHE_TEST_PG_PORT"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database(), inet_server_port(), version()")
        name, port, version = cursor.fetchone()
    # Django's test runner made its own database on the server the environment names.
    assert name.startswith("test_"), name
    assert str(port) == os.environ["FRESHCACHE_TEST_PG_PORT"]
    assert version.startswith("PostgreSQL")


def test_backend_setting_matches_environment() -> None:
    assert settings.FRESHCACHE_BACKEND == BACKEND
    if BACKEND == "redis":
        url = os.environ["FRESHCACHE_TEST_REDIS_URL"]
        assert url == settings.FRESHCACHE_REDIS


def test_redis_answers_on_the_private_url() -> None:
    """Every combination has the private Redis: the backend contract suite runs on it."""
    url = os.environ["FRESHCACHE_TEST_REDIS_URL"]
    client = redis.Redis.from_url(url)
    try:
        assert client.ping() is True
        # It is the server the URL names (not some other Redis on a default port).
        info = client.info("server")
        assert int(info["tcp_port"]) == urlsplit(url).port
        client.set("freshcache:test_environment", b"ok", ex=10)
        assert client.get("freshcache:test_environment") == b"ok"
        client.delete("freshcache:test_environment")
    finally:
        client.close()
