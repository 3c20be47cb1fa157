"""The SLURM profile's shape, the test profile derived from it, and the test cluster's
scripts' config handling: no cluster, no Snakemake run (tests/workflow/test_slurm_profile.py
plans the default study through the profile; tests/cluster/test_slurm.py runs it on SLURM).
"""
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import slurm
from tests.helpers.slurm import (CPU_PROFILE, GPU_RULES, REAL_PROFILE, REPO, SLURM_DIR, WORKFLOW_FILES, derive_profile,
                                 local_rules, slurm_plan, workflow_rules)


def test_real_profile_gives_gpu_rules_one_gpu_and_nothing_in_slurm_extra():
    profile = derive_profile.read_profile(REAL_PROFILE)
    assert profile["executor"] == "slurm"
    for key in ("jobs", "latency-wait", "retries"):
        assert key in profile, f"profiles/slurm lacks {key}"
    # rerun-incomplete comes with the workflow's default profile (profiles/default):
    # tests/unit/test_default_profile.py checks the two combined.
    for key in ("slurm_account", "runtime", "mem_mb"):
        assert key in profile["default-resources"], f"default-resources lacks {key}"
    for rule in GPU_RULES:
        resources = profile["set-resources"][rule]
        assert resources["gpu"] == 1 and "gres" not in resources
        assert resources["slurm_partition"], rule
    every_resource_set = [profile["default-resources"], *profile["set-resources"].values()]
    for resources in every_resource_set:
        assert not re.search(r"--(gres|gpus)", str(resources.get("slurm_extra", "")))


def test_cpu_only_jobs_go_to_the_default_partition_not_the_gpu_one():
    # The jobs without a GPU (prepare_real_dataset, generate_corruptions, compare) get
    # default-resources: no partition there means the cluster's default one.
    profile = derive_profile.read_profile(REAL_PROFILE)
    assert "slurm_partition" not in profile["default-resources"]
    assert set(profile["set-resources"]) == set(GPU_RULES)
    header = (REAL_PROFILE / "config.yaml").read_text().split("\n\n")[0]
    sent = {"prepare_real_dataset", "generate_corruptions", "compare"}
    for rule in sent:
        assert rule in header and rule not in local_rules(), rule
    assert "fetch" in header and "localrule" in header


def test_train_and_evaluate_of_a_model_share_one_job_that_uses_the_threads_it_asks_for():
    profile = derive_profile.read_profile(REAL_PROFILE)
    # One group per oe variant: an oe_tune model (which needs its baseline model) would
    # otherwise share its baseline's job, and Snakemake would size that job for two GPUs.
    assert profile["groups"] == {rule: "model_{oe}" for rule in GPU_RULES}
    assert profile["group-components"] == {"model_{oe}": 1}
    # The plugin asks for as many cores as the job's threads (--cpus-per-task) unless a
    # cpus_per_* resource says otherwise; the steps pass {threads} to torch.
    assert set(profile["set-threads"]) == set(GPU_RULES)
    for rule in GPU_RULES:
        assert profile["set-threads"][rule] >= 1
        assert not {"cpus_per_gpu", "cpus_per_task"} & set(profile["set-resources"][rule]), rule
        assert "--threads {threads}" in (REPO / "workflow" / "rules" / f"{rule}.smk").read_text()


def test_cpu_only_profile_is_the_gpu_profile_without_gpus():
    gpu, cpu = derive_profile.read_profile(REAL_PROFILE), derive_profile.read_profile(CPU_PROFILE)
    resources = {"set-resources", "set-threads", "default-resources"}
    assert {k: v for k, v in cpu.items() if k not in resources} == {k: v for k, v in gpu.items() if k not in resources}
    assert cpu["default-resources"] == gpu["default-resources"]
    assert set(cpu["set-threads"]) == set(cpu["set-resources"]) == set(GPU_RULES)
    for rule in GPU_RULES:
        assert not {"gpu", "gres", "slurm_partition", "cpus_per_task", "cpus_per_gpu"} & set(cpu["set-resources"][rule])
        assert cpu["set-resources"][rule]["runtime"] >= gpu["set-resources"][rule]["runtime"]


