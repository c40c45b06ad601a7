"""Benchmark how long Snakemake takes to build each config's job graph (a dry run), per job.

    python -m pathologies.bench dag [--configs config/a.yaml ...] [--directory .]

For each config: the CPU time of ``snakemake --list-rules`` (parse the Snakefile and the config, no job
graph: the fixed start-up cost) and of ``snakemake -n --quiet rules`` (the whole dry run), both measured as
user + system time of the child processes. The graph's cost per job is the difference divided by the job
count; the ratio column divides it by the smallest config's cost per job, measured in the same run. A
graph that grows linearly with its jobs keeps the ratio near 1 whatever the machine; an input function
that rescans every job makes it grow with the job count. CPU time, not wall time, because a shared
machine stretches the wall time of the same dry run threefold. Run it from the project root (or pass
``--directory``): a dry run writes no outputs, but jobs whose outputs exist are not counted.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def children_cpu_seconds() -> float:
    """User + system CPU time of every finished child process of this one."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_snakemake(args: list[str], directory: Path) -> tuple[float, float, str]:
    """(CPU seconds, wall seconds, log) of one ``snakemake`` call in ``directory`` (its job table is on stderr)."""
    command = [sys.executable, "-m", "snakemake", "--cores", "1", *args]
    cpu, wall = children_cpu_seconds(), time.perf_counter()
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True, check=False)
    cpu, wall = children_cpu_seconds() - cpu, time.perf_counter() - wall
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"error: {' '.join(args)} failed in {directory}: {' | '.join(tail)}")
    return cpu, wall, done.stdout + done.stderr


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the machine type where that is not readable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def total_jobs(stdout: str) -> int:
    """The ``total`` row of the job table that ``snakemake -n --quiet rules`` prints (0 if nothing to do)."""
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathologies.bench dag", description=__doc__.splitlines()[0])
    parser.add_argument("--directory", type=Path, default=Path("."), help="project root (default: here)")
    parser.add_argument("--configs", nargs="+", type=Path, default=None,
                        help="config files (default: every config/*.yaml under --directory)")
    args = parser.parse_args(argv)
    directory = args.directory.resolve()
    configs = args.configs or sorted((directory / "config").glob("*.yaml"))
    if not configs:
        raise SystemExit(f"error: no config/*.yaml under {directory}; pass --directory or --configs")
    print(f"job-graph build (dry run) on {cpu_model()}, Python "
          f"{platform.python_version()}: CPU seconds of snakemake and its children")
    rows = []
    for config in configs:
        parse_cpu, _, _ = timed_snakemake(["--list-rules", "--configfile", str(config)], directory)
        dry_cpu, dry_wall, stdout = timed_snakemake(["-n", "--quiet", "rules", "--configfile", str(config)],
                                                    directory)
        jobs = total_jobs(stdout)
        per_job_ms = 1000 * max(dry_cpu - parse_cpu, 0.0) / jobs if jobs else float("nan")
        rows.append((config.name, jobs, parse_cpu, dry_cpu, dry_wall, per_job_ms))
    baseline = min((row[5] for row in rows if row[1]), default=float("nan"))
    print(f"{'config':34} {'jobs':>6} {'parse s':>8} {'dry run s':>10} {'wall s':>7} {'ms/job':>7} {'ratio':>6}")
    for name, jobs, parse_cpu, dry_cpu, dry_wall, per_job_ms in rows:
        print(f"{name:34} {jobs:6d} {parse_cpu:8.2f} {dry_cpu:10.2f} {dry_wall:7.2f} {per_job_ms:7.2f} "
              f"{per_job_ms / baseline:6.2f}")
    print(f"ratio = ms/job against the cheapest config's {baseline:.2f} ms/job in this run")
    print(f"dag_max_ratio={max((row[5] / baseline for row in rows if row[1]), default=float('nan')):.2f}")
    return 0
