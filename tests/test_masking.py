"""Masking at T0 against real PostgreSQL: a rule that would break the copy is refused before
anything is created (exit 2, one line each; no slot, no table in the test database, no log), and
the kinds that keep the copy usable do: hash/email on unique e-mails and on a primary key that two
tables reference (transitively, over multi-column keys), the same input masked alike in every
table, constraints built on the masked rows, no trigger fired by the masking."""

from __future__ import annotations

import hashlib
import json
import re
import uuid

import pytest

from pgcarry.changelog.sqlite import SQLiteLog
from pgcarry.schemas.dsn import with_options
from tests.helpers import cli, execute, query, write_config

SALT = "t3st-salt-0123456789abcdef"
ENV = {"PGCARRY_MASK_SALT": SALT}
SEED_RULE = ('[[mask]]\ntable = "public.profiles"\ncolumn = "email"\n'
             'regex = "^(.{3}).*(@.*)$"\nreplace = "\\\\1***\\\\2"\n')


def digest(value: str, n: int) -> str:
    return hashlib.sha256(SALT.encode() + value.encode()).hexdigest()[:n]


def rule(table: str, column: str, **opts: object) -> str:
    """A [[mask]] table; keys as given (`**{"keep-domain": True}`), values as TOML."""
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in opts.items())
    return f"[[mask]]\ntable = {json.dumps(table)}\ncolumn = {json.dumps(column)}\n{body}"


def start(workdir, target_dsn, check=True):
    return cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity", check=check, env=ENV)


def assert_nothing_created(source_dsn, target_dsn, workdir):
    assert query(source_dsn, "SELECT count(*) FROM pg_replication_slots "
                 "WHERE database = current_database()") == [(0,)]
    assert query(target_dsn, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = "
                 "c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
                 "AND n.nspname NOT LIKE 'pg\\_%'") == [(0,)]
    assert not (workdir / "pgcarry-log.db").exists()


def refusals(proc) -> list[str]:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.endswith(" (hint: nothing was created)\n")
    return [ln.removeprefix("pgcarry: error:   - ").removesuffix(" (hint: nothing was created)")
            for ln in proc.stderr.splitlines() if ln.startswith("pgcarry: error:   - ")]


def test_seed_rule_on_a_unique_email_is_refused_before_anything_is_created(source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE TABLE profiles (id int PRIMARY KEY, email text NOT NULL UNIQUE)",
            "INSERT INTO profiles VALUES (1, 'alice.smith@x'), (2, 'alice.jones@x'), (3, 'bob@x')")
    write_config(workdir, source_dsn, extra=SEED_RULE)
    lines = refusals(start(workdir, target_dsn, check=False))
    assert lines == [
        "public.profiles.email: kind regex keeps no values distinct, refused on unique constraint "
        "profiles_email_key (1 collision on production's rows) -- fix: kind = \"email\" or \"hash\" "
        "(or unique = true on a regex)"]
    assert_nothing_created(source_dsn, target_dsn, workdir)


