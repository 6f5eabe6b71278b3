"""Validation image grids: one row per map, columns input | reconstruction | absolute error."""

import numpy as np
import torch
from matplotlib import colormaps

GRID_SEPARATOR = 2  # pixels of white between panels and rows


def make_reconstruction_grid(
    inputs: torch.Tensor,
    reconstructions: torch.Tensor,
    error_vmax: float = 0.1,
    error_colormap: str = "inferno",
    min_panel_size: int = 1,
) -> np.ndarray:
    """Builds an RGB grid from maps in [0, 1].

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
    reference = inputs.detach().float().cpu().clamp(0, 1)[:, 0].numpy()  # (B, H, W)
    decoded = reconstructions.detach().float().cpu().clamp(0, 1)[:, 0].numpy()  # (B, H, W)
    error = np.abs(reference - decoded) / error_vmax  # (B, H, W), 1 = error_vmax
    error_rgb = colormaps[error_colormap](np.clip(error, 0, 1))[..., :3]  # (B, H, W, 3)

    def gray(maps: np.ndarray) -> np.ndarray:
        return np.repeat(maps[..., None], 3, axis=-1)  # (B, H, W, 3)

    scale = max(1, -(-min_panel_size // max(reference.shape[1:])))  # ceil division

    def enlarge(panel: np.ndarray) -> np.ndarray:
        return panel.repeat(scale, axis=1).repeat(scale, axis=2)  # (B, s * H, s * W, 3)

    columns = [enlarge(gray(reference)), enlarge(gray(decoded)), enlarge(error_rgb)]
    batch, height, width = columns[0].shape[:3]
    gap = GRID_SEPARATOR
    grid = np.ones((batch * height + (batch + 1) * gap, 3 * width + 4 * gap, 3), dtype=np.float64)
    for row in range(batch):
        top = gap + row * (height + gap)
        for column, panel in enumerate(columns):
            left = gap + column * (width + gap)
            grid[top : top + height, left : left + width] = panel[row]
    return np.round(grid * 255).astype(np.uint8)
