"""`soul bench hot --profile DIR`: where a hit's time goes, in the replicas that serve it.

While our side of a mode runs, py-spy (a sampling profiler, from the package index) records
the Ingress and the Catalog replicas, each into ``DIR/<mode>-<deployment>.txt`` (collapsed
stacks: one line per stack, its sample count last; any flame-graph tool reads them), and the
heaviest frames are printed. The samples are taken from outside the process: nothing in the
service changes to be profiled.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROFILED = ("Ingress", "Catalog")


def replica_pids(deployment: str) -> list[int]:
    """The replicas of ``deployment`` in the app ``soul`` of the Ray this process started (its
    descendants: other Rays on the machine are left alone), by their process title."""
    import psutil

    title = f"ray::ServeReplica:soul:{deployment}"
    return [
        p.pid for p in psutil.Process().children(recursive=True) if title in " ".join(_cmdline(p))
    ]


def _cmdline(process: Any) -> list[str]:
    try:
        return list(process.cmdline())
    except Exception:  # gone meanwhile, or not ours to read
        return []


@contextlib.contextmanager
def profiled(folder: Path | None, mode: str) -> Iterator[None]:
    """py-spy on each profiled replica while the block runs (nothing when ``folder`` is None)."""
    if folder is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    folder.mkdir(parents=True, exist_ok=True)
    runs: list[tuple[Path, subprocess.Popen[bytes]]] = []
    for deployment in PROFILED:
        for pid in replica_pids(deployment):
            out = folder / f"{mode}-{deployment}-{pid}.txt"
            command = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "500",
                       "--nonblocking", "--output", str(out)]  # fmt: skip
            runs.append((out, subprocess.Popen(command, stdout=subprocess.DEVNULL)))
    try:
        yield
    finally:
        for out, spying in runs:
            spying.send_signal(2)  # py-spy writes its file on SIGINT
            spying.wait(timeout=60)
            print_heaviest(out)


def print_heaviest(collapsed: Path, top: int = 15) -> None:
    """The frames most samples were in (anywhere on the stack), with their share."""
    if not collapsed.is_file():
        print(f"{collapsed.name}: no samples (py-spy needs ptrace rights on the replica)")
        return
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        n = int(samples)
        total += n
        for frame in set(stack.split(";")):
            inclusive[frame] += n
    print(f"\n{collapsed.name}: {total} samples")
    for frame, n in inclusive.most_common(top):
        print(f"{100 * n / max(total, 1):6.1f}%  {frame}")
