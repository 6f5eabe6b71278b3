"""Random numbers of a training step that depend only on where the step is, never on what ran before it.

The posterior sample of every micro-batch is drawn from a generator seeded by ``(seed, step, micro-batch, process)``.
So a run resumed from a checkpoint draws exactly the noise the uninterrupted run drew (whatever validation,
data-loader start-up or logging consumed from the global RNG in between), and every process draws different noise.
"""

import numpy as np
import torch


def step_generator(device: torch.device, seed: int, *indices: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``seed`` and any number of non-negative ``indices``.

    numpy's ``SeedSequence`` mixes the numbers, so neighbouring steps or processes get unrelated streams.
    """
    if any(index < 0 for index in indices):
        raise ValueError(f"indices must be >= 0, got {indices}")
    mixed = np.random.SeedSequence([seed % 2**32, *indices]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(mixed[0]) << 31 | int(mixed[1]) >> 1)  # a 62-bit seed
    return generator
