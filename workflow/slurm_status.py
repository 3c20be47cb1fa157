"""A guard on the SLURM executor plugin's job-state queries, so that no job is waited on forever.

    # the Snakefile, in runs with --executor slurm (profiles/slurm), loads this file by path
    # (a top-level `workflow` package would hide Snakemake's `workflow` object) and calls
    install(snakemake_executor_plugin_slurm)

    # what it does to one answer of `squeue`/`sacct` ({SLURM job id: state}):
    StatusGuard(query).settle({"12": "CANCELLED by 0"})   # -> {"12": "CANCELLED"}

snakemake-executor-plugin-slurm 2.8 polls job states with `squeue` or `sacct` (the profile's
`slurm-status-command`; it switches to sacct by itself when the cluster's MinJobAge is short)
and waits for every job whose state it does not take for an end. Three such states end a
job for good, so the plugin would wait forever, and this guard turns them into failures
that Snakemake's retries take over (a retried training job resumes from its checkpoint):

- sacct's `CANCELLED by <uid>` (a job someone scancel'ed): read as `CANCELLED`;
- `PREEMPTED` still shown on a query at least GRACE_S after the first one (SLURM
  requeues a preempted job it may requeue at once, as PENDING under the same id; one it
  does not stays PREEMPTED): read as `FAILED`; also `SPECIAL_EXIT` and `REVOKED`;
- a job that a query showed before and no longer shows (squeue forgets a finished job
  MinJobAge seconds after its end): its state is asked of `sacct -j <id>`; a job that
  sacct does not know either is reported PENDING (waited on) and counts as `FAILED` when
  a query GRACE_S or more later still leaves it out.

The guard wraps the plugin's module-level coroutine `query_job_status(command, logger)`,
which returns ({job id: state}, seconds) or (None, None); tests/unit/test_slurm_status.py
checks that the installed plugin still has it, so an upgrade that renames it fails there
and in install(), not silently on a cluster.
"""
import shlex
import subprocess
import time

GRACE_S = 5.0
# States the plugin 2.8 neither takes for a success nor for a failure, but that SLURM never
# leaves: a job held after its end, or one revoked by a federation.
ENDED_FOR_GOOD = {"SPECIAL_EXIT": "FAILED", "REVOKED": "FAILED"}
# States after which the plugin stops waiting for a job (success or failure).
FINAL_STATES = {"COMPLETED", "BOOT_FAIL", "CANCELLED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "TIMEOUT", "ERROR"}


def plain_state(state: str) -> str:
    """The state's first word: sacct writes `CANCELLED by 1000`, squeue `CANCELLED`."""
    return state.split()[0] if state.strip() else state


def sacct_state(job_id: str, timeout_s: float = 30.0) -> str:
    """The job's state according to slurmdbd (`sacct -j`), or "" when sacct cannot tell."""
    command = ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobIdRaw,State"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in done.stdout.splitlines():
        found_id, _, state = line.partition("|")
        if found_id.strip() == job_id and state.strip():
            return plain_state(state)
    return ""


class StatusGuard:
    """Wraps a `query_job_status(command, logger)` coroutine; see the module docstring."""

    def __init__(self, query, look_up=sacct_state, clock=time.monotonic):
        self.query = query
        self.look_up = look_up
        self.clock = clock
        self.last_state = {}        # job id -> the state last reported for it
        self.doubtful_since = {}    # job id -> when a query first showed it PREEMPTED or left it out

    async def __call__(self, command, logger):
        states, seconds = await self.query(command, logger)
        if states is None:
            return states, seconds
        settled = self.settle(states)
        for job_id, state in settled.items():
            if state != states.get(job_id):
                logger.warning(f"SLURM job {job_id}: {states.get(job_id, 'no longer listed by ' + _tool(command))}"
                               f", counted as {state} (workflow/slurm_status.py)")
        return settled, seconds

    def settle(self, states: dict) -> dict:
        """states as the plugin must read them, with the jobs earlier answers showed added."""
        now = self.clock()
        settled = {job_id: ENDED_FOR_GOOD.get(plain_state(raw), plain_state(raw)) for job_id, raw in states.items()}
        for job_id, last in self.last_state.items():
            if job_id in settled:
                continue
            if last in FINAL_STATES:
                settled[job_id] = last  # ended and reported already; the plugin no longer asks
            else:
                looked_up = self.look_up(job_id)
                settled[job_id] = ENDED_FOR_GOOD.get(looked_up, looked_up) or "FORGOTTEN"
        for job_id, state in settled.items():
            # A state that may still change (a requeue under way, a query that missed a job):
            # taken for a failure once a later query, GRACE_S on, says the same.
            if state in ("PREEMPTED", "FORGOTTEN"):
                since = self.doubtful_since.setdefault(job_id, now)
                waiting = "PENDING" if state == "FORGOTTEN" else state  # both are waited on by the plugin
                settled[job_id] = "FAILED" if now - since >= GRACE_S else waiting
            else:
                self.doubtful_since.pop(job_id, None)
        self.last_state.update(settled)
        return settled


def _tool(command: str) -> str:
    words = shlex.split(command)
    return words[0] if words else "the status command"


def install(plugin_module):
    """Wrap plugin_module.query_job_status (snakemake_executor_plugin_slurm) in a StatusGuard, once."""
    query = getattr(plugin_module, "query_job_status", None)
    if query is None:
        raise RuntimeError(
            f"{plugin_module.__name__} {getattr(plugin_module, '__version__', '')} has no query_job_status: "
            "workflow/slurm_status.py cannot guard its job-state queries; install the plugin version of "
            "requirements.txt")
    if not isinstance(query, StatusGuard):
        plugin_module.query_job_status = StatusGuard(query)
    return plugin_module.query_job_status
