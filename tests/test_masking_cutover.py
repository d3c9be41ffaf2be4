"""The PII guard end to end (start -> test edits + production writes -> rehearse -> cutover) on a
cluster that logs every statement: production's values come back onto every row that existed in
production (a masked primary key two tables reference, a masked unique e-mail, a renamed column and
table, a keyless table with duplicate rows), rows the test side created keep their own values
(and their references become production's keys), no trigger fires for the restore, verify fails
while a masked value of any kind remains, and the salt appears in no output, log, backup or file."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from pgcarry.playground.localpg import LocalCluster
from tests.helpers import cli, execute, query, write_config
from tests.test_masking import rule

SALT = "Salt-Leak-Canary-7f3a9c2b"
A, B, C, D = (str(uuid.UUID(int=i, version=4)) for i in (101, 102, 103, 104))

SCHEMA = """
CREATE TABLE accounts (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, phone text,
                       status text NOT NULL DEFAULT 'new', updated_at timestamptz NOT NULL DEFAULT '2020-01-01');
CREATE TABLE orders (id int PRIMARY KEY, account_id uuid NOT NULL REFERENCES accounts(id), total int NOT NULL);
CREATE TABLE tickets (id int PRIMARY KEY, account_id uuid REFERENCES accounts(id), body text);
CREATE TABLE contacts (id int PRIMARY KEY, email text UNIQUE, holder text, status text,
                       updated_at timestamptz NOT NULL DEFAULT '2020-01-01');
CREATE TABLE visits (note text, email text);
CREATE TABLE audit (n uuid PRIMARY KEY DEFAULT gen_random_uuid(), what text);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN NEW.updated_at = now(); RETURN NEW; END $$;
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO audit (what) VALUES (TG_TABLE_NAME || ' ' || TG_OP); RETURN NULL; END $$;
CREATE TRIGGER touch BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TRIGGER touch BEFORE UPDATE ON contacts FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON accounts FOR EACH ROW EXECUTE FUNCTION audit();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON contacts FOR EACH ROW EXECUTE FUNCTION audit();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON visits FOR EACH ROW EXECUTE FUNCTION audit();
ALTER TABLE visits REPLICA IDENTITY FULL;
"""
SEED = [
    f"INSERT INTO accounts (id, email, phone) VALUES ('{A}', 'a@x.test', '010-1111-2222'), "
    f"('{B}', 'b@x.test', '010-3333-4444'), ('{C}', 'c@y.test', NULL)",
    f"INSERT INTO orders VALUES (1, '{A}', 10), (2, '{B}', 20), (3, '{C}', 30)",
    f"INSERT INTO tickets VALUES (1, '{A}', 'help'), (2, '{B}', 'refund')",
    "INSERT INTO contacts (id, email, holder) VALUES (1, 'e1@c.test', 'Holder One'), "
    "(2, 'e2@c.test', 'Holder Two')",
    "INSERT INTO visits VALUES ('home', 'v1@x.test'), ('home', 'v1@x.test'), ('cart', 'v2@x.test'), "
    "('home', NULL)",
    "TRUNCATE audit",
]
RULES = "".join([
    rule("public.accounts", "id", kind="hash"), rule("public.accounts", "email", kind="email"),
    rule("public.accounts", "phone", regex="[0-9]{4}$", replace="****"),
    rule("public.contacts", "email", kind="hash", prefix="c-", length=20),
    rule("public.contacts", "holder", value="MASKED"), rule("public.visits", "email", kind="email")])
POLICY = """
[masking]
salt = "${MASK_SALT_FOR_TEST}"

[replay.tables."public.contacts"]
insert-exists = "target-wins"
rename-columns = { holder = "card_holder" }

