"""Raw statements: reads are recognised cheaply, writes name their tables or everything."""

from __future__ import annotations

import pytest

from freshcache.rawsql import ALL, READ, commits, written_tables


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        ("SELECT * FROM a", READ),
        ("  (SELECT 1) UNION (SELECT 2)", READ),
        ("/* hint */ select 1", READ),
        ("-- comment\nSELECT 1", READ),
        ("SAVEPOINT s1", READ),
        ("RELEASE SAVEPOINT s1", READ),
        ("PRAGMA foreign_keys", READ),
        ("CREATE INDEX i ON a (b)", READ),
        ("DROP INDEX i", READ),
        ("ALTER SEQUENCE s RESTART", READ),
        ('INSERT INTO "blog_post" ("a") VALUES (%s)', ("blog_post",)),
        ("insert into Blog_Post values (1)", ("blog_post",)),
        ('INSERT OR REPLACE INTO "t" VALUES (1)', ("t",)),
        ("REPLACE INTO t VALUES (1)", ("t",)),
        ('UPDATE "public"."blog_post" SET a = 1', ("blog_post",)),
        ("UPDATE ONLY t SET a = 1", ("t",)),
        ('DELETE FROM "Mixed""Case"', ('Mixed"Case',)),
        ("delete from `t` where id = 1", ("t",)),
        ('TRUNCATE "a", "b" RESTART IDENTITY', ("a", "b", "restart", "identity")),
        # CASCADE empties every table that references these, by any foreign key
        ('TRUNCATE "a", "b" RESTART IDENTITY CASCADE', ALL),
        ("truncate t cascade", ALL),
        ("TRUNCATE t RESTRICT", ("t",)),
        ("TRUNCATE TABLE t", ("t",)),
        ("ALTER TABLE t ADD COLUMN c int", ("t",)),
        ("DROP TABLE IF EXISTS t, u", ("t", "u")),
        ("DROP TABLE t CASCADE", ("t",)),  # drops constraints and views, not other rows
        ("COPY t (a, b) FROM STDIN", ("t",)),
        ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", ALL),
        ("WITH x AS (SELECT 1) SELECT * FROM x", READ),
        ("EXPLAIN ANALYZE UPDATE t SET a = 1", ALL),
        ("SELECT * INTO new_t FROM t", ALL),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", ALL),
        ("CALL do_things()", ALL),
        ("REFRESH MATERIALIZED VIEW v", ALL),
        # Several statements in one text: the driver runs them all.
        ("SELECT 1; UPDATE t SET a = 1", ALL),
        ("SET LOCAL statement_timeout = 0; DELETE FROM t", ALL),
        ("UPDATE a SET x = 1; UPDATE b SET y = 2", ALL),
        ("CREATE TEMP TABLE x AS SELECT 1; INSERT INTO t VALUES (1)", ALL),
        ("WITH x AS (SELECT ';select') UPDATE t SET a = 1", ALL),  # a ; inside a literal
        ("SELECT 1; SELECT 2;", READ),
        ("SELECT 1;  ", READ),
        ("SELECT 'a;b' FROM t", READ),
        # PostgreSQL's block comments nest: the first */ does not end this one.
        ("/* a /* b */ select */ UPDATE t SET a = 1", ALL),
        ("/* a /* b */ */ UPDATE t SET a = 1", ALL),
        ("/* a */ /* b */ SELECT 1", READ),
        # Two-phase commit: the prepared transaction's writes are not in this text.
        ("COMMIT PREPARED 'x'", ALL),
        ("ROLLBACK PREPARED 'x'", ALL),
        ("PREPARE TRANSACTION 'x'", READ),
    ],
)
def test_written_tables(sql: str, tables: tuple[str, ...]) -> None:
    assert written_tables(sql) == tables


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("COMMIT AND CHAIN", True),
        ("end and chain", True),
        ("/* app */ COMMIT", True),
        ("UPDATE a SET b = 1; COMMIT; BEGIN", True),
        ("SELECT 1; -- x\n commit work and chain", True),
        ("SELECT 'x; commit'", False),
        ("SELECT 1; SELECT '; COMMIT'", False),
        ("SELECT $$; COMMIT $$", False),
        ("COMMIT PREPARED 'x'", False),
        ("ROLLBACK AND CHAIN", False),
        ("SELECT committed FROM a", False),
        ("UPDATE legend SET b = 1", False),
        # Trigger and BEGIN ATOMIC bodies close with END; their writes are not committed.
        ("CREATE TRIGGER t AFTER UPDATE ON a BEGIN UPDATE b SET c = 1; END", False),
    ],
)
def test_commits(sql: str, expected: bool) -> None:
    assert commits(sql) is expected
