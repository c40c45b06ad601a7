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
from dataclasses import dataclass
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


# The graph's CPU time is the difference of two runs that each start Snakemake: below this it is within the noise
# of the start-ups (the 77-job Fashion-MNIST graph costs about 0.1 s), and no cost per job is given.
NOISE_FLOOR_S = 1.0


@dataclass(frozen=True)
class DryRun:
    """CPU and wall seconds of one config's parse (``--list-rules``) and dry run, and its job count."""

    config: str
    jobs: int
    parse_cpu: float
    dry_cpu: float
    dry_wall: float

    @property
    def per_job_ms(self) -> float | None:
        """CPU ms per job of the graph alone, where the graph costs more than the noise floor."""
        graph = self.dry_cpu - self.parse_cpu
        return 1000 * graph / self.jobs if self.jobs and graph >= NOISE_FLOOR_S else None


def ratios(runs: list[DryRun]) -> list[float | None]:
    """Each run's cost per job over the cheapest measured cost per job (None where not measured)."""
    measured = [run.per_job_ms for run in runs if run.per_job_ms is not None]
    if not measured:
        return [None] * len(runs)
    return [None if run.per_job_ms is None else run.per_job_ms / min(measured) for run in runs]


def render(runs: list[DryRun]) -> str:
    """The table, a note on the baseline and the last line ``dag_max_ratio=`` (``n/a`` with no graph measured)."""
    def cell(value: float | None, width: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:{width}.2f}"

    lines = [f"{'config':34} {'jobs':>6} {'parse s':>8} {'dry run s':>10} {'wall s':>7} {'ms/job':>7} {'ratio':>6}"]
    shown = ratios(runs)
    for run, ratio in zip(runs, shown, strict=True):
        lines.append(f"{run.config:34} {run.jobs:6d} {run.parse_cpu:8.2f} {run.dry_cpu:10.2f} {run.dry_wall:7.2f} "
                     f"{cell(run.per_job_ms, 7)} {cell(ratio, 6)}")
    measured = [ratio for ratio in shown if ratio is not None]
    lines.append(f"ms/job = (dry run - parse) / jobs, given where the graph costs at least {NOISE_FLOOR_S:g} s of "
                 "CPU; ratio = ms/job over the cheapest config's in this run")
    lines.append(f"dag_max_ratio={max(measured):.2f}" if measured else "dag_max_ratio=n/a")
    return "\n".join(lines)


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
    runs = []
    for config in configs:
        parse_cpu, _, _ = timed_snakemake(["--list-rules", "--configfile", str(config)], directory)
        dry_cpu, dry_wall, log = timed_snakemake(["-n", "--quiet", "rules", "--configfile", str(config)], directory)
        runs.append(DryRun(config.name, total_jobs(log), parse_cpu, dry_cpu, dry_wall))
    print(render(runs))
    return 0
