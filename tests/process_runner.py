"""Runs ``examples/train_vae.py`` and the ``radiodiff-vae`` command line as separate processes, fast.

A fresh interpreter spends ~10 s (busy 2-core box) importing torch, accelerate and diffusers before the script
reads its first flag; the failing cases of the reliability tests need a fraction of a second after that. So a
multiprocessing *forkserver* imports those modules once, and every case runs in a new child forked from it: a real
process with its own exit code, stdout/stderr, working directory and accelerate state, started as
``python examples/train_vae.py ARGS`` would be (``runpy`` with ``__name__ == "__main__"``), minus the imports. A few
tests still start the plain command lines (``python ...``, ``accelerate launch ...``) to show that they answer alike.

Also the helpers of the tests that run it: :data:`OFFLINE`, :func:`snapshot`, :func:`assert_one_line_error`.
"""

import multiprocessing
import os
import runpy
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO_ROOT / "examples" / "train_vae.py"
PRELOAD = [
    "torch",
    "accelerate",
    "diffusers",
    "radiodiff_vae.models.autoencoder_radio",
    "radiodiff_vae.losses.vae_gan",
    "radiodiff_vae.training",
    "radiodiff_vae.data.radiomapseer",
    "radiodiff_vae.cli",
]


# The environment of the bad-input cases: no Hub lookups, one thread.
OFFLINE = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@dataclass
class Finished:
    code: int
    output: str  # stdout and stderr together, in order; stdout alone when the run kept stderr apart
    stderr: Optional[str] = None  # with ``separate_stderr``

    @property
    def lines(self) -> List[str]:
        return [line for line in self.output.splitlines() if line.strip()]


def _child(
    target: str, argv: List[str], cwd: str, output_path: str, environment: Dict[str, str], error_path: Optional[str]
) -> None:
    for stream, path in ((1, output_path), (2, error_path or output_path)):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        os.dup2(descriptor, stream)
        os.close(descriptor)
    os.chdir(cwd)
    os.environ.update(environment)
    if target == "cli":
        from radiodiff_vae.cli import main

        sys.argv = ["radiodiff-vae"] + argv
        sys.exit(main(argv))
    sys.argv = [target] + argv
    runpy.run_path(target, run_name="__main__")


class ProcessRunner:
    def __init__(self) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)

    def run(
        self,
        target: str,
        argv: Sequence[str],
        cwd: Path,
        environment: Optional[Dict[str, str]] = None,
        timeout=120,
        separate_stderr: bool = False,
    ) -> Finished:
        """``target``: ``"cli"`` (``radiodiff-vae ARGV``) or a script path. ``separate_stderr``: keep stderr apart
        (``Finished.stderr``) instead of interleaved with stdout."""
        paths = []
        for _ in range(2 if separate_stderr else 1):
            with tempfile.NamedTemporaryFile(suffix=".log", delete=False) as handle:
                paths.append(handle.name)
        output_path, error_path = paths[0], (paths[1] if separate_stderr else None)
        try:
            process = self._context.Process(
                target=_child,
                args=(str(target), [str(a) for a in argv], str(cwd), output_path, dict(environment or {}), error_path),
            )
            process.start()
            process.join(timeout)
            if process.exitcode is None:
                process.kill()
                process.join()
                raise TimeoutError(f"{target} {' '.join(map(str, argv))} ran longer than {timeout} s")
            stderr = Path(error_path).read_text(errors="replace") if error_path else None
            return Finished(process.exitcode, Path(output_path).read_text(errors="replace"), stderr)
        finally:
            for path in paths:
                os.unlink(path)

    def train(self, argv: Sequence[str], cwd: Path, **kwargs) -> Finished:
        return self.run(str(TRAIN_SCRIPT), argv, cwd, **kwargs)

    def cli(self, argv: Sequence[str], cwd: Path, **kwargs) -> Finished:
        return self.run("cli", argv, cwd, **kwargs)


def snapshot(folder: Path) -> dict:
    """Every path under ``folder`` with its size and modification time: equal snapshots mean nothing was written."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else None
        for path in sorted(folder.rglob("*"))
    }


def assert_one_line_error(finished, *expected: str, prefix: str = "train_vae.py: error: ") -> str:
    """The run printed exactly one line, ``PREFIX...`` holding each of ``expected``, no traceback, exit code 2."""
    assert "Traceback" not in finished.output, finished.output
    assert finished.code == 2, finished.output
    assert len(finished.lines) == 1, finished.output
    line = finished.lines[0]
    assert line.startswith(prefix), line
    for words in expected:
        assert words in line, line
    return line