def test_each_rule_that_does_not_fit_is_one_line(source_dsn, target_dsn, workdir):
    execute(source_dsn,
            "CREATE TABLE p (id int PRIMARY KEY, code varchar(13), born date, n int UNIQUE, u uuid, "
            "tag text UNIQUE, pin text NOT NULL, g text GENERATED ALWAYS AS (tag || '!') STORED)",
            "CREATE TABLE q (id int PRIMARY KEY, p_id int REFERENCES p(id), note text)",
            "INSERT INTO p VALUES (1, 'A', '1990-01-01', 1, gen_random_uuid(), 'x', '1'), "
            "(2, 'B', NULL, 2, NULL, 'y', '2')", "INSERT INTO q VALUES (1, 1, 'n')")
    write_config(workdir, source_dsn, extra="".join([
        rule("p", "code", kind="hash"), rule("p", "born", value="someday"), rule("p", "n", kind="hash"),
        rule("p", "u", kind="email"), rule("p", "tag", kind="hash", length=8), rule("p", "pin", kind="null"),
        rule("q", "p_id", kind="null"), rule("p", "nope", kind="hash"),
        rule("public.missing", "c"), rule("p", "g", kind="hash")]))
    lines = refusals(start(workdir, target_dsn, check=False))
    assert sorted(lines) == sorted([
        "mask.7: public.p has no column 'nope' -- fix: fix [[mask]] column",
        "mask.8: public.missing is not a captured table -- fix: fix [[mask]] table (\"schema.table\") "
        "or [capture] tables",
        "mask.9: public.p.g is a generated or identity column -- fix: mask the columns it is computed "
        "from, or none",
        "public.q.p_id references public.p.id (q_p_id_fkey), which has no mask: the masked values "
        "would break the foreign key -- fix: put the rule on public.p.id (it applies to "
        "public.q.p_id too)",
        "public.p.code: the masked values are 32 characters long, the column is character "
        "varying(13) -- fix: a kind that fits (README.md, [[mask]])",
        "public.p.born: value 'someday' is not a valid date (invalid input syntax for type date: "
        "\"someday\") -- fix: a kind that fits (README.md, [[mask]])",
        "public.p.n: kind hash needs a text or uuid column, not integer (mask other types with kind "
        "value or null: a digest of an integer key would collide and move sequences) -- fix: a kind "
        "that fits (README.md, [[mask]])",
        "public.p.u: kind email needs a text column (text, varchar, char, citext), not uuid -- fix: "
        "a kind that fits (README.md, [[mask]])",
        "public.p.tag: a 8-character digest may collide on unique constraint p_tag_key: use length "
        "= 16 or more -- fix: a kind that fits (README.md, [[mask]])",
        "public.p.pin: kind null on a NOT NULL column -- fix: a kind that fits (README.md, [[mask]])",
    ])
    assert_nothing_created(source_dsn, target_dsn, workdir)


def test_collisions_checks_and_lengths_are_counted_on_production_rows(source_dsn, target_dsn, workdir):
    n = 1500
    execute(source_dsn,
            "CREATE TABLE tags (id int PRIMARY KEY, tag text NOT NULL UNIQUE)",
            f"INSERT INTO tags SELECT i, 'tag-' || i FROM generate_series(1, {n}) i",
            "CREATE TABLE contacts (id int PRIMARY KEY, email text CHECK (email LIKE '%@shop.test'), "
            "short varchar(20))",
            "INSERT INTO contacts VALUES (1, 'a@shop.test', 'b@shop.test'), (2, NULL, 'c@x.test'), "
            "(3, 'd@shop.test', NULL)")
    write_config(workdir, source_dsn, extra=rule("tags", "tag", regex="^.*$", replace="t", unique=True, length=4)
                 + rule("contacts", "email", kind="email") + rule("contacts", "short", kind="email", **{"keep-domain": True}))
    collisions = n - len({digest(f"tag-{i}", 4) for i in range(1, n + 1)})
    assert collisions > 1  # 1,500 four-digit digests do collide
    lines = refusals(start(workdir, target_dsn, check=False))
    assert sorted(lines) == sorted([
        f"public.tags.tag: masked values collide on unique constraint tags_tag_key: {collisions} "
        "collisions on production's rows -- fix: a longer `length`",
        "public.contacts.email: masked values break CHECK contacts_email_check on 2 rows -- fix: a mask "
        "whose values the check accepts",
        "public.contacts.short: 2 masked values are longer than character varying(20) allows -- fix: "
        "a shorter mask"])
    assert_nothing_created(source_dsn, target_dsn, workdir)


def test_a_key_rule_follows_its_foreign_keys_or_is_refused(source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE TABLE a (id text PRIMARY KEY)",
            "CREATE TABLE b (id int PRIMARY KEY, a_id text REFERENCES a(id))",
            "CREATE TABLE c (id int PRIMARY KEY, a_id text REFERENCES a(id))")
    write_config(workdir, source_dsn, extra=rule("a", "id", kind="hash") + rule("b", "a_id", kind="hash")
                 + rule("c", "a_id", kind="hash", length=40))
    lines = refusals(start(workdir, target_dsn, check=False))
    assert lines == [
        "public.c.a_id references public.a.id (c_a_id_fkey) but is masked differently (kind hash "
        "(length = 40) vs kind hash) -- fix: drop one of the two rules: a key's rule applies to "
        "every column that references it"]  # b's rule is the same as a's: accepted
    assert_nothing_created(source_dsn, target_dsn, workdir)


