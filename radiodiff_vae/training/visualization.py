"""Validation image grids: one row per map, columns input | reconstruction | absolute error."""

import numpy as np
import torch
from matplotlib import colormaps
from torchvision.utils import make_grid

GRID_SEPARATOR = 2  # pixels of white between panels and rows


def make_reconstruction_grid(
    inputs: torch.Tensor,
    reconstructions: torch.Tensor,
    error_vmax: float = 0.1,
    error_colormap: str = "inferno",
    min_panel_size: int = 1,
) -> np.ndarray:
    """Builds an RGB grid from maps in [0, 1] with ``torchvision.utils.make_grid``.

    Args:
        inputs (`torch.Tensor` of shape `(B, 1, H, W)`): reference maps in [0, 1].
        reconstructions (`torch.Tensor` of shape `(B, 1, H, W)`): decoded maps (values outside [0, 1] are clipped).
        error_vmax (`float`, defaults to 0.1): the absolute error shown at full colour. The scale is fixed, not
            per-grid, so grids from different steps compare; 0.1 is a tenth of the map range (10 dB on RadioMapSeer).
        error_colormap (`str`, defaults to `"inferno"`): matplotlib colormap of the error column.
        min_panel_size (`int`, defaults to 1): panels are enlarged by a whole factor `s` (nearest neighbour, so every
            map pixel stays a visible square) until their longer side reaches this size; small maps stay legible.

    Returns:
        `np.ndarray` of shape `(B * s * H + (B + 1) * 2, 3 * s * W + 4 * 2, 3)`, dtype uint8.
    """
    if inputs.ndim != 4 or inputs.shape[1] != 1:
        raise ValueError(f"inputs must have shape (B, 1, H, W), got {tuple(inputs.shape)}")
    if reconstructions.shape != inputs.shape:
        raise ValueError(
            f"reconstructions must match the inputs' shape {tuple(inputs.shape)}, got {tuple(reconstructions.shape)}"
        )
    if error_vmax <= 0:
        raise ValueError(f"error_vmax must be > 0, got {error_vmax}")
    reference = inputs.detach().cpu().double().clamp(0, 1)  # (B, 1, H, W)
    decoded = reconstructions.detach().cpu().double().clamp(0, 1)  # (B, 1, H, W)
    error = ((reference - decoded).abs() / error_vmax).clamp(0, 1)[:, 0].numpy()  # (B, H, W), 1 = error_vmax
    error_rgb = torch.from_numpy(colormaps[error_colormap](error)[..., :3]).permute(0, 3, 1, 2)  # (B, 3, H, W)
    panels = torch.stack([reference.expand(-1, 3, -1, -1), decoded.expand(-1, 3, -1, -1), error_rgb], dim=1)
    panels = panels.flatten(0, 1)  # (3 B, 3, H, W): input, reconstruction, error of map 0, then of map 1, ...
    scale = max(1, -(-min_panel_size // max(panels.shape[-2:])))  # ceil division
    panels = panels.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)  # (3 B, 3, s H, s W)
    grid = make_grid(panels, nrow=3, padding=GRID_SEPARATOR, pad_value=1.0)  # (3, B s H + (B+1) 2, 3 s W + 4 * 2)
    return (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