[replay.tables."public.tickets"]
rename-to = "public.support_tickets"
"""
ENV = {"MASK_SALT_FOR_TEST": SALT}


def masked(value: str, n: int) -> str:
    import hashlib

    return hashlib.sha256(SALT.encode() + value.encode()).hexdigest()[:n]


def m_id(v: str) -> str:
    return str(uuid.UUID(masked(v, 32)))


@pytest.fixture(scope="module")
def logged_cluster():
    c = LocalCluster("stmtlog", {"log_statement": "'all'", "log_min_messages": "info",
                                 "log_min_error_statement": "error"}).start()
    yield c
    c.destroy()


def _tables(dsn: str) -> dict[str, list[tuple]]:
    with psycopg.connect(dsn) as c:
        return {t: sorted(c.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in ("accounts", "orders", "contacts", "visits", "audit")}


def test_cutover_restores_every_masked_value_and_leaks_no_salt(logged_cluster, workdir):
    prod, test = logged_cluster.createdb("shop"), logged_cluster.createdb("shop_test")
    execute(prod, SCHEMA, *SEED)
    write_config(workdir, prod, slot="pii", extra=RULES + POLICY)
    outputs: list[str] = []

    def run(*args: str, rc: int = 0) -> str:
        p = cli(workdir, *args, check=False, env=ENV)
        assert p.returncode == rc, (args, p.stdout, p.stderr)
        outputs.append(p.stdout + p.stderr)
        return p.stdout

    run("start", "--copy-to", test, "--set-replica-identity", "--json")
    assert query(test, "SELECT id::text, email FROM accounts ORDER BY email") == sorted(
        [(m_id(A), f"u{masked('a@x.test', 16)}@example.test"), (m_id(B), f"u{masked('b@x.test', 16)}@example.test"),
         (m_id(C), f"u{masked('c@y.test', 16)}@example.test")], key=lambda r: r[1])
    assert query(test, "SELECT id, account_id::text FROM orders ORDER BY id") == [
        (1, m_id(A)), (2, m_id(B)), (3, m_id(C))]

    execute(test,  # the test side develops: renames, its own rows (one collides with production's)
            "ALTER TABLE contacts RENAME COLUMN holder TO card_holder",
            "ALTER TABLE tickets RENAME TO support_tickets",
            "INSERT INTO contacts (id, email, card_holder, status) VALUES (100, 'dev@test.local', 'Dev', 'test')",
            f"INSERT INTO orders VALUES (50, '{m_id(A)}', 5)",
            f"INSERT INTO support_tickets VALUES (50, '{m_id(B)}', 'test ticket')",
            f"UPDATE accounts SET status = 'vip' WHERE id = '{m_id(C)}'",
            "INSERT INTO visits VALUES ('test', 'qa@test.local')")
    execute(prod,  # production keeps writing
            f"UPDATE accounts SET email = 'a2@x.test' WHERE id = '{A}'",
            f"UPDATE accounts SET status = 'gold' WHERE id = '{B}'",
            "DELETE FROM orders WHERE id = 3", f"DELETE FROM accounts WHERE id = '{C}'",
            f"INSERT INTO accounts (id, email, phone) VALUES ('{D}', 'd@x.test', '010-5555-6666')",
            f"INSERT INTO orders VALUES (4, '{D}', 40)", f"INSERT INTO tickets VALUES (3, '{D}', 'new')",
            "INSERT INTO contacts (id, email, holder, status) VALUES (100, 'p100@c.test', 'Prod Holder', 'prod')",
            "UPDATE contacts SET status = 'active' WHERE id = 1",
            "INSERT INTO visits VALUES ('checkout', 'v3@x.test')")
    run("capture", "--until", "current")
    run("status")
    run("status", "--json")
    run("replay", "--to", test, "--dry-run")  # (--json: a uuid key is not serialisable yet)

    # a rehearsal restores into a scratch database; masked values put back there fail verify
    rep = json.loads(run("rehearse", "--from", test, "--keep", "--json"))
    assert rep["ok"], rep["failed"]
    scratch = logged_cluster.dsn("pgcarry_rehearse_pii")
    assert query(scratch, "SELECT email FROM accounts ORDER BY email") == [
        ("a2@x.test",), ("b@x.test",), ("d@x.test",)]
    with psycopg.connect(scratch, autocommit=True) as c:
        c.execute("SET session_replication_role = replica")
        c.execute(f"UPDATE accounts SET phone = regexp_replace(phone, '[0-9]{{4}}$', '****') WHERE id = '{A}'")
        c.execute("UPDATE contacts SET card_holder = 'MASKED' WHERE id = 2")
        c.execute(f"UPDATE contacts SET email = 'c-{masked('e1@c.test', 20)}' WHERE id = 1")
        c.execute(f"UPDATE visits SET email = 'u{masked('v2@x.test', 16)}@example.test' WHERE note = 'cart'")
        c.execute(f"UPDATE orders SET account_id = '{m_id(B)}' WHERE id = 2")
    bad = json.loads(run("verify", "--to", scratch, "--json", rc=5))
    assert {(c["table"], c["detail"]) for c in bad["checks"] if c["name"] == "pii guard" and not c["ok"]} == {
        ("public.accounts", "1 rows of production still masked"),
        ("public.contacts", "2 rows of production still masked"),
        ("public.visits", "1 rows of production still masked"),
        ("public.orders", "2 rows of production still masked")}  # by its row and by the mapped key
    execute(logged_cluster.dsn(), "DROP DATABASE pgcarry_rehearse_pii WITH (FORCE)")

    before = _tables(prod)
    test_audit = query(test, "SELECT * FROM audit")
    out = json.loads(run("cutover", "--from", test, "--yes", "--json"))
    assert out["complete"], out
    after = _tables(prod)
    # T0 rows carry production's values again: keys, e-mails, phones, updated_at (no trigger fired)
    assert after["accounts"] == before["accounts"]
    assert after["orders"] == sorted(before["orders"] + [(50, uuid.UUID(A), 5)], key=repr)
    assert query(prod, "SELECT * FROM support_tickets ORDER BY id") == [
        (1, uuid.UUID(A), "help"), (2, uuid.UUID(B), "refund"), (3, uuid.UUID(D), "new"),
        (50, uuid.UUID(B), "test ticket")]
    want_contacts = [r for r in before["contacts"] if r[0] != 100]
    got_contacts = [r for r in after["contacts"] if r[0] != 100]
    assert got_contacts == want_contacts  # the renamed column (card_holder) holds production's holder
    assert query(prod, "SELECT email, card_holder, status FROM contacts WHERE id = 100") == [
        ("dev@test.local", "Dev", "test")]  # the test's own row: not a hybrid
    assert after["visits"] == sorted(before["visits"] + [("test", "qa@test.local")], key=repr)
    assert after["audit"] == sorted(before["audit"] + test_audit, key=repr)  # nothing fired
    assert query(prod, "SELECT to_regnamespace('pgcarry_unmask')") == [(None,)]
    restored = next(p for p in out["phases"] if p["phase"] == "unmask")["detail"]["restored"]
    assert restored == {"public.accounts": 5, "public.orders": 4, "public.tickets": 3,
                        "public.contacts": 2, "public.visits": 3}
    ok = json.loads(run("verify", "--to", prod, "--json"))
    assert ok["ok"] and [c["detail"] for c in ok["checks"] if c["name"] == "pii guard"] == [
        "not checked: production's values are not kept in this database (cutover and rehearse check them)"]

    canaries = [SALT, SALT.encode().hex()]
    for text in outputs:
        assert not any(s in text for s in canaries), text
    server_log = logged_cluster.logfile.read_text()
    assert "pgcarry_mask_salt" in server_log and "COPY" in server_log  # the statements were logged
    assert not any(s in server_log for s in canaries)
    files = [p for p in workdir.rglob("*") if p.is_file() and p.name != "pgcarry.toml"]
    assert any(p.suffix == ".dump" for p in files) and any(p.name == "pgcarry-log.db" for p in files)
    for p in files:
        data = p.read_bytes().decode("latin-1")
        assert not any(s in data for s in canaries), p


def test_a_bind_parameter_would_be_logged(logged_cluster):
    """Why the salt travels as COPY data: with log_statement = 'all' the server writes every bind
    parameter of a statement to its log."""
    with psycopg.connect(logged_cluster.dsn(), autocommit=True) as c:
        c.execute("SELECT sha256(convert_to(%s, 'UTF8'))", ("Bind-Param-Canary-91",))
    assert "parameters: $1 = 'Bind-Param-Canary-91'" in logged_cluster.logfile.read_text()
