"""What a run through a SLURM profile submits: how many SLURM jobs, of which rules, where.

    python workflow/slurm_plan.py                                   # profiles/slurm, the default study
    python workflow/slurm_plan.py --configfile presets/tiny.yaml     # more snakemake options
    python workflow/slurm_plan.py --profile my/profile               # another profile
    make slurm-plan PLAN_ARGS="--configfile presets/tiny.yaml"

It runs `snakemake -n` with the options given (plus `--profile profiles/slurm` unless one is
given), reads the plan, and prints one line per kind of submission: each group job (the
train and evaluate jobs of one model, or of several with group-components) and each other
job that is not a local rule is one `sbatch`; local rules run where Snakemake runs. The
total is the number of submissions, so the number of queue waits when nothing is retried.
Neither the cluster nor the data is needed.
"""
import collections
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOW_FILES = [os.path.join(ROOT, "Snakefile")] + sorted(
    os.path.join(ROOT, "workflow", "rules", name)
    for name in os.listdir(os.path.join(ROOT, "workflow", "rules")) if name.endswith(".smk"))
# Resources the summary shows per kind of submission (the rest is in the dry run's job list).
SHOWN_RESOURCES = ("slurm_partition", "gpu", "gres", "mem_mb", "runtime")


def local_rules(paths=None) -> set:
    """Every rule named in a `localrules:` statement (inline or as an indented block) of paths."""
    names = set()
    for path in paths or WORKFLOW_FILES:
        with open(path) as f:
            lines = f.read().splitlines()
        for number, line in enumerate(lines):
            match = re.match(r"(\s*)localrules:(.*)$", line)
            if not match:
                continue
            indent, text = len(match.group(1)), [match.group(2)]
            for following in lines[number + 1:]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                text.append(following.split("#")[0])
            names |= {name.strip() for name in ",".join(text).split(",") if name.strip()}
    return names


def planned_jobs(dry_run_output: str) -> list:
    """[(group name or None, rule, {resource: value}, threads)] of every job in a dry run's list."""
    jobs, group, current = [], None, None
    for line in dry_run_output.splitlines():
        stripped = line.strip()
        header = re.search(r"Group job (\S+) \(jobs", line)
        rule = re.match(r"(?:local)?rule (\w+):$", stripped)
        if header:
            group = [header.group(1)]  # a fresh list: the identity of one group job
        elif rule:
            if not line.startswith(" "):
                group = None  # a job outside any group ends the group's listing
            current = {"group": group, "rule": rule.group(1), "resources": {}, "threads": 1}
            jobs.append(current)
        elif current and stripped.startswith("resources:"):
            current["resources"] = dict(item.split("=", 1) for item in stripped[len("resources:"):].split(", ")
                                        if "=" in item)
        elif current and stripped.startswith("threads:"):
            current["threads"] = int(stripped.split(":", 1)[1])
    return jobs


def _where(resources: dict) -> str:
    shown = [f"{key}={resources[key]}" for key in SHOWN_RESOURCES if key in resources]
    if "slurm_partition" not in resources:
        shown.insert(0, "the cluster's default partition")
    return ", ".join(shown)


def summarize(jobs: list, local: set) -> tuple:
    """(lines of the summary, number of SLURM submissions)."""
    kinds = collections.Counter()
    groups = collections.OrderedDict()
    for job in jobs:
        if job["group"] is not None:
            groups.setdefault(id(job["group"]), []).append(job)
    for members in groups.values():
        rules = collections.Counter(job["rule"] for job in members)
        what = " + ".join(f"{count} {rule}" if count > 1 else rule for rule, count in sorted(rules.items()))
        # Snakemake sizes a group job for its independent parts side by side (the models
        # packed into it), while the job runs its steps one at a time.
        parts = max(rules.values())
        first = members[0]["resources"]
        asks = [f"slurm_partition={first['slurm_partition']}" if "slurm_partition" in first
                else "the cluster's default partition"]
        for key in ("gpu", "gres"):
            if key in first:
                asks.append(f"{key}={first[key]}" + (f" x {parts}" if parts > 1 else ""))
        threads = max(job["threads"] for job in members)
        asks.append(f"{threads * parts} cores ({threads} threads per step)")
        kinds[(f"group job {members[0]['group'][0]} ({what})", ", ".join(asks))] += 1
    here = collections.Counter()
    for job in jobs:
        if job["group"] is not None or job["rule"] == "all":
            continue
        if job["rule"] in local:
            here[job["rule"]] += 1
        else:
            kinds[(job["rule"], f"{_where(job['resources'])}, {job['threads']} thread(s)")] += 1
    submissions = sum(kinds.values())
    lines = [f"SLURM submissions: {submissions}"]
    lines += [f"  {count:4d} x {what}: {where}" for (what, where), count in kinds.items()]
    lines.append(f"Run where Snakemake runs (local rules): {sum(here.values())} jobs"
                 + (" (" + ", ".join(f"{rule} {count}" for rule, count in here.most_common()) + ")" if here else ""))
    return lines, submissions


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--profile" not in args:
        args = ["--profile", os.path.join(ROOT, "profiles", "slurm"), *args]
    # A dry run caps each job's threads at --cores, 1 unless given; under SLURM there is no cap.
    command = [os.path.join(os.path.dirname(sys.executable), "snakemake"), "--snakefile",
               os.path.join(ROOT, "Snakefile"), "-n", "--cores", "4096", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    output = done.stdout + done.stderr
    if done.returncode:
        print(output[-4000:], file=sys.stderr)
        print(f"slurm_plan: the dry run failed ({' '.join(command)})", file=sys.stderr)
        return done.returncode
    if "Nothing to be done" in output:
        print("SLURM submissions: 0 (nothing to be done)")
        return 0
    lines, _ = summarize(planned_jobs(output), local_rules())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
