"""Radio-map data: RadioMapSeer, the built-in synthetic city generator, and 🤗 datasets (``DataSource`` opens any of
the three from command-line flags).

Every dataset yields dicts with ``"pixel_values"`` `(1, H, W)` in [-1, 1] (the gain map), ``"buildings"``
`(1, H, W)` in [0, 1] (1 = building), ``"transmitter"`` `(1, H, W)` in [0, 1] (1 at the transmitter), ``"name"``
(``"{map}_{tx}"``) and ``"simulation"``. Names load lazily so that ``datasets`` is imported only when needed.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "RADIOMAPSEER_DB_RANGE": "radiodiff_vae.data.conventions",
    "RADIOMAPSEER_NATIVE_SIZE": "radiodiff_vae.data.conventions",
    "db_to_unit": "radiodiff_vae.data.conventions",
    "unit_to_db": "radiodiff_vae.data.conventions",
    "unit_to_model": "radiodiff_vae.data.conventions",
    "model_to_unit": "radiodiff_vae.data.conventions",
    "SyntheticCityConfig": "radiodiff_vae.data.simulation.synthetic",
    "SyntheticRadioMaps": "radiodiff_vae.data.simulation.synthetic",
    "generate_radio_maps": "radiodiff_vae.data.simulation.synthetic",
    "write_synthetic_folder": "radiodiff_vae.data.simulation.synthetic",
    "RadioMapSeer": "radiodiff_vae.data.radiomapseer",
    "PngMapFolder": "radiodiff_vae.data.png_folder",
    "DataSource": "radiodiff_vae.data.sources",
    "SPLIT_SCHEMES": "radiodiff_vae.data.splits",
    "split_map_ids": "radiodiff_vae.data.splits",
    "HFRadioMaps": "radiodiff_vae.data.hf",
    "load_radio_dataset": "radiodiff_vae.data.hf",
    "radiomapseer_to_hf": "radiodiff_vae.data.hf",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .conventions import (
        RADIOMAPSEER_DB_RANGE,
        RADIOMAPSEER_NATIVE_SIZE,
        db_to_unit,
        model_to_unit,
        unit_to_db,
        unit_to_model,
    )
    from .hf import HFRadioMaps, load_radio_dataset, radiomapseer_to_hf
    from .png_folder import PngMapFolder
    from .radiomapseer import RadioMapSeer
    from .sources import DataSource
    from .splits import SPLIT_SCHEMES, split_map_ids
    from .simulation.synthetic import (
        SyntheticCityConfig,
        SyntheticRadioMaps,
        generate_radio_maps,
        write_synthetic_folder,
    )
