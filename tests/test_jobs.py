"""Plan jobs (matcher.jobs) and the keys commands, in process."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

import matcher
from matcher._errors import MatcherError
from matcher.cli import main
from matcher.jobs import PlanWorker
from matcher.report import REPORT_NAME, REPORT_TITLE, WHAT_IF_TITLE
from matcher.store import open_store

from .conftest import TINY_NEEDS, TINY_PARTNERS


def test_a_worker_stores_why_a_job_failed(tmp_path: Path, caplog) -> None:
    st = open_store(tmp_path / "s.db")
    known = st.create_plan({"objective": "distance"}, actor="k")
    unexpected = st.create_plan({"objective": "distance"}, actor="k")

    def run(store, record):
        if record.plan_id == known:
            raise MatcherError("the needs table has no rows")
        raise RuntimeError("/srv/secret: boom")

    worker = PlanWorker(st, run=run)
    with caplog.at_level(logging.ERROR, logger="matcher.jobs"):
        assert worker.run_once() == known
        assert worker.run_once() == unexpected
    assert worker.run_once() is None
    assert st.get_plan(known).error == "the needs table has no rows"
    failed = st.get_plan(unexpected)
    assert failed.status == "failed" and "see the server log" in failed.error
    assert "secret" not in failed.error and any("secret" in r.getMessage() or r.exc_info
                                                for r in caplog.records)  # fmt: skip


def test_a_worker_whose_lease_was_taken_over_stores_nothing(tmp_path: Path, caplog) -> None:
    st = open_store(tmp_path / "s.db")
    plan_id = st.create_plan({}, actor="k")

    def run(store, record):  # meanwhile the lease expired and another worker took the plan
        with store._write() as conn:
            conn.execute("UPDATE plans SET worker = 'other' WHERE plan_id = ?", (plan_id,))
        raise MatcherError("late")

    with caplog.at_level(logging.WARNING, logger="matcher.jobs"):
        assert PlanWorker(st, run=run).run_once() == plan_id
    assert st.get_plan(plan_id).status == "running"  # the other worker's, untouched
    assert any("not stored" in r.getMessage() for r in caplog.records)


def _tiny_store(tmp_path: Path):
    st = open_store(tmp_path / "s.db")
    (tmp_path / "n.csv").write_text(TINY_NEEDS, encoding="utf-8")
    (tmp_path / "p.csv").write_text(TINY_PARTNERS, encoding="utf-8")
    st.replace_needs(matcher.read_needs(tmp_path / "n.csv").frame, actor="cli")
    st.replace_partners(matcher.read_partners(tmp_path / "p.csv").frame, actor="cli")
    return st


def test_a_job_makes_the_report_it_was_asked_for_and_its_scenario_too(tmp_path: Path) -> None:
    st = _tiny_store(tmp_path)
    params = {"objective": "distance", "volunteer_points": "grid"}
    plain = st.create_plan(params, actor="k")
    asked = st.create_plan(params | {"report": True}, actor="k")
    assert PlanWorker(st).run_once() == plain and PlanWorker(st).run_once() == asked
    assert REPORT_NAME not in st.get_plan(plain).files
    text = st.plan_file(asked, REPORT_NAME).decode("utf-8")
    assert text.startswith("<!DOCTYPE html>") and f"<title>{REPORT_TITLE}</title>" in text
    # the job's option is not a MatchConfig parameter: the plan is the one without it
    assert st.plan_file(asked, "assignments.csv") == st.plan_file(plain, "assignments.csv")
    assert st.get_plan(asked).summary["parameters"] == st.get_plan(plain).summary["parameters"]
    what_if = st.create_plan(
        params | {"report": True, "scenario": {"base_plan": asked, "change": {}}}, actor="k"
    )
    assert PlanWorker(st).run_once() == what_if
    assert f"<title>{WHAT_IF_TITLE}</title>" in st.plan_file(what_if, REPORT_NAME).decode()


def test_a_plan_is_never_done_without_the_report_it_promised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    import matcher.jobs

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory drawing a map")

    monkeypatch.setattr(matcher.jobs, "report_html", broken)
    st = _tiny_store(tmp_path)
    plan_id = st.create_plan({"objective": "distance", "report": True}, actor="k")
    with caplog.at_level(logging.ERROR, logger="matcher.jobs"):
        assert PlanWorker(st).run_once() == plan_id
    failed = st.get_plan(plan_id)
    assert failed.status == "failed" and not failed.files
    assert st.plan_file(plan_id, "summary.json") is None


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    db = str(tmp_path / "k.db")
    runner = CliRunner()
    made = runner.invoke(main, ["keys", "create", "--role", "planner", "--db", db,
                                "--label", "=HYPERLINK(1)"])  # fmt: skip
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    listed = runner.invoke(main, ["keys", "list", "--db", db])
    assert listed.exit_code == 0 and key[11:] not in listed.stdout
    row = listed.stdout.splitlines()[1].split("\t")
    assert row[1] == "planner" and row[5] == "'=HYPERLINK(1)" and row[4] == ""
    assert runner.invoke(main, ["keys", "revoke", row[0], "--db", db]).exit_code == 0
    assert runner.invoke(main, ["keys", "list", "--db", db]).stdout.splitlines()[1].split("\t")[4]
    bad = runner.invoke(main, ["keys", "revoke", "key_nope", "--db", db])
    assert bad.exit_code == 2 and "no such key" in bad.stderr
    long = runner.invoke(main, ["keys", "create", "--role", "admin", "--db", db,
                                "--label", "x" * 600])  # fmt: skip
    assert long.exit_code == 2 and "label" in long.stderr
