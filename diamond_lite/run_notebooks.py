"""Execute the course notebooks in a profile and save their outputs: ``make notebooks``.

    python -m diamond_lite.run_notebooks --profile course notebooks/*.ipynb

Committed notebooks carry the outputs of a ``course`` run, so a reader on GitHub sees real results.
Each executed notebook records its profile in its metadata (``metadata.diamond_lite.profile``),
and the tests check that every committed notebook says ``course``. A notebook that fails is left
untouched on disk, so a crash never replaces good outputs with half a run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .profiles import ENV_VAR, PROFILES

MAX_NOTEBOOK_BYTES = 3 * 1024 * 1024


def execute(path: Path, profile: str, timeout: int = 3600) -> float:
    """Run every cell of ``path`` in ``profile``; write the outputs back; return the seconds taken."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    os.environ[ENV_VAR] = profile  # the kernel inherits this process's environment
    started = time.perf_counter()
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name=notebook.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    seconds = time.perf_counter() - started
    notebook.metadata["diamond_lite"] = {"profile": profile, "seconds": round(seconds, 1)}
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(notebook, tmp)
    os.replace(tmp, path)
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        print(f"warning: {path} is {size / 2**20:.1f} MB, over the 3 MB limit", file=sys.stderr)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--profile", default="course", choices=PROFILES)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        print(f"{path} ({args.profile}) ...", flush=True)
        seconds = execute(path, args.profile, args.timeout)
        print(f"{path}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
