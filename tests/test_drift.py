"""Production adds columns during capture (ALTER TABLE ... ADD COLUMN after T0): replay stops with
the drift and the config line that settles it; following the suggestion works (a column seen in
the log counts as captured, a typo is still refused early), and the dry run says what happens
to the column's values."""

from __future__ import annotations

import json

from tests.helpers import cli, cli_json, execute, query, write_config


def test_a_column_production_added_during_capture(source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE TABLE orders (id int PRIMARY KEY, status text)",
            "CREATE TABLE users (id int PRIMARY KEY, name text)",
            "INSERT INTO orders VALUES (1, 'new')", "INSERT INTO users VALUES (1, 'u')")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    execute(target_dsn, "ALTER TABLE users ADD COLUMN mobile text")  # the test side's own name
    execute(source_dsn, "ALTER TABLE orders ADD COLUMN \"gift note\" text",
            "ALTER TABLE users ADD COLUMN phone2 text",
            "INSERT INTO orders VALUES (2, 'new', 'for mum')",
            "UPDATE orders SET status = 'paid', \"gift note\" = 'late' WHERE id = 1",
            "INSERT INTO users VALUES (2, 'v', '010-2')", "UPDATE users SET phone2 = '010-1' WHERE id = 1")
    cli(workdir, "capture", "--until", "current")

    res = cli(workdir, "replay", "--to", target_dsn, check=False)
    assert res.returncode == 4
    assert "production added column gift note during capture" in res.stderr
    plan = cli_json(workdir, "replay", "--to", target_dsn, "--dry-run")
    resolve = {d["column"]: d["resolve"] for d in plan["drift"] if d["kind"] == "missing-column"}
    assert resolve == {
        "gift note": '[replay.tables."public.orders"] ignore-columns = ["gift note"]  '
                     '# or rename-columns = { "gift note" = "..." }',
        "phone2": '[replay.tables."public.users"] ignore-columns = ["phone2"]  '
                  '# or rename-columns = { "phone2" = "..." }'}

    with open(workdir / "pgcarry.toml", "a") as f:  # a typo is refused before anything runs
        f.write('\n[replay.tables."public.orders"]\nignore-columns = ["gift_note"]\n')
    res = cli(workdir, "replay", "--to", target_dsn, check=False)
    assert res.returncode == 2
    assert "replay.tables.\"public.orders\".ignore-columns: public.orders has no column 'gift_note'" \
        in res.stderr

    write_config(workdir, source_dsn, extra=(  # the suggestions, followed
        '[replay.tables."public.orders"]\nignore-columns = ["gift note"]\n'
        '[replay.tables."public.users"]\nrename-columns = { "phone2" = "mobile" }\n'))
    plan = cli_json(workdir, "replay", "--to", target_dsn, "--dry-run")
    assert sorted((d["kind"], d["table"], d["column"], d["detail"], d["blocking"])
                  for d in plan["drift"]) == [
        ("ignored-column", "public.orders", "gift note",
         "production's values of this column are dropped (ignore-columns)", False),
        ("renamed-column", "public.users", "phone2",
         "production's values of this column go to mobile (rename-columns)", False)]
    text = cli(workdir, "replay", "--to", target_dsn, "--dry-run").stdout
    assert "[info] ignored-column public.orders.gift note: production's values" in text
    cli(workdir, "replay", "--to", target_dsn)
    assert query(target_dsn, "SELECT * FROM orders ORDER BY id") == [(1, "paid"), (2, "new")]
    assert query(target_dsn, "SELECT * FROM users ORDER BY id") == [(1, "u", "010-1"), (2, "v", "010-2")]
    assert json.loads(cli(workdir, "verify", "--to", target_dsn, "--json").stdout)["ok"]
