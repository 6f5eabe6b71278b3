"""The named RadioVAE architectures: dicts of constructor arguments (``RadioVAE.from_preset(name)``).

Plain data that imports nothing of the package, so that the model card (``hub.model_card``) names a config's preset
without importing the model.
"""

from typing import Dict

# The report (seed section 2): 320 -> 160 -> 80 -> 40, 64:1 compression.
_REPORT_LAYOUT: Dict[str, object] = dict(
    block_out_channels=(128, 256, 512),
    layers_per_block=2,
    decoder_layers_per_block=2,
    num_downsamples=3,
    upsample_type="conv_transpose",
    upsample_position="first",
    mid_block_add_attention=False,
    latent_channels=3,
    norm_num_groups=32,
    sample_size=320,
)

PRESETS: Dict[str, Dict[str, object]] = {
    "radiodiff-vae": _REPORT_LAYOUT,
    # The original RadioDiff code (CompVis ldm "f4" first stage with z_channels 3): loads its checkpoints.
    "radiodiff-ldm-f4": {
        **_REPORT_LAYOUT,
        "decoder_layers_per_block": 3,
        "num_downsamples": 2,
        "upsample_type": "nearest",
        "upsample_position": "last",
        "mid_block_add_attention": True,
    },
    # The report's layout with small channel counts: tests.
    "tiny": {**_REPORT_LAYOUT, "block_out_channels": (32, 64, 128), "norm_num_groups": 8, "sample_size": 64},
}
# The CPU codec of the quick start: the report's layout at a quarter of `tiny`'s FLOPs (16/32/64 channels) with two
# downsamplings (a 3x16x16 latent of a 64x64 map). On a 2-core CPU a few minutes of its steps beat the resize
# baseline by more than the same minutes of `tiny` with two downsamplings, and the 8x-downsampling `tiny` is still
# level with it after 800 steps (docs/training.md, "Beating the resize baseline").
PRESETS["tiny-f4"] = {**PRESETS["tiny"], "block_out_channels": (16, 32, 64), "num_downsamples": 2}