def test_status_checks_start_soon_and_the_guard_is_installed():
    profile = derive_profile.read_profile(REAL_PROFILE)
    assert profile["slurm-status-command"] in ("squeue", "sacct")
    assert 1 <= profile["slurm-init-seconds-before-status-checks"] <= 40
    assert "guard_slurm_status_queries()" in (REPO / "Snakefile").read_text()


def test_every_setting_in_the_profiles_has_a_comment():
    for path in (REAL_PROFILE / "config.yaml", CPU_PROFILE / "config.yaml", SLURM_DIR / "profile" / "config.yaml"):
        previous = ""
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                explained = previous.startswith("#") or " # " in line
                assert explained, f"{path}:{number}: {stripped!r} has no comment above it"
            if stripped:
                previous = stripped


def test_merge_changes_only_what_the_overlay_names():
    real = {
        "jobs": 100,
        "default-resources": {"slurm_partition": "gpu", "mem_mb": 4000},
        "set-resources": {"train": {"gpu": 1, "cpus_per_gpu": 4}, "other": {"mem_mb": 1}},
    }
    overlay = {
        "latency-wait": 5,
        "default-resources": {"slurm_partition": "debug"},
        "set-resources": {"train": {"cpus_per_gpu": 1}},
    }
    merged = derive_profile.merge_profiles(real, overlay)
    assert merged == {
        "jobs": 100,
        "latency-wait": 5,
        "default-resources": {"slurm_partition": "debug", "mem_mb": 4000},
        "set-resources": {"train": {"gpu": 1, "cpus_per_gpu": 1}, "other": {"mem_mb": 1}},
    }
    assert real["set-resources"]["train"]["cpus_per_gpu"] == 4, "merge changed its input"


def test_derived_test_profile_keeps_the_real_gpu_request(tmp_path):
    path = derive_profile.write_test_profile(tmp_path / "profile")
    derived = yaml.safe_load(path.read_text())
    real = derive_profile.read_profile(REAL_PROFILE)
    assert derived["executor"] == real["executor"]
    assert derived["retries"] == real["retries"]
    assert derived["default-resources"]["slurm_partition"] == "debug"
    assert derived["slurm-init-seconds-before-status-checks"] == 2
    assert derived["groups"] == real["groups"]
    for rule in GPU_RULES:
        assert derived["set-resources"][rule]["gpu"] == real["set-resources"][rule]["gpu"]
        assert derived["set-resources"][rule]["slurm_partition"] == "debug"


def test_read_profile_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "config.yaml")):
        derive_profile.read_profile(tmp_path)


def test_set_resources_name_real_rules_and_no_rule_sets_its_own_resources():
    # A set-resources key that names no rule is silently ignored by Snakemake: a renamed
    # rule would lose its GPU. Resources live in the profiles only, so one file per
    # cluster says what every job asks for.
    rules = workflow_rules()
    assert set(GPU_RULES) <= rules
    for profile in map(derive_profile.read_profile, (REAL_PROFILE, CPU_PROFILE)):
        for key in ("set-resources", "set-threads", "groups"):
            assert set(profile[key]) <= rules, (key, set(profile[key]) - rules)
    for path in WORKFLOW_FILES:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            assert not re.match(r"\s+resources:", line), f"{path}:{number}: resources belong in profiles/"


def test_local_rules_parser_reads_block_and_inline_forms(tmp_path, monkeypatch):
    smk = tmp_path / "x.smk"
    smk.write_text(
        "localrules: all, fetch\n\nrule a:\n    shell: 'true'\n\n"
        "if True:\n    localrules:\n        fetch_b,  # why\n        aggregate_c,\n\nrule d:\n    shell: 'true'\n"
    )
    monkeypatch.setattr(slurm, "WORKFLOW_FILES", [smk])
    assert local_rules() == {"all", "fetch", "fetch_b", "aggregate_c"}
    assert workflow_rules() == {"a", "d"}


# --- the cluster scripts' config handling (no root, no daemons) -----------------


