import sqlite3

import pytest

from workspace.store import SCHEMA_VERSION, Store


def test_created_with_schema_version_and_wal(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    assert store.schema_version == SCHEMA_VERSION
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_model_versions_are_never_overwritten(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.add_model_version("orig", path="/m.pt", sha256="abc")
    row = store.add_model_version("v1-w-aug", path="/v1.pt", parent="orig", method="w-aug", rho=0.3,
                                  targets=[["cat", "dog"]], metrics={"accuracy": 0.9})
    assert row["targets"] == [["cat", "dog"]] and row["metrics"] == {"accuracy": 0.9}
    with pytest.raises(ValueError, match="already exists"):
        store.add_model_version("orig", path="/other.pt")
    assert [v["id"] for v in store.list_model_versions()] == ["orig", "v1-w-aug"]
    assert store.get_model_version("orig")["path"] == "/m.pt"


def test_runs_and_metrics(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    run = store.create_run(method="w-bn", targets=[["a", "b"]], rho=0.5, seed=1, config={"lr": 0.01})
    store.update_run(run, status="running", progress=0.5, log_tail="epoch 1")
    store.add_metric(run, epoch=1, step=10, accuracy=0.8, target_error=0.2, extra={"confusion": [[1]]})
    got = store.get_run(run)
    assert got["status"] == "running" and got["config"] == {"lr": 0.01} and got["progress"] == 0.5
    assert store.run_metrics(run)[0]["extra"] == {"confusion": [[1]]}
    with pytest.raises(ValueError):
        store.update_run(run, status="exploded")


def test_second_review_updates_the_first_and_survives_reopen(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.upsert_review("association", "triangle|grass", model_version="orig", verdict="unsure", note="hm")
    first = store.get_review("association", "triangle|grass", model_version="orig")
    store.upsert_review("association", "triangle|grass", model_version="orig", verdict="spurious", note="grass")
    reopened = Store(tmp_path / "s.sqlite")
    rows = reopened.list_reviews("association")
    assert len(rows) == 1 and rows[0]["verdict"] == "spurious" and rows[0]["note"] == "grass"
    assert rows[0]["created_at"] == first["created_at"] and rows[0]["updated_at"] >= first["updated_at"]
