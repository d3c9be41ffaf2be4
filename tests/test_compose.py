"""docker-compose.yml is a playground nobody can run here (no Docker engine): parse it and check
the services, images, ports and the settings pgcarry depends on."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_images():
    services = _compose()["services"]
    assert set(services) == {"production", "test", "kafka"}
    prod = services["production"]
    assert prod["image"].endswith(":15")
    dockerfile = ROOT / prod["build"]["context"] / prod["build"]["dockerfile"]
    text = dockerfile.read_text()
    assert "FROM postgres:15" in text and "postgresql-15-wal2json" in text
    assert services["test"]["image"] == "postgres:15"
    assert services["kafka"]["image"].startswith("apache/kafka:")


def test_production_settings_and_ports():
    s = _compose()["services"]
    cmd = s["production"]["command"]
    assert cmd[0] == "postgres"
    settings = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "-c")
    assert settings["wal_level"] == "logical" and int(settings["max_replication_slots"]) >= 1
    assert s["production"]["ports"] == ["54321:5432"] and s["test"]["ports"] == ["54322:5432"]
    for name in ("production", "test"):
        assert s[name]["environment"]["POSTGRES_DB"] == "shop"


def test_kafka_is_one_kraft_node():
    env = _compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@localhost:9093"
    assert "PLAINTEXT://localhost:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert _compose()["services"]["kafka"]["ports"] == ["9092:9092"]
