"""workflow/slurm_status.py, the guard on the SLURM plugin's job-state queries, on made-up
answers of squeue/sacct (tests/cluster/test_slurm.py cancels real jobs under both commands).
"""
import asyncio
import inspect

import pytest
import snakemake_executor_plugin_slurm

from tests.helpers.slurm import slurm_status


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Logger:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(text)


def _guard(sacct_knows=None):
    clock = Clock()
    guard = slurm_status.StatusGuard(query=None, look_up=lambda job_id: (sacct_knows or {}).get(job_id, ""),
                                     clock=clock)
    return guard, clock


def test_cancelled_by_a_user_is_cancelled():
    guard, _ = _guard()
    assert guard.settle({"7": "CANCELLED by 0", "8": "RUNNING", "9": "CANCELLED+"}) == {
        "7": "CANCELLED", "8": "RUNNING", "9": "CANCELLED+"}


def test_a_preempted_job_fails_when_a_later_query_still_shows_it_preempted():
    guard, clock = _guard()
    assert guard.settle({"5": "PREEMPTED"}) == {"5": "PREEMPTED"}
    clock.now = slurm_status.GRACE_S - 0.1
    assert guard.settle({"5": "PREEMPTED"}) == {"5": "PREEMPTED"}
    clock.now = slurm_status.GRACE_S
    assert guard.settle({"5": "PREEMPTED"}) == {"5": "FAILED"}


def test_a_preempted_job_that_slurm_requeues_is_waited_on():
    guard, clock = _guard()
    guard.settle({"5": "PREEMPTED"})
    clock.now = 100.0
    assert guard.settle({"5": "PENDING"}) == {"5": "PENDING"}
    assert guard.settle({"5": "RUNNING"}) == {"5": "RUNNING"}


def test_states_slurm_never_leaves_are_failures():
    guard, _ = _guard()
    assert guard.settle({"1": "SPECIAL_EXIT", "2": "REVOKED"}) == {"1": "FAILED", "2": "FAILED"}


def test_a_job_squeue_forgot_gets_its_state_from_sacct():
    guard, _ = _guard(sacct_knows={"3": "COMPLETED", "4": "CANCELLED"})
    guard.settle({"3": "RUNNING", "4": "PENDING", "6": "RUNNING"})
    assert guard.settle({"6": "RUNNING"}) == {"3": "COMPLETED", "4": "CANCELLED", "6": "RUNNING"}


def test_a_job_nobody_knows_any_more_fails_after_the_grace_time_not_at_once():
    guard, clock = _guard()
    guard.settle({"3": "RUNNING"})
    assert guard.settle({}) == {"3": "PENDING"}  # one answer that leaves it out: waited on
    clock.now = slurm_status.GRACE_S
    assert guard.settle({}) == {"3": "FAILED"}
    clock.now = 2 * slurm_status.GRACE_S
    assert guard.settle({}) == {"3": "FAILED"}  # stays failed; the plugin no longer asks


def test_a_job_that_reappears_is_not_failed():
    guard, clock = _guard()
    guard.settle({"3": "RUNNING"})
    guard.settle({})
    clock.now = slurm_status.GRACE_S
    assert guard.settle({"3": "RUNNING"}) == {"3": "RUNNING"}
    clock.now = 2 * slurm_status.GRACE_S
    assert guard.settle({}) == {"3": "PENDING"}  # a new absence starts a new grace time


def test_a_finished_job_that_disappears_keeps_its_state_without_asking_sacct():
    asked = []
    guard = slurm_status.StatusGuard(query=None, look_up=asked.append, clock=Clock())
    guard.settle({"3": "COMPLETED"})
    assert guard.settle({}) == {"3": "COMPLETED"} and asked == []


def test_the_wrapped_query_logs_what_it_changed_and_passes_failures_through():
    answers = [({"7": "CANCELLED by 0"}, 0.1), (None, None)]

    async def query(command, logger):
        return answers.pop(0)

    guard = slurm_status.StatusGuard(query, look_up=lambda job_id: "", clock=Clock())
    logger = Logger()
    assert asyncio.run(guard("sacct -X --name run", logger)) == ({"7": "CANCELLED"}, 0.1)
    assert logger.lines == ["SLURM job 7: CANCELLED by 0, counted as CANCELLED (workflow/slurm_status.py)"]
    assert asyncio.run(guard("sacct -X --name run", logger)) == (None, None)


def test_the_installed_plugin_has_the_query_the_guard_wraps(monkeypatch):
    query = snakemake_executor_plugin_slurm.query_job_status
    assert inspect.iscoroutinefunction(query) or isinstance(query, slurm_status.StatusGuard)
    monkeypatch.setattr(snakemake_executor_plugin_slurm, "query_job_status", query)
    guard = slurm_status.install(snakemake_executor_plugin_slurm)
    assert snakemake_executor_plugin_slurm.query_job_status is guard
    assert slurm_status.install(snakemake_executor_plugin_slurm) is guard, "installed twice"


def test_install_names_the_fix_when_the_plugin_lacks_the_query():
    class Plugin:
        __name__ = "snakemake_executor_plugin_slurm"

    with pytest.raises(RuntimeError, match="requirements.txt"):
        slurm_status.install(Plugin())
