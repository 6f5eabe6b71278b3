"""Runs ``examples/train_vae.py`` and the ``radiodiff-vae`` command line as separate processes, fast.

A fresh interpreter spends ~10 s (busy 2-core box) importing torch, accelerate and diffusers before the script
reads its first flag; the failing cases of the reliability tests need a fraction of a second after that. So a
multiprocessing *forkserver* imports those modules once, and every case runs in a new child forked from it: a real
process with its own exit code, stdout/stderr, working directory and accelerate state, started as
``python examples/train_vae.py ARGS`` would be (``runpy`` with ``__name__ == "__main__"``), minus the imports. A few
tests still start the plain command lines (``python ...``, ``accelerate launch ...``) to show that they answer alike.
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


@dataclass
class Finished:
    code: int
    output: str  # stdout and stderr together, in order

    @property
    def lines(self) -> List[str]:
        return [line for line in self.output.splitlines() if line.strip()]


def _child(target: str, argv: List[str], cwd: str, output_path: str, environment: Dict[str, str]) -> None:
    descriptor = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
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
        self, target: str, argv: Sequence[str], cwd: Path, environment: Optional[Dict[str, str]] = None, timeout=120
    ) -> Finished:
        """``target``: ``"cli"`` (``radiodiff-vae ARGV``) or a script path."""
        with tempfile.NamedTemporaryFile(suffix=".log", delete=False) as handle:
            output_path = handle.name
        try:
            process = self._context.Process(
                target=_child,
                args=(str(target), [str(arg) for arg in argv], str(cwd), output_path, dict(environment or {})),
            )
            process.start()
            process.join(timeout)
            if process.exitcode is None:
                process.kill()
                process.join()
                raise TimeoutError(f"{target} {' '.join(map(str, argv))} ran longer than {timeout} s")
            return Finished(process.exitcode, Path(output_path).read_text(errors="replace"))
        finally:
            os.unlink(output_path)

    def train(self, argv: Sequence[str], cwd: Path, **kwargs) -> Finished:
        return self.run(str(TRAIN_SCRIPT), argv, cwd, **kwargs)

    def cli(self, argv: Sequence[str], cwd: Path, **kwargs) -> Finished:
        return self.run("cli", argv, cwd, **kwargs)