SHOP = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TABLE accounts (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, phone text UNIQUE, name text,
                       updated_at timestamptz NOT NULL DEFAULT '2020-01-01');
CREATE TABLE orders (id int PRIMARY KEY, account_id uuid NOT NULL REFERENCES accounts(id), total int,
                     UNIQUE (id, account_id));
CREATE TABLE tickets (id int PRIMARY KEY, account_id uuid REFERENCES accounts(id),
                      contact text REFERENCES accounts(email));
CREATE TABLE order_notes (id int PRIMARY KEY, order_id int, account_id uuid,
                          FOREIGN KEY (order_id, account_id) REFERENCES orders (id, account_id));
CREATE TABLE members (tenant int, email citext, PRIMARY KEY (tenant, email));
CREATE TABLE invites (id int PRIMARY KEY, tenant int, email citext, code char(20) UNIQUE,
                      FOREIGN KEY (tenant, email) REFERENCES members);
CREATE TABLE audit (n serial PRIMARY KEY, what text);
CREATE TABLE events (id int, at date, account_id uuid REFERENCES accounts(id), PRIMARY KEY (id, at))
    PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN NEW.updated_at = now(); RETURN NEW; END $$;
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO audit (what) VALUES (TG_TABLE_NAME || ' ' || TG_OP); RETURN NULL; END $$;
CREATE TRIGGER touch BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TRIGGER audit AFTER INSERT OR UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION audit();
CREATE TRIGGER audit AFTER INSERT OR UPDATE ON invites FOR EACH ROW EXECUTE FUNCTION audit();
"""
IDS = [str(uuid.UUID(int=i, version=4)) for i in (11, 12, 13)]
SHOP_ROWS = [
    "INSERT INTO accounts (id, email, phone, name) VALUES "
    f"('{IDS[0]}', 'alice.smith@x.test', '010-1111-2222', 'Alice'), "
    f"('{IDS[1]}', 'alice.jones@x.test', '010-3333-2222', 'Alicia'), "
    f"('{IDS[2]}', 'bob@y.test', NULL, NULL)",
    f"INSERT INTO orders VALUES (1, '{IDS[0]}', 10), (2, '{IDS[0]}', 20), (3, '{IDS[1]}', 30)",
    f"INSERT INTO tickets VALUES (1, '{IDS[0]}', 'alice.smith@x.test'), (2, '{IDS[2]}', NULL), "
    "(3, NULL, 'bob@y.test')",
    f"INSERT INTO order_notes VALUES (1, 1, '{IDS[0]}'), (2, 3, '{IDS[1]}'), (3, NULL, NULL)",
    "INSERT INTO members VALUES (1, 'Alice@X.test'), (2, 'alice@x.test')",
    "INSERT INTO invites VALUES (1, 1, 'alice@X.TEST', 'INV-1'), (2, 2, 'ALICE@x.test', 'INV-2')",
    f"INSERT INTO events VALUES (1, '2024-05-01', '{IDS[0]}'), (2, '2025-05-01', '{IDS[0]}')",
    "TRUNCATE audit",
]
SHOP_RULES = "".join([
    rule("public.accounts", "id", kind="hash"), rule("public.accounts", "email", kind="email"),
    rule("public.accounts", "phone", regex="[0-9]{4}$", replace="****", unique=True),
    rule("public.accounts", "name", value="Someone"),
    rule("public.tickets", "contact", kind="email"),  # written out, the same as its key's: accepted
    rule("public.members", "email", kind="email", **{"keep-domain": True}),
    rule("public.invites", "code", kind="hash", length=16, prefix="i-")])


def m_uuid(v: str) -> str:
    return str(uuid.UUID(digest(v, 32)))


def m_email(v: str, domain: str = "example.test") -> str:
    return f"u{digest(v, 16)}@{domain}"


def test_hash_and_email_keep_keys_references_and_constraints(source_dsn, target_dsn, workdir):
    execute(source_dsn, SHOP, *SHOP_ROWS)
    execute(target_dsn, "CREATE EXTENSION citext")  # pg_dump -n leaves extensions out
    write_config(workdir, source_dsn, extra=SHOP_RULES)
    out = start(workdir, target_dsn)
    assert "(12 masked columns)" in out.stdout
    a = {i: m_uuid(i) for i in IDS}
    assert query(target_dsn, "SELECT id::text, email, phone, name, updated_at::text FROM accounts "
                 "ORDER BY email") == sorted([
        (a[IDS[0]], m_email("alice.smith@x.test"), f"010-1111-****-{digest('010-1111-2222', 12)}",
         "Someone", "2020-01-01 00:00:00+00"),
        (a[IDS[1]], m_email("alice.jones@x.test"), f"010-3333-****-{digest('010-3333-2222', 12)}",
         "Someone", "2020-01-01 00:00:00+00"),
        (a[IDS[2]], m_email("bob@y.test"), None, None, "2020-01-01 00:00:00+00")], key=lambda r: r[1])
    # the same input gives the same masked value in every table, through every foreign key
    assert query(target_dsn, "SELECT id, account_id::text FROM orders ORDER BY id") == [
        (1, a[IDS[0]]), (2, a[IDS[0]]), (3, a[IDS[1]])]
    assert query(target_dsn, "SELECT id, account_id::text, contact FROM tickets ORDER BY id") == [
        (1, a[IDS[0]], m_email("alice.smith@x.test")), (2, a[IDS[2]], None), (3, None, m_email("bob@y.test"))]
    assert query(target_dsn, "SELECT id, order_id, account_id::text FROM order_notes ORDER BY id") == [
        (1, 1, a[IDS[0]]), (2, 3, a[IDS[1]]), (3, None, None)]
    assert query(target_dsn, "SELECT tableoid::regclass::text, account_id::text FROM events ORDER BY id") == [
        ("events_2024", a[IDS[0]]), ("events_2025", a[IDS[0]])]  # a partitioned table follows too
    # citext: values equal to citext get one digest (lower-cased), the domain is kept as written
    assert query(target_dsn, "SELECT tenant, email::text FROM members ORDER BY tenant") == [
        (1, m_email("alice@x.test", "X.test")), (2, m_email("alice@x.test", "x.test"))]
    assert query(target_dsn, "SELECT id, email::text, code FROM invites ORDER BY id") == [
        (1, m_email("alice@x.test", "X.TEST"), f"i-{digest('INV-1', 16)}  "),
        (2, m_email("alice@x.test", "x.test"), f"i-{digest('INV-2', 16)}  ")]
    # constraints and triggers are built on the masked rows; the masking fired no trigger
    catalog = ("SELECT conrelid::regclass::text, conname, contype FROM pg_constraint WHERE "
               "connamespace = 'public'::regnamespace ORDER BY 1, 2")
    assert query(target_dsn, catalog) == query(source_dsn, catalog)
    assert len(query(target_dsn, catalog)) == 22  # 16 + a key and a foreign key on events and each partition
    assert query(target_dsn, "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == [(3,)]
    assert query(target_dsn, "SELECT count(*) FROM audit") == [(0,)]
    log = SQLiteLog(workdir / "pgcarry-log.db")
    try:
        manifest = log.read_manifest()
    finally:
        log.close()
    notes = {m.column: m for m in manifest.tables["public.order_notes"].masks}
    assert notes["account_id"].via == ["public.accounts", "id"] and notes["account_id"].linked
    contact = next(m for m in manifest.tables["public.tickets"].masks if m.column == "contact")
    assert contact.via == ["public.accounts", "email"] and contact.linked
    assert {m.column: (m.kind, m.linked) for m in manifest.tables["public.accounts"].masks} == {
        "id": ("hash", True), "email": ("email", True), "phone": ("regex", False), "name": ("value", False)}
    assert manifest.tables["public.accounts"].masked_columns == ["id", "email", "phone", "name"]
    assert manifest.tables["public.members"].mask_key == ["tenant", "email"]
    assert SALT not in (workdir / "pgcarry-log.db").read_bytes().decode("latin-1")
    assert re.fullmatch(r"[0-9a-f]{16}", manifest.mask_salt_check)


def test_a_failed_masking_leaves_no_unmasked_row(source_dsn, target_dsn, tmp_path):
    from pgcarry.capture.copy import dump, restore

    execute(source_dsn, "CREATE TABLE secrets (id int PRIMARY KEY, card text)",
            "INSERT INTO secrets VALUES (1, '4111-1111'), (2, '4222-2222')")
    dump(source_dsn, None, ["public"], tmp_path / "dump", 1)

    def fail() -> None:
        assert query(target_dsn, "SELECT count(*) FROM secrets") == [(2,)]  # between data and masks
        assert query(target_dsn, "SELECT count(*) FROM pg_index WHERE indrelid = 'secrets'::regclass"
                     ) == [(0,)]  # no index, no key yet: post-data comes after the masks
        raise RuntimeError("masking failed")

    with pytest.raises(RuntimeError, match="masking failed"):
        restore(target_dsn, tmp_path / "dump", 2, fail)
    assert query(target_dsn, "SELECT count(*) FROM secrets") == [(0,)]


def _uncomment_masks(text: str) -> str:
    """The [[mask]] blocks `pgcarry init` suggested, uncommented."""
    out, inside = [], False
    for line in text[text.index("# Candidates:"):].splitlines():
        inside = inside or line == "# [[mask]]"
        if inside and line == "#":
            inside = False
        elif inside:
            out.append(line.removeprefix("# "))
    return "\n".join(out) + "\n"


def test_init_suggests_rules_that_start_accepts(source_dsn, target_dsn, workdir):
    execute(source_dsn,
            "CREATE TABLE people (id uuid PRIMARY KEY, email varchar(40) NOT NULL UNIQUE, "
            "phone text, first_name text, birth_date date, ssn varchar(11) UNIQUE, note text)",
            "CREATE TABLE orders (id int PRIMARY KEY, buyer_email varchar(40) REFERENCES people(email))",
            "INSERT INTO people VALUES (gen_random_uuid(), 'kim@x.test', '010-1234-5678', 'Kim', "
            "'1990-01-02', '900102-1234', 'n'), (gen_random_uuid(), 'lee@x.test', NULL, 'Lee', NULL, NULL, 'm')",
            "INSERT INTO orders VALUES (1, 'kim@x.test')")
    proc = cli(workdir, "init", "--source", source_dsn)
    text = (workdir / "pgcarry.toml").read_text()
    suggested = _uncomment_masks(text)
    assert suggested == (
        '[[mask]]\ntable = "public.people"\ncolumn = "email"\n'
        'kind = "email"  # unique: a salted digest keeps the values distinct\n'
        '[[mask]]\ntable = "public.people"\ncolumn = "phone"\nregex = "[0-9]"\nreplace = "0"\n'
        'flags = "g"  # keeps the shape: 000-0000-0000\n'
        + rule("public.people", "first_name", value="MASKED") + rule("public.people", "birth_date", kind="null"))
    assert "# (public.orders.buyer_email references public.people.email: it takes its rule)" in text
    assert "# (public.people.ssn, character varying(11): no simple rule fits, see README.md)" in text
    assert "wrote" in proc.stdout
    (workdir / "pgcarry.toml").write_text(text.replace('path = "pgcarry-log.db"', 'path = "pgcarry-log.db"\n\n'
                                                       '[masking]\nsalt = "${PGCARRY_MASK_SALT}"\n\n' + suggested))
    start(workdir, target_dsn)
    assert query(target_dsn, "SELECT email, phone, first_name, birth_date FROM people ORDER BY email") == sorted([
        (f"u{digest('kim@x.test', 16)}@example.test", "000-0000-0000", "MASKED", None),
        (f"u{digest('lee@x.test', 16)}@example.test", None, "MASKED", None)])
    assert query(target_dsn, "SELECT buyer_email FROM orders") == [(f"u{digest('kim@x.test', 16)}@example.test",)]


def test_hostile_names_are_masked_and_restored(source_dsn, target_dsn, workdir):
    execute(source_dsn,
            'CREATE TABLE "Odd ""T""; x" (id int PRIMARY KEY, "e-mail ""x""" text UNIQUE, "Näme" text)',
            'CREATE TABLE "a.b" (id int PRIMARY KEY, "ref col" text REFERENCES "Odd ""T""; x" ("e-mail ""x"""))',
            'CREATE TABLE "no key" ("v,1" text, "e-mail ""x""" text)',
            """INSERT INTO "Odd ""T""; x" VALUES (1, 'o''neil@x.test', 'O''Neil'), (2, 'k@x.test', 'K')""",
            """INSERT INTO "a.b" VALUES (1, 'o''neil@x.test'), (2, 'k@x.test')""",
            """INSERT INTO "no key" VALUES ('a', 'o''neil@x.test'), ('a', 'o''neil@x.test')""")
    write_config(workdir, source_dsn, extra=rule('public.Odd "T"; x', 'e-mail "x"', kind="email")
                 + rule('public.Odd "T"; x', "Näme", value="N") + rule("public.no key", 'e-mail "x"', kind="hash"))
    start(workdir, target_dsn)
    m = f"u{digest(chr(111) + chr(39) + 'neil@x.test', 16)}@example.test"
    assert query(target_dsn, 'SELECT "e-mail ""x""", "Näme" FROM "Odd ""T""; x" ORDER BY id') == [
        (m, "N"), (f"u{digest('k@x.test', 16)}@example.test", "N")]
    assert query(target_dsn, 'SELECT "ref col" FROM "a.b" ORDER BY id')[0] == (m,)
    execute(source_dsn, """UPDATE "Odd ""T""; x" SET "Näme" = 'Kay' WHERE id = 2""")
    cli(workdir, "capture", "--until", "current", env=ENV)
    rep = cli(workdir, "rehearse", "--from", target_dsn, "--keep", "--json", check=False, env=ENV)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    scratch = with_options(source_dsn, dbname="pgcarry_rehearse_pgcarry")
    try:
        assert query(scratch, 'SELECT id, "e-mail ""x""", "Näme" FROM "Odd ""T""; x" ORDER BY id') == [
            (1, "o'neil@x.test", "O'Neil"), (2, "k@x.test", "Kay")]
        assert query(scratch, 'SELECT "ref col" FROM "a.b" ORDER BY id') == [("o'neil@x.test",), ("k@x.test",)]
        assert query(scratch, 'SELECT * FROM "no key"') == [("a", "o'neil@x.test"), ("a", "o'neil@x.test")]
    finally:
        execute(with_options(source_dsn, dbname="postgres"), "DROP DATABASE pgcarry_rehearse_pgcarry WITH (FORCE)")


