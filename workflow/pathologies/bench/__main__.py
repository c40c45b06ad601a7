"""Dispatch ``python -m pathologies.bench <name>`` to ``pathologies.bench.<name>.main``."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("sis", "consistency", "train", "dag")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m pathologies.bench {{{','.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"pathologies.bench.{argv[0]}")
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    raise SystemExit(main())
