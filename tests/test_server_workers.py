"""``matcher serve --workers N``: several processes on one store, as a user runs them.

Each test starts a real ``matcher serve`` (pre-forked waitress workers sharing the port)
on a store of each backend, and talks to it over HTTP: the processes share the port and
the plan queue; a worker that dies is replaced; a plan whose worker was killed runs again
after its lease; ``matcher keys revoke`` stops a key in every process within seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from matcher.store import open_store

from .conftest import _matcher_command, _stop, start_server


def _children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(entry.name))
    return out


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")


def test_workers_share_the_port_a_dead_worker_is_replaced_and_revoked_keys_stop(
    store_url: str, tmp_path: Path
) -> None:
    where = store_url
    srv, proc = start_server(tmp_path, db=where, args=("--workers", "2", "--threads", "2"))
    exe = _matcher_command()
    cli: list[subprocess.Popen[str]] = []  # commands run alongside the steps they do not need

    def start_cli(*args: str) -> subprocess.Popen[str]:
        cli.append(subprocess.Popen([exe, *args, "--db", where], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True))  # fmt: skip
        return cli[-1]

    try:
        bad = start_cli("keys", "revoke", "key_nope")
        workers = _wait(lambda: len(_children(proc.pid)) == 2 and _children(proc.pid), 60,
                        "two worker processes")  # fmt: skip
        made = subprocess.run(
            [exe, "keys", "create", "--role", "outreach", "--db", where, "--label", "field team 3"],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        key = made.stdout.strip().splitlines()[-1]
        key_id = made.stderr.split("key ")[1].split(";")[0]
        # every request on a new connection: the kernel spreads them over both workers
        for _ in range(20):
            assert srv.call("GET", "/api/v1/me", key=key).status == 200
        listing = start_cli("keys", "list")
        # a worker killed is replaced, and the service goes on answering
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: len(_children(proc.pid) - {victim}) == 2, 60, "a new worker")
        for _ in range(10):
            assert srv.call("GET", "/api/v1/health").status == 200
        listed, _ = listing.communicate(timeout=120)
        assert listing.returncode == 0
        assert key_id in listed and "field team 3" in listed and key[11:] not in listed
        # revoked with the CLI: refused by every worker within seconds
        subprocess.run([exe, "keys", "revoke", key_id, "--db", where],
                       capture_output=True, timeout=120, check=True)  # fmt: skip
        revoked_at = time.monotonic()

        def all_refused() -> bool:
            return all(srv.call("GET", "/api/v1/me", key=key).status == 401 for _ in range(10))

        _wait(all_refused, 10, "the revoked key to be refused")
        assert time.monotonic() - revoked_at < 5
        listed = subprocess.run([exe, "keys", "list", "--db", where], capture_output=True,
                                text=True, timeout=120, check=True).stdout  # fmt: skip
        row = next(line for line in listed.splitlines() if line.startswith(key_id))
        assert row.split("\t")[4]  # revoked_at
        _, bad_err = bad.communicate(timeout=120)
        assert bad.returncode == 2 and "no such key" in bad_err and "Traceback" not in bad_err
        # the access log: one line per request, never a key
        log = srv.log.read_text()
        assert "GET /api/v1/me 200" in log and "GET /api/v1/me 401" in log
        assert key not in log and key[11:] not in log
    finally:
        _stop(proc)
        for command in cli:
            if command.poll() is None:
                command.kill()
            command.communicate()


def _state(pid: int) -> str:
    """The state letter of a process (Linux /proc): R, S, D, T (stopped), Z; "" if gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _kill_the_worker_running_a_plan(  # type: ignore[no-untyped-def]
    srv, proc, where: str, key: str
) -> tuple[str, str]:
    """Queue a plan and SIGKILL the worker process while it runs it; return its URL and id.

    The worker is stopped (SIGSTOP) first and the store read again: the plan is still
    running there, so the kill is mid-plan, however slow the machine. If the plan had
    already finished (it is about 5 s of work), the worker goes on and another plan is
    tried.
    """
    for _attempt in range(3):
        # a plan long enough to be caught running: equity floors and recruit sites
        r = srv.call("POST", "/api/v1/plans", key=key,
                     json_body={"min_coverage": 0.4, "recruit_k": 3})  # fmt: skip
        assert r.status == 202, r.text
        location, plan_id = r.headers["Location"], r.json()["plan_id"]
        with open_store(where) as st:
            running = _wait(
                lambda plan_id=plan_id: (rec := st.get_plan(plan_id)) is not None
                and rec.status != "queued" and rec,
                60,
                "the plan to run",
            )  # fmt: skip
            assert running.status in ("running", "done"), running
            if running.status == "running":
                holder = int(running.worker.split(":")[1])
                assert holder in _children(proc.pid)
                os.kill(holder, signal.SIGSTOP)
                _wait(lambda pid=holder: _state(pid) in ("T", "t", ""), 30, "the worker to stop")
                now = st.get_plan(plan_id)
                if now is not None and (now.status, now.worker) == ("running", running.worker):
                    os.kill(holder, signal.SIGKILL)  # the worker dies mid-plan
                    return location, plan_id
                os.kill(holder, signal.SIGCONT)
        srv.wait_plan(location, key, timeout=180)  # it finished first: another one
    raise AssertionError("three plans finished before their worker could be killed")


def test_a_plan_whose_worker_process_is_killed_runs_again_after_its_lease(
    store_url: str, tmp_path: Path
) -> None:
    where = store_url
    srv, proc = start_server(
        tmp_path,
        db=where,
        args=("--workers", "2", "--threads", "2"),
        # renewed every second: a plan runs again ~3 s after its worker died, and a busy
        # machine would have to hold up a renewal for 2 s to lose a live worker's lease
        env={"MATCHER_PLAN_LEASE_S": "3"},
    )
    try:
        planner = srv.keys["planner"]
        location, plan_id = _kill_the_worker_running_a_plan(srv, proc, where, planner)
        done = srv.wait_plan(location, planner, timeout=180)
        assert done["status"] == "done", done
        assert done["attempts"] == 2  # claimed again once its lease expired
        with open_store(where) as st:
            actions = [e.action for e in reversed(st.audit_entries(50, entity="plan",
                                                                   entity_id=plan_id))]  # fmt: skip
        assert actions == ["queue", "run", "requeue", "run", "done"], actions
    finally:
        _stop(proc)


def test_a_database_that_cannot_be_reached_is_one_line_and_exit_1(tmp_path: Path) -> None:
    out = subprocess.run(
        [_matcher_command(), "serve", "--db", "postgresql://matcher:s3cret@127.0.0.1:9/matcher"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect"), out.stderr
    assert "s3cret" not in out.stderr and "Traceback" not in out.stderr
