"""Production changes a table's replica identity during capture: UPDATEs then arrive with the key
alone (DEFAULT) or not at all (NOTHING: wal2json drops them and warns). Capture records the table
and the first LSN, status warns (exit 7), and replay in both modes, rehearse and cutover refuse
that table; a DELETE that still carries its key is replayed exactly."""

from __future__ import annotations

import json

import pytest

from pgcarry.capture.identity import dropped, missing
from tests.helpers import cli, execute, logged_changes, query, write_config


def test_replica_identity_lost_mid_capture_is_recorded_and_refused(source_dsn, target_dsn, workdir):
    execute(source_dsn, *[f"CREATE TABLE {t} (id int PRIMARY KEY, a text, b int)" for t in "tuv"],
            *[f"INSERT INTO {t} VALUES (1, 'x', 1), (2, 'y', 2), (3, 'z', 3)" for t in "tuv"])
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    execute(source_dsn, "UPDATE t SET a = 'full' WHERE id = 1",  # still FULL: fine
            "ALTER TABLE t REPLICA IDENTITY DEFAULT", "UPDATE t SET b = 20 WHERE id = 2",
            "UPDATE t SET b = 21 WHERE id = 2", "DELETE FROM t WHERE id = 3",
            "ALTER TABLE u REPLICA IDENTITY NOTHING", "UPDATE u SET a = 'gone' WHERE id = 1",
            "ALTER TABLE v REPLICA IDENTITY DEFAULT", "DELETE FROM v WHERE id = 3")
    cli(workdir, "capture", "--until", "current")

    partial = [c for _, c in logged_changes(workdir) if c.table == "t" and c.action == "U"]
    assert [c.old for c in partial] == [{"id": 1, "a": "x", "b": 1}, {"id": 2}, {"id": 2}]
    st = cli(workdir, "status", check=False)
    assert st.returncode == 7, st.stderr
    lines = [x for x in st.stderr.splitlines() if "NOT REPLAYABLE EXACTLY" in x]
    assert len(lines) == 2
    assert (f"public.t: an UPDATE arrived without the old values of 2 of its 3 columns: production's "
            f"REPLICA IDENTITY is no longer FULL (first at LSN {partial[1].lsn})") in lines[0]
    assert "public.u: an UPDATE arrived without a replica identity (wal2json dropped it)" in lines[1]
    offline = cli(workdir, "status", "--offline", "--json", check=False)
    assert offline.returncode == 7
    assert json.loads(offline.stdout)["unsafe"] == [x.split("EXACTLY: ")[1].split(" -- ")[0] for x in lines]

    for verb in (["replay", "--to", target_dsn], ["replay", "--to", target_dsn, "--mode", "txn"],
                 ["rehearse", "--from", target_dsn],
                 ["cutover", "--from", target_dsn, "--yes", "--fence", "none"]):
        out = cli(workdir, *verb, check=False)
        assert out.returncode == 3, (verb, out.stderr)
        assert "cannot replay public.t exactly" in out.stderr and f"lsn={partial[1].lsn}" in out.stderr
        assert "ALTER TABLE public.t REPLICA IDENTITY FULL on production and take a new T0" in out.stderr
    assert query(target_dsn, "SELECT * FROM t ORDER BY id") == [(1, "x", 1), (2, "y", 2), (3, "z", 3)]

    # the other tables replay once these two are set aside; v's key-only DELETE is exact
    write_config(workdir, source_dsn, extra='[replay.tables."public.t"]\nignore = true\n'
                                            '[replay.tables."public.u"]\nignore = true\n')
    cli(workdir, "replay", "--to", target_dsn)
    assert query(target_dsn, "SELECT * FROM v ORDER BY id") == [(1, "x", 1), (2, "y", 2)]


# real wal2json 2.5 output (format-version 2, include-pk) for a table (id, a, b)
_C = '{"name":"id","type":"integer","value":2},{"name":"a","type":"text","value":"y2"},{"name":"b","type":"integer","value":2}'
_PK = '"pk":[{"name":"id","type":"integer"}]}'
FULL_U = f'{{"action":"U","schema":"public","table":"ri","columns":[{_C}],"identity":[{_C}],{_PK}'
KEY_U = (f'{{"action":"U","schema":"public","table":"ri","columns":[{_C}],'
         f'"identity":[{{"name":"id","type":"integer","value":2}}],{_PK}')
TOAST_U = (f'{{"action":"U","schema":"public","table":"ri","columns":[{{"name":"id","type":"integer","value":2}}],'
           f'"identity":[{_C}],{_PK}')  # unchanged TOAST left out of the new image only
KEY_D = '{"action":"D","schema":"public","table":"ri","identity":[{"name":"id","type":"integer","value":3}],' + _PK
BARE_D = '{"action":"D","schema":"public","table":"ri",' + _PK
TRICKY = FULL_U.replace('"y2"', '"{\\"name\\":1,\\"identity\\":[x"')  # entry-like text in a value


@pytest.mark.parametrize("raw, action, entries, want", [
    (FULL_U, "U", 4, None), (FULL_U, "U", 9, None), (TOAST_U, "U", 4, None), (TRICKY, "U", 4, None),
    (KEY_U, "U", 4, "the old values of 2 of its 3 columns"), (KEY_D, "D", 4, None),
    (BARE_D, "D", 4, "an old image"),
])
def test_old_image_check_on_raw_text(raw, action, entries, want):
    assert json.loads(raw)  # the samples are valid JSON
    assert missing(raw, action, entries) == want


def test_wal2json_warning_names_the_dropped_change():
    assert dropped('WARNING:  no tuple identifier for UPDATE in table "public"."ri"\n') == (
        "UPDATE", [("public", "ri")])
    assert dropped('no tuple identifier for DELETE in table "a"."b"."c"') == (
        "DELETE", [("a", 'b"."c'), ('a"."b', "c")])
    assert dropped("WARNING:  something else") is None