def test_cutover_refuses_another_salt_before_the_fence(source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE TABLE p (id int PRIMARY KEY, email text UNIQUE)",
            "INSERT INTO p VALUES (1, 'a@x.test')")
    write_config(workdir, source_dsn, extra=rule("p", "email", kind="email"))
    start(workdir, target_dsn)
    other = cli(workdir, "cutover", "--from", target_dsn, "--yes", check=False,
                env={"PGCARRY_MASK_SALT": "another-salt-0123456789"})
    assert other.returncode == 2 and other.stderr == (
        "pgcarry: error: the masking salt differs from the one used at start (hint: set "
        "PGCARRY_MASK_SALT (or [masking] salt) to the salt used at start)\n")
    execute(target_dsn, "ALTER TABLE p RENAME COLUMN id TO pid")
    renamed = cli(workdir, "cutover", "--from", target_dsn, "--yes", check=False, env=ENV)
    assert renamed.returncode == 2 and renamed.stderr == (
        "pgcarry: error: public.p has no column 'id', the key its masked rows are matched on (hint: "
        "map the rename in [replay.tables] rename-columns / rename-to)\n")
    write_config(workdir, source_dsn)  # the rules removed: the manifest still needs the salt
    none = cli(workdir, "rehearse", "--from", target_dsn, check=False, env={"PGCARRY_MASK_SALT": ""})
    assert none.returncode == 2 and "the test copy was masked with a salt, and none is given" in none.stderr
    assert query(source_dsn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgcarry'") == [(1,)]
    assert query(source_dsn, "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON "
                 "d.oid = s.setdatabase WHERE d.datname = current_database()") == [(0,)]  # not fenced
    assert query(source_dsn, "SELECT count(*) FROM pg_database WHERE datname LIKE 'pgcarry_rehearse%'") == [(0,)]
