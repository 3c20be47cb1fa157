"""`make bench`: every speed benchmark, one table, saved as CSV and JSON with the machine.

    python -m benchmarks.run [--tiny] [--demo] [--out benchmarks/out] [--label NAME]
    make bench                  # with the Makefile's MALLOC_* settings (JOB_ENV)
    make bench BENCH_DEMO=1     # also time the whole offline demo, plain and with profiles/local (minutes)
    make bench BENCH_MALLOC=off # without them, to compare

Each line is measured in one process on the same data and model and gives a ratio
(ours / reference, or goal / measured for wall times): PixMix batched against the
per-sample reference (benchmarks/bench_pixmix.py), the three training-loop lines
(benchmarks/bench_training.py), evaluation (benchmarks/bench_eval.py) and the workflow's
wall times (benchmarks/bench_workflow.py: dry run, differences step; with the test cluster of
tests/slurm/start.sh up, the tiny preset through SLURM / with profiles/local, minutes). `--tiny` runs everything at sizes that take
seconds: it checks the code, its numbers mean nothing. Writes <out>/<label>.csv and
<out>/<label>.json (label: "bench", or "bench-tiny"); the JSON also holds the machine
description and the load average before and after.
"""
import argparse
import csv
import datetime
import io
import json
import os
import platform
import subprocess
import time

import torch

from benchmarks import bench_eval, bench_pixmix, bench_training, bench_workflow
from lib.common import device_name, replace_atomic

MALLOC_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
COLUMNS = ("name", "ours", "reference", "unit", "ratio", "goal", "met", "detail")


def machine():
    """What the numbers were measured on: CPU/GPU, cores, software, settings, load."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=bench_workflow.ROOT,
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": device_name(torch.device("cpu")), "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "malloc": {key: os.environ.get(key) for key in MALLOC_KEYS},
        "omp": {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
        "commit": commit,
    }


def pixmix_lines(tiny):
    """The batched PixMix on all cores against the reference on one (the goal), the
    batched PixMix on one core (for the record) and, with a GPU, one epoch of it there."""
    sizes = (dict(n_images=64, batch_size=32, n_reference=16, repeats=1, n_mixing=8) if tiny
             else dict(n_images=32768, batch_size=8192, n_reference=2000, repeats=10, n_mixing=1000))
    result = bench_pixmix.bench_pixmix(**sizes)
    common = {"reference": result["reference_images_per_s"], "unit": "img/s",
              "repeat_images_per_s": result["repeat_images_per_s"]}
    detail = (f"batch {result['batch_size']} (a CPU training job's call), reference one picture at a time "
              f"on one core, best of {sizes['repeats']} alternating repeats")
    lines = [
        {"name": f"pixmix batched on the CPU's {result['threads']} threads / per-sample PIL reference",
         "ours": result["batched_images_per_s"], "ratio": result["ratio"], "goal": ">= 20",
         "met": result["ratio"] >= 20, **common, "ratio_median": result["ratio_median"],
         "detail": f"{detail}; ratio of the median repeats {result['ratio_median']:.1f}"},
        {"name": "pixmix batched on one thread / per-sample PIL reference",
         "ours": result["batched_one_thread_images_per_s"], "ratio": result["ratio_one_thread"],
         "goal": "report", "met": None, **common, "ratio_median": result["ratio_one_thread_median"],
         "detail": f"{detail}; ratio of the median repeats {result['ratio_one_thread_median']:.1f}"},
    ]
    if result["gpu_epoch_s"] is not None:
        # the CPU figure is the same epoch at the best speed on the CPU's threads
        cpu_epoch = bench_pixmix.EPOCH_IMAGES / result["batched_images_per_s"]
        lines.append({"name": "pixmix one 60,000-image epoch on the GPU / the same on the CPU's threads",
                      "ours": result["gpu_epoch_s"], "reference": cpu_epoch, "unit": "s",
                      "ratio": cpu_epoch / result["gpu_epoch_s"], "goal": "report", "met": None,
                      "detail": f"batch {result['batch_size']}, after one warm-up batch; {torch.cuda.get_device_name(0)}"})
    return lines


def run_all(tiny=False, demo=False):
    lines = pixmix_lines(tiny)
    lines += bench_training.bench_training(**(bench_training.TINY if tiny else {}))
    lines.append(bench_eval.bench_eval(**(bench_eval.TINY if tiny else {})))
    lines.append(bench_workflow.bench_dry_run(**(bench_workflow.TINY_DRY_RUN if tiny else {})))
    lines.append(bench_workflow.bench_differences(study=bench_workflow.TINY_STUDY if tiny else None))
    if demo:
        lines += bench_workflow.bench_demo(configfile="presets/tiny.yaml" if tiny else "presets/demo.yaml")
    if not tiny and bench_workflow.slurm_test_cluster_up():
        lines.append(bench_workflow.bench_slurm_overhead())
    return lines


def _number(value):
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def format_table(lines, about):
    rows = [("benchmark", "ours", "reference", "unit", "ratio", "goal", "met")]
    for line in lines:
        met = {True: "yes", False: "NO", None: "-"}[line["met"]]
        rows.append((line["name"], _number(line["ours"]), _number(line["reference"]), line["unit"],
                     f"{line['ratio']:.2f}", line["goal"], met))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    text.insert(1, "-+-".join("-" * width for width in widths))
    malloc = "set (JOB_ENV)" if any(about["malloc"].values()) else "not set"
    text.append("")
    text += [f"{line['name']}: {line['detail']}" for line in lines]
    text.append(f"machine: {about['cpu']}, {about['cores']} cores, GPU {about['gpu'] or 'none'}; torch {about['torch']}; "
                f"glibc MALLOC_* {malloc}; load average {about['load_before']} before, {about['load_after']} after; "
                f"{about['date']}")
    return "\n".join(text)


def save(lines, about, out_dir, label):
    os.makedirs(out_dir, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows({key: line[key] for key in COLUMNS} for line in lines)

    def write_text(text):
        return lambda tmp: open(tmp, "w").write(text)
    replace_atomic(os.path.join(out_dir, f"{label}.csv"), write_text(buffer.getvalue()))
    replace_atomic(os.path.join(out_dir, f"{label}.json"),
                   write_text(json.dumps({"machine": about, "lines": lines}, indent=1) + "\n"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="seconds-long sizes: checks the code, not the speed")
    parser.add_argument("--demo", action="store_true",
                        help="also time the whole offline demo twice: plain and with profiles/local (minutes)")
    parser.add_argument("--out", default=os.path.join(bench_workflow.ROOT, "benchmarks", "out"))
    parser.add_argument("--label", help="file name of the CSV/JSON (default bench, or bench-tiny)")
    args = parser.parse_args(argv)
    about = machine()
    about["load_before"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    start = time.perf_counter()
    lines = run_all(args.tiny, args.demo)
    about["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    about["seconds"] = round(time.perf_counter() - start, 1)
    print(format_table(lines, about))
    save(lines, about, args.out, args.label or ("bench-tiny" if args.tiny else "bench"))
    return lines


if __name__ == "__main__":
    main()
