"""Does every pin of pyproject.toml resolve on each Python the project accepts? A check against PyPI's index.

    python dev/check_pythons.py            # every pin, for Python 3.11, 3.12 and 3.13 on x86-64 Linux

For each pinned package and each Python version it asks pip which versions PyPI offers as a wheel that Python can
install (``pip index versions --python-version``: the index pages only, nothing is downloaded) and reports whether the
pinned version is among them. Exit status 1 if any is not. It needs the network (PyPI), so it runs here and its
result is recorded in docs/performance.md ("Python versions"), not in ``make test``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux_2_5_x86_64", "manylinux1_x86_64", "linux_x86_64"]  # pip matches each tag exactly


def pins() -> list[tuple[str, str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [tuple(p.split("==")) for p in project["dependencies"] + project["optional-dependencies"]["dev"]]


def offered(name: str, python: str) -> list[str] | None:
    args = [sys.executable, "-m", "pip", "index", "versions", name, "--python-version", python, "--only-binary=:all:"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    for _ in range(5):  # an index page that did not come (a timeout, a busy index) is asked for again
        match = re.search(r"Available versions: (.*)", subprocess.run(args, capture_output=True, text=True).stdout)
        if match:
            return match.group(1).split(", ")
    return None  # the index did not answer: unknown, not missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pythons", nargs="+", default=["3.11", "3.12", "3.13"])
    args = parser.parse_args()
    jobs = [(name, version, python) for name, version in pins() for python in args.pythons]
    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(lambda job: offered(job[0], job[2]), jobs))
    missing = [job for job, versions in zip(jobs, found) if versions is not None and job[1] not in versions]
    unknown = [job for job, versions in zip(jobs, found) if versions is None]
    for python in args.pythons:
        bad = [f"{n}=={v}" for n, v, p in missing if p == python]
        unasked = [f"{n}=={v}" for n, v, p in unknown if p == python]
        print(f"Python {python}: {len(pins()) - len(bad) - len(unasked)}/{len(pins())} pins offered as wheels"
              + (f"; missing: {', '.join(bad)}" if bad else "") + (f"; the index did not answer for: {', '.join(unasked)}" if unasked else ""))
    return 1 if missing or unknown else 0


if __name__ == "__main__":
    sys.exit(main())