def _run_stop(state: Path, etc: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MNIST_SAFETY_SLURM_STATE": str(state), "MNIST_SAFETY_SLURM_ETC": str(etc)}
    return subprocess.run(["bash", str(SLURM_DIR / "stop.sh")], env=env, capture_output=True, text=True,
                          timeout=60)


def _start_sh_config(state: Path) -> str:
    return f"# Written by tests/slurm/start.sh: one node.\nStateSaveLocation={state}/ctld\n"


def test_stop_takes_its_config_out_and_puts_back_what_start_saved(tmp_path):
    # a left-behind config with no controller makes every Snakemake start wait ~9 s
    state, etc = tmp_path / "state", tmp_path / "etc"
    etc.mkdir()
    (state / "etc-saved").mkdir(parents=True)
    (etc / "slurm.conf").write_text(_start_sh_config(state))
    (etc / "gres.conf").write_text("# Written by tests/slurm/start.sh: fake GPUs.\n")
    (state / "etc-saved" / "slurm.conf").write_text("ClusterName=the-real-one\n")
    done = _run_stop(state, etc)
    assert done.returncode == 0, done.stderr
    assert (etc / "slurm.conf").read_text() == "ClusterName=the-real-one\n"
    assert not (etc / "gres.conf").exists() and not (state / "etc-saved" / "slurm.conf").exists()
    assert (state / "etc" / "slurm.conf").read_text() == _start_sh_config(state)
    assert (state / "etc" / "gres.conf").exists()


def test_stop_leaves_a_config_that_is_not_its_own(tmp_path):
    state, etc = tmp_path / "state", tmp_path / "etc"
    etc.mkdir()
    state.mkdir()
    other = _start_sh_config(tmp_path / "another-state")  # another cluster of these tests
    (etc / "slurm.conf").write_text(other)
    (etc / "gres.conf").write_text("# Written by tests/slurm/start.sh: fake GPUs.\n")
    done = _run_stop(state, etc)
    assert done.returncode == 0, done.stderr
    assert (etc / "slurm.conf").read_text() == other and (etc / "gres.conf").exists()
    assert not (state / "etc").exists()


# --- workflow/slurm_plan.py on a made-up dry run -----------------------------------

def _dry_run_job(rule, resources, indent="", threads=None):
    """One job as `snakemake -n` lists it."""
    lines = [f"{indent}[Sat Dec  5 05:59:04 2026]", f"{indent}rule {rule}:", f"{indent}    resources: {resources}"]
    return "\n".join(lines + ([f"{indent}    threads: {threads}"] if threads else [])) + "\n"


GPU_STEP = dict(resources="tmpdir=/tmp, slurm_partition=gpu, gpu=1", indent="    ", threads=4)
DRY_RUN = (_dry_run_job("generate_corruptions", "tmpdir=/tmp, mem_mb=4000, slurm_account=a, runtime=60")
           + "[Sat Dec  5 05:59:04 2026] Group job model_oe (jobs in lexicogr. order):\n\n"
           + "".join(_dry_run_job(rule, **GPU_STEP) for rule in ("evaluate", "train") * 2)
           + _dry_run_job("score", "tmpdir=/tmp") + _dry_run_job("all", "tmpdir=/tmp"))


def test_plan_counts_a_packed_group_as_one_submission_asking_for_both_models():
    jobs = slurm_plan.planned_jobs(DRY_RUN)
    assert [job["rule"] for job in jobs] == ["generate_corruptions", "evaluate", "train", "evaluate", "train",
                                             "score", "all"]
    assert jobs[1]["group"] is jobs[4]["group"] and jobs[0]["group"] is None and jobs[5]["group"] is None
    lines, submissions = slurm_plan.summarize(jobs, local={"score", "all"})
    assert submissions == 2
    assert lines == [
        "SLURM submissions: 2",
        "     1 x group job model_oe (2 evaluate + 2 train): slurm_partition=gpu, gpu=1 x 2, 8 cores (4 threads per step)",
        "     1 x generate_corruptions: the cluster's default partition, mem_mb=4000, runtime=60, 1 thread(s)",
        "Run where Snakemake runs (local rules): 1 jobs (score 1)",
    ]
