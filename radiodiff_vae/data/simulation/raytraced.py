"""Ray-traced radio maps of real city scenes (Sionna RT), written in RadioMapSeer's layout.

Sionna RT (``pip install -e ".[raytrace]"``) ships 3D models of real city centres and computes radio maps by
shooting rays from each transmitter (Monte Carlo: line of sight, specular reflections, refraction through walls
and optionally diffraction) and accumulating the path gain in the cells of a horizontal measurement plane. This
module cuts a scene into square tiles, places transmitters in the streets and writes every tile like a
RadioMapSeer map, so :class:`~radiodiff_vae.data.RadioMapSeer` and the training script read the folder as they read
RadioMapSeer::

    root/gain/<simulation>/<map>_<tx>.png           path gain, grey = 255 (PG_dB + 147) / 100, buildings 0
    root/gain/<simulation>_repeat<k>/<map>_<tx>.png  the same transmitters traced again with other seeds
    root/png/buildings_complete/<map>.png            255 on buildings (from the scene's own geometry)
    root/png/antennas/<map>_<tx>.png                 255 at the transmitter's pixel
    root/meta.json                                   every setting, each tile's place, transmitters, timings

Images are seen from above, north up: row 0 is the tile's largest ``y``, column 0 its smallest ``x`` (scene
metres). The building mask is rasterised by casting one vertical ray down at every cell centre: a cell whose first
hit lies more than ``BUILDING_MIN_HEIGHT_M`` above the ground is a building. Sionna is imported only inside the
functions that trace; without it they raise :class:`RaytracingUnavailableError` saying what to install.
"""

import importlib.metadata
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from ...atomic import atomic_write_json
from ..conventions import RADIOMAPSEER_DB_RANGE, RADIOMAPSEER_FREQUENCY_HZ, RADIOMAPSEER_NATIVE_SIZE, db_to_unit
from ..layout import (
    ANTENNAS_DIR,
    BUILDINGS_DIR,
    GAIN_DIR,
    LAYOUT_DESCRIPTION,
    antenna_path,
    buildings_path,
    gain_path,
    write_grey_png,
)
from .synthetic import to_grey
from ...errors import DataError, InvalidArgumentError, NotAFolderError, OutputExistsError

PathLike = Union[str, os.PathLike]

INSTALL_HINT = (
    'make-raytraced needs Sionna RT (pip install -e ".[raytrace]") and, to trace on the CPU, LLVM >= 16 (on Debian: '
    "apt-get install -y libllvm19 and export DRJIT_LIBLLVM_PATH=/usr/lib/x86_64-linux-gnu/libLLVM-19.so)"
)

# Scenes of sionna.rt.scene with flat ground, so that a horizontal measurement plane 1.5 m above it is outdoors
# everywhere. San Francisco is left out: its terrain rises 104 m, and a flat plane would run inside the hills.
SCENES: Tuple[str, ...] = ("munich", "etoile", "florence")

METADATA_FILE = "meta.json"
DEFAULT_SIMULATION = "sionna"
GENERATOR_NAME = "radiodiff_vae.data.simulation.raytraced"

# A cell is a building when the highest surface above it is more than this far above the ground (kerbs, low walls
# and the ground's own triangles stay streets).
BUILDING_MIN_HEIGHT_M = 0.5
# The oldest LLVM Dr.Jit's CPU backend traces with (15 aborts with "Cannot select: ... fminimum").
MIN_LLVM_VERSION = (16,)
# A run stops (ValueError) when this many tile draws in a row gave no acceptable tile.
MAX_FAILED_DRAWS = 500


class RaytracingUnavailableError(ImportError):
    """Sionna RT (or the LLVM library its CPU backend needs) is missing; the message says what to install."""


def repeat_simulation(simulation: str, repeat: int) -> str:
    """Name of the folder under ``gain/`` of repeat ``repeat`` (1, 2, ...) of ``simulation``: ``<name>_repeat<k>``."""
    return f"{simulation}_repeat{repeat}"


def import_sionna_rt() -> Tuple[Any, Any, Any]:
    """``(mitsuba, drjit, sionna.rt)``, or a :class:`RaytracingUnavailableError` with the install line."""
    try:
        import drjit
        import mitsuba
        import sionna.rt
    except ImportError as error:
        raise RaytracingUnavailableError(f"{INSTALL_HINT}; import failed: {error}") from error
    if mitsuba.variant().startswith("llvm"):
        version = tuple(drjit.detail.llvm_version())
        if version < MIN_LLVM_VERSION:
            # LLVM 15 aborts the whole process in its code generator at the first trace: refuse before that.
            found = ".".join(str(part) for part in version)
            raise RaytracingUnavailableError(f"Dr.Jit loaded LLVM {found}, which cannot run the tracer; {INSTALL_HINT}")
    return mitsuba, drjit, sionna.rt


@dataclass(frozen=True)
class RaytraceConfig:
    """What to trace: the scene, the tile grid, the radio settings and the tile and transmitter rules.

    Args:
        scene (`str`, defaults to ``"munich"``): one of :data:`SCENES`.
        resolution (`int`, defaults to 256): cells (pixels) per side of a tile.
        cell_size_m (`float`, defaults to 1.0): side of a cell in metres (RadioMapSeer: 1 m, tiles of 256 m).
        frequency_hz (`float`, defaults to 5.9e9): carrier (RadioMapSeer's).
        tx_height_m (`float`, defaults to 10.0): transmitter height above the ground.
        rx_height_m (`float`, defaults to 1.5): height of the measurement plane above the ground.
        rays_per_tx (`int`, defaults to 10_000_000): rays shot from each transmitter (Sionna's ``samples_per_tx``).
        max_depth (`int`, defaults to 4): largest number of interactions (reflections, refractions) along a path.
        diffraction (`bool`, defaults to False): add diffraction on wedges (slower).
        min_building_share, max_building_share (`float`, defaults to 0.1 and 0.7): a tile is kept when buildings
            cover this share of it, so tiles hold both streets and buildings.
        tx_clearance_m (`float`, defaults to 2.0): a transmitter stands at least this far from any building cell
            and from the tile's edge.
    """

    scene: str = "munich"
    resolution: int = RADIOMAPSEER_NATIVE_SIZE
    cell_size_m: float = 1.0
    frequency_hz: float = RADIOMAPSEER_FREQUENCY_HZ
    tx_height_m: float = 10.0
    rx_height_m: float = 1.5
    rays_per_tx: int = 10_000_000
    max_depth: int = 4
    diffraction: bool = False
    min_building_share: float = 0.1
    max_building_share: float = 0.7
    tx_clearance_m: float = 2.0

    def __post_init__(self):
        if self.scene not in SCENES:
            raise InvalidArgumentError(
                f"unknown scene {self.scene!r}; available scenes: {', '.join(SCENES)} (Sionna RT scenes with flat "
                "ground; san_francisco is left out for its hills)"
            )
        for name, value, minimum in (("resolution", self.resolution, 8), ("rays_per_tx", self.rays_per_tx, 1)):
            if int(value) != value or value < minimum:
                raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {value}")
        if int(self.max_depth) != self.max_depth or self.max_depth < 0:
            raise InvalidArgumentError(f"max_depth must be an integer >= 0, got {self.max_depth}")
        for name in ("cell_size_m", "frequency_hz", "tx_height_m", "rx_height_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidArgumentError(f"{name} must be a positive number, got {value}")
        if not 0 <= self.min_building_share < self.max_building_share <= 1:
            raise InvalidArgumentError(
                "building shares must satisfy 0 <= min_building_share < max_building_share <= 1, got "
                f"{self.min_building_share} and {self.max_building_share}"
            )
        if not self.tx_clearance_m >= 0:
            raise InvalidArgumentError(f"tx_clearance_m must be >= 0, got {self.tx_clearance_m}")

    @property
    def tile_size_m(self) -> float:
        return self.resolution * self.cell_size_m


@dataclass
class Tile:
    """One square of a scene, with its rasterised geometry.

    Args:
        center_m: ``(x, y)`` of the tile's centre in scene metres.
        buildings: `(H, W)` bool, True on buildings (row 0 north).
        ground_z_m: height of the ground under the tile.
    """

    center_m: Tuple[float, float]
    buildings: np.ndarray
    ground_z_m: float


class SceneTracer:
    """A Sionna RT scene loaded once, cut into tiles and traced for many transmitters.

    Args:
        config (`RaytraceConfig`): the scene and the settings.
        threads (`int`, *optional*): Dr.Jit worker threads (None: all cores). With 1 thread repeated runs are
            bit-identical; with several, float32 sums may add up in another order (last-bit differences).
    """

    def __init__(self, config: RaytraceConfig, threads: Optional[int] = None):
        self.config = config
        self.mi, self.dr, self.rt = import_sionna_rt()
        if threads is not None:
            if threads < 1:
                raise InvalidArgumentError(f"threads must be >= 1 or None (all cores), got {threads}")
            self.dr.set_thread_count(int(threads))
        scene_file = getattr(self.rt.scene, config.scene, None)
        if scene_file is None:
            raise InvalidArgumentError(f"this Sionna RT ({sionna_rt_version()}) ships no scene {config.scene!r}")
        self.scene = self.rt.load_scene(scene_file)
        self.scene.frequency = config.frequency_hz
        # One isotropic, vertically polarised antenna at each end: the map is the path gain of the channel alone.
        self.scene.tx_array = self.rt.PlanarArray(num_rows=1, num_cols=1, pattern="iso", polarization="V")
        self.scene.rx_array = self.rt.PlanarArray(num_rows=1, num_cols=1, pattern="iso", polarization="V")
        self.solver = self.rt.RadioMapSolver()
        self.ground_z_m, self.ground_extent_m = self._find_ground()
        self.top_z_m = float(self.scene.mi_scene.bbox().max.z)

    def _find_ground(self) -> Tuple[float, Tuple[float, float, float, float]]:
        """Height and ``(x_min, y_min, x_max, y_max)`` of the largest flat object: the scene's ground plane."""
        best = None
        for scene_object in self.scene.objects.values():
            box = scene_object.mi_mesh.bbox()
            low, high = (float(box.min.x), float(box.min.y), float(box.min.z)), (
                float(box.max.x),
                float(box.max.y),
                float(box.max.z),
            )
            area = (high[0] - low[0]) * (high[1] - low[1])
            if high[2] - low[2] < 0.01 and (best is None or area > best[0]):
                best = (area, high[2], (low[0], low[1], high[0], high[1]))
        if best is None:
            raise InvalidArgumentError(f"scene {self.config.scene!r} has no flat ground plane to put the radio map on")
        return best[1], best[2]

    def cell_centers(self, center_m: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of every cell centre of the tile centred at ``center_m``, each `(H, W)`, row 0 north."""
        size, cell = self.config.resolution, self.config.cell_size_m
        offsets = (np.arange(size) + 0.5) * cell - size * cell / 2
        x = np.broadcast_to(center_m[0] + offsets[None, :], (size, size))
        y = np.broadcast_to(center_m[1] - offsets[:, None], (size, size))
        return x, y

    def rasterize(self, center_m: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray]:
        """Building mask `(H, W)` bool and "inside the scene" mask `(H, W)` bool of a tile, by vertical rays."""
        mi = self.mi
        x, y = self.cell_centers(center_m)
        count = x.size
        ray = mi.Ray3f(
            o=mi.Point3f(
                mi.Float(x.ravel().astype(np.float32)),
                mi.Float(y.ravel().astype(np.float32)),
                mi.Float(np.full(count, self.top_z_m + 10.0, dtype=np.float32)),
            ),
            d=mi.Vector3f(0.0, 0.0, -1.0),
        )
        hit = self.scene.mi_scene.ray_intersect(ray)
        inside = np.array(hit.is_valid(), dtype=bool).reshape(x.shape)
        height = np.array(hit.p.z, dtype=np.float64).reshape(x.shape) - self.ground_z_m
        return inside & (height > BUILDING_MIN_HEIGHT_M), inside

    def tile_center_range(self) -> Tuple[float, float, float, float]:
        """``(x_min, y_min, x_max, y_max)`` of the centres whose tile lies on the ground plane."""
        half = self.config.tile_size_m / 2
        x_min, y_min, x_max, y_max = self.ground_extent_m
        if x_max - x_min < 2 * half or y_max - y_min < 2 * half:
            raise InvalidArgumentError(
                f"a tile of {self.config.tile_size_m:g} m (resolution x cell_size) does not fit in scene "
                f"{self.config.scene!r} ({x_max - x_min:.0f} m x {y_max - y_min:.0f} m)"
            )
        return x_min + half, y_min + half, x_max - half, y_max - half

    def transmitter_cells(self, buildings: np.ndarray) -> np.ndarray:
        """Flat indices of the cells a transmitter may take: outdoors, ``tx_clearance_m`` from buildings and edge."""
        reach = int(math.ceil(self.config.tx_clearance_m / self.config.cell_size_m))
        if reach == 0:
            return np.flatnonzero(~buildings)
        near = torch.nn.functional.max_pool2d(
            torch.from_numpy(buildings.astype(np.float32))[None, None], 2 * reach + 1, stride=1, padding=reach
        )[0, 0].numpy()
        allowed = near == 0
        allowed[:reach, :] = allowed[-reach:, :] = allowed[:, :reach] = allowed[:, -reach:] = False
        return np.flatnonzero(allowed)

    def place_transmitters(self, tile: Tile, num_tx: int, rng: np.random.Generator) -> List[Dict[str, Any]]:
        """``num_tx`` transmitters at distinct allowed cells (see :meth:`transmitter_cells`), drawn uniformly."""
        cells = self.transmitter_cells(tile.buildings)
        chosen = rng.choice(cells, size=num_tx, replace=False)
        x, y = self.cell_centers(tile.center_m)
        transmitters = []
        for index in chosen.tolist():
            row, col = divmod(index, tile.buildings.shape[1])
            position = [float(x[row, col]), float(y[row, col]), tile.ground_z_m + self.config.tx_height_m]
            transmitters.append({"pixel": [row, col], "position_m": position})
        return transmitters

    def trace(self, tile: Tile, transmitters: Sequence[Dict[str, Any]], seed: int) -> np.ndarray:
        """Path gain (linear) of every transmitter over the tile: `(T, H, W)` float32, row 0 north, 0 = no ray.

        All transmitters go through one solver call; each gets ``rays_per_tx`` rays, and its map does not depend
        on the others (Sionna draws every transmitter's rays from the same seed).
        """
        mi, rt, config = self.mi, self.rt, self.config
        for name in list(self.scene.transmitters):
            self.scene.remove(name)
        for tx, transmitter in enumerate(transmitters):
            self.scene.add(rt.Transmitter(f"tx{tx}", position=mi.Point3f(*transmitter["position_m"])))
        size = config.tile_size_m
        radio_map = self.solver(
            self.scene,
            center=mi.Point3f(tile.center_m[0], tile.center_m[1], tile.ground_z_m + config.rx_height_m),
            orientation=mi.Point3f(0.0, 0.0, 0.0),
            size=mi.Point2f(size, size),
            cell_size=mi.Point2f(config.cell_size_m, config.cell_size_m),
            samples_per_tx=int(config.rays_per_tx),
            max_depth=int(config.max_depth),
            diffraction=bool(config.diffraction),
            seed=int(seed),
        )
        # Sionna's rows run from the tile's smallest y up; images put north (largest y) first.
        return np.ascontiguousarray(np.array(radio_map.path_gain, dtype=np.float32)[:, ::-1, :])


def path_gain_to_grey(
    path_gain: np.ndarray, buildings: np.ndarray, db_range: Tuple[float, float] = RADIOMAPSEER_DB_RANGE
) -> np.ndarray:
    """Linear path gain `(..., H, W)` -> RadioMapSeer's 8-bit grey `(..., H, W)` uint8.

    Cells no ray reached (0, NaN, -inf dB) go to the floor (grey 0), gains outside ``db_range`` are clipped, and
    building cells (``buildings`` `(H, W)` True) are 0, as in RadioMapSeer.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        gain_db = 10.0 * np.log10(path_gain.astype(np.float64))
    gain_db = np.where(np.isfinite(gain_db), gain_db, -np.inf)
    grey = to_grey(torch.from_numpy(db_to_unit(gain_db, db_range))).numpy()
    grey[..., buildings] = 0
    return grey


def covered_shares(path_gain: np.ndarray, buildings: np.ndarray) -> List[float]:
    """Share of the outdoor cells that some ray reached, per transmitter of `(T, H, W)` path gains."""
    reached = np.isfinite(path_gain) & (path_gain > 0) & ~buildings
    return [float(share) for share in reached.sum(axis=(1, 2)) / max(int((~buildings).sum()), 1)]


def trace_seed(seed: int, map_id: int, repeat: int) -> int:
    """Sionna's ray seed for trace ``repeat`` (0: the main one) of map ``map_id`` (a non-negative 31-bit int)."""
    return int(np.random.SeedSequence([seed, map_id, repeat]).generate_state(1)[0] & 0x7FFFFFFF)


def sionna_rt_version() -> str:
    try:
        return importlib.metadata.version("sionna-rt")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _run_settings(config: RaytraceConfig, num_tx: int, seed: int, first_map_id: int, simulation: str) -> dict:
    """The settings that make two runs the same run: a folder is resumed only when they all match."""
    return {
        "config": asdict(config),
        "num_tx": int(num_tx),
        "seed": int(seed),
        "first_map_id": int(first_map_id),
        "simulation": simulation,
    }


def _flatten(settings: dict) -> dict:
    return {**{key: value for key, value in settings.items() if key != "config"}, **settings.get("config", {})}


def _load_previous_run(out_dir: Path, settings: dict, simulation: str) -> dict:
    """The earlier ``meta.json`` of this run in ``out_dir`` (to resume), ``{}`` for a fresh folder; else refuse."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotAFolderError(f"--out {out_dir} exists and is not a directory")
    meta_path = out_dir / METADATA_FILE
    if not meta_path.is_file():
        folders = (out_dir / GAIN_DIR / simulation, out_dir / BUILDINGS_DIR, out_dir / ANTENNAS_DIR)
        occupied = [folder for folder in folders if folder.is_dir() and any(folder.glob("*.png"))]
        if occupied:
            raise OutputExistsError(
                f"{occupied[0]} holds radio-map files but {out_dir} has no {METADATA_FILE}: it was not written by "
                "make-raytraced (it may be RadioMapSeer itself), so nothing is written there; choose another folder"
            )
        return {}
    try:
        previous = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise DataError(f"{meta_path} is not valid JSON ({error}); remove it or choose another folder") from error
    if previous.get("generator") != GENERATOR_NAME:
        raise OutputExistsError(f"{meta_path} was not written by make-raytraced; choose another folder")
    there, now = _flatten(previous.get("settings", {})), _flatten(settings)
    for name, value in now.items():
        if there.get(name) != value:
            raise OutputExistsError(
                f"{out_dir} holds another run ({name} = {there.get(name)!r} there, {value!r} now); resume it with the "
                "same settings or choose another folder"
            )
    return previous


class _TileDrawer:
    """Draws tile after tile over a scene's ground and keeps those that pass the rules of
    :func:`write_raytraced_folder`; draw ``d`` always gives the same candidate, so a resumed run continues the
    sequence of the first."""

    def __init__(self, tracer: SceneTracer, num_tx: int, seed: int, maps: Dict[str, dict], skipped: List[dict]):
        self.tracer, self.config, self.num_tx, self.seed = tracer, tracer.config, num_tx, seed
        self.centers_range = tracer.tile_center_range()
        self.kept_centers = [tuple(record["tile_center_m"]) for record in maps.values()]
        self.skipped_draws = {entry["draw"] for entry in skipped}
        self.next_draw = max([entry["draw"] + 1 for entry in [*maps.values(), *skipped]], default=0)

    def overlaps(self, center: Tuple[float, float]) -> bool:
        """True when ``center``'s tile overlaps a kept tile by more than half its side."""
        limit = self.config.tile_size_m / 2
        return any(max(abs(center[0] - x), abs(center[1] - y)) < limit for x, y in self.kept_centers)

    def rejection(self, buildings: np.ndarray, inside: np.ndarray) -> Optional[str]:
        """Why a tile cannot be used, or None."""
        config, share = self.config, float(buildings.mean())
        if not inside.all():
            return "partly outside the scene"
        if share == 0:
            return "no building in it"
        if not config.min_building_share <= share <= config.max_building_share:
            return (
                f"buildings cover {share:.0%} of it, outside {config.min_building_share:.0%}-"
                f"{config.max_building_share:.0%}"
            )
        if len(self.tracer.transmitter_cells(buildings)) < self.num_tx:
            return f"fewer than {self.num_tx} street cells {config.tx_clearance_m:g} m from every building"
        return None

    def draw(self, log: Callable[[str], None]) -> Tuple[int, Tile]:
        """The next acceptable tile and its draw number; ValueError when the scene has no room left."""
        x_min, y_min, x_max, y_max = self.centers_range
        for _ in range(MAX_FAILED_DRAWS):
            draw, self.next_draw = self.next_draw, self.next_draw + 1
            rng = np.random.default_rng([self.seed, draw])
            center = (float(rng.uniform(x_min, x_max)), float(rng.uniform(y_min, y_max)))
            if draw in self.skipped_draws or self.overlaps(center):
                continue
            buildings, inside = self.tracer.rasterize(center)
            reason = self.rejection(buildings, inside)
            if reason is None:
                return draw, Tile(center, buildings, self.tracer.ground_z_m)
            log(f"make-raytraced: skipped tile at ({center[0]:.0f}, {center[1]:.0f}) m: {reason}")
        raise InvalidArgumentError(
            f"found no acceptable tile of {self.config.tile_size_m:g} m in scene {self.config.scene!r} in "
            f"{MAX_FAILED_DRAWS} draws after {len(self.kept_centers)} tiles; ask for fewer maps or smaller tiles "
            "(resolution x cell_size)"
        )


def _trace_is_written(out_dir: Path, record: dict, simulation: str, num_tx: int) -> bool:
    return simulation in record.get("traces", {}) and all(
        gain_path(out_dir, simulation, record["map"], tx).is_file() for tx in range(num_tx)
    )


def write_raytraced_folder(
    out_dir: PathLike,
    num_maps: int,
    num_tx: int,
    config: Optional[RaytraceConfig] = None,
    seed: int = 0,
    repeat: int = 0,
    simulation: str = DEFAULT_SIMULATION,
    first_map_id: int = 1,
    threads: Optional[int] = None,
    show_progress: bool = True,
    log: Callable[[str], None] = tqdm.write,
) -> Path:
    """Trace ``num_maps`` tiles x ``num_tx`` transmitters of a Sionna RT scene into a RadioMapSeer-layout folder.

    Tiles are drawn uniformly over the scene's ground, one after another from ``default_rng([seed, draw])``, and
    kept when buildings cover between ``min_building_share`` and ``max_building_share`` of them, at least ``num_tx``
    cells can take a transmitter, and they overlap no kept tile by more than half its side. Transmitters are
    drawn among street cells only (see :meth:`SceneTracer.transmitter_cells`), so none stands in a building. A tile
    without buildings, or one where a transmitter's rays reach no outdoor cell, is skipped with a message.

    Trace ``k`` (0: ``gain/<simulation>``, ``k >= 1``: ``gain/<simulation>_repeat<k>``) of map ``m`` uses the seed
    :func:`trace_seed` ``(seed, m, k)``. Every file is written atomically and ``meta.json`` after every map, so an
    interrupted run resumes where it stopped: called again with the same settings (``num_maps`` and ``repeat`` may
    grow), it skips the traces already written. A folder holding another run, or radio maps without ``meta.json``,
    is refused before anything is traced.

    Args:
        out_dir: the folder to write (created if missing).
        num_maps: number of tiles, numbered from ``first_map_id``.
        num_tx: transmitters per tile.
        config: scene and ray-tracing settings (default :class:`RaytraceConfig`).
        seed: base seed of tiles, transmitters and rays.
        repeat: extra traces of every transmitter with other seeds, for the Monte Carlo noise floor.
        simulation: folder name under ``gain/``.
        first_map_id: number of the first tile (RadioMapSeer numbers from 1; the split follows the number).
        threads: Dr.Jit threads (None: all cores; 1: bit-identical reruns).
        show_progress: show a tqdm bar.
        log: where skip messages go.

    Returns:
        `Path`: ``out_dir``.
    """
    config = config or RaytraceConfig()
    for name, value, minimum in (("num_maps", num_maps, 1), ("num_tx", num_tx, 1), ("repeat", repeat, 0)):
        if value < minimum:
            raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value}")
    if first_map_id < 1:
        raise InvalidArgumentError(f"first_map_id must be >= 1 (RadioMapSeer numbers maps from 1), got {first_map_id}")
    if not simulation or os.sep in simulation or simulation.startswith("."):
        raise InvalidArgumentError(f"simulation must be a plain folder name, got {simulation!r}")
    out_dir = Path(out_dir)
    settings = _run_settings(config, num_tx, seed, first_map_id, simulation)
    previous = _load_previous_run(out_dir, settings, simulation)

    tracer = SceneTracer(config, threads=threads)
    maps: Dict[str, dict] = dict(previous.get("maps", {}))
    skipped: List[dict] = list(previous.get("skipped", []))
    simulations = [simulation] + [repeat_simulation(simulation, k) for k in range(1, repeat + 1)]
    meta = {
        "generator": GENERATOR_NAME,
        "layout": LAYOUT_DESCRIPTION,
        "sionna_rt_version": sionna_rt_version(),
        "settings": settings,
        "scene_ground_extent_m": list(tracer.ground_extent_m),
        "image_orientation": "row 0 = largest y (north), column 0 = smallest x, scene metres",
        "db_range": list(RADIOMAPSEER_DB_RANGE),
        "simulations": sorted(set(previous.get("simulations", [])) | set(simulations)),
        "maps": maps,
        "skipped": skipped,
    }
    drawer = _TileDrawer(tracer, num_tx, seed, maps, skipped)

    with tqdm(total=num_maps, desc=f"tracing {config.scene}", unit="map", disable=not show_progress) as progress:
        for map_id in range(first_map_id, first_map_id + num_maps):
            record = maps.get(str(map_id))
            if record is not None:  # traced before: the same tile, its mask computed again for the missing traces
                center = tuple(record["tile_center_m"])
                tile = Tile(center, tracer.rasterize(center)[0], record["ground_z_m"])
            while True:
                if record is None:
                    draw, tile = drawer.draw(log)
                    record = {
                        "map": map_id,
                        "draw": draw,
                        "tile_center_m": list(tile.center_m),
                        "tile_size_m": config.tile_size_m,
                        "ground_z_m": tile.ground_z_m,
                        "building_share": float(tile.buildings.mean()),
                        "transmitters": tracer.place_transmitters(tile, num_tx, np.random.default_rng([seed, draw, 1])),
                        "traces": {},
                    }
                if _trace_is_written(out_dir, record, simulation, num_tx) or _trace_one(
                    tracer, out_dir, record, tile, seed, simulation, 0
                ):
                    break
                # The main trace reached no outdoor cell of some transmitter: the tile is not written.
                skipped.append({"draw": record["draw"], "tile_center_m": record["tile_center_m"]})
                log(
                    f"make-raytraced: skipped tile at ({tile.center_m[0]:.0f}, {tile.center_m[1]:.0f}) m: a "
                    f"transmitter's {config.rays_per_tx} rays reached no outdoor cell"
                )
                record = None
            for k in range(1, repeat + 1):
                if not _trace_is_written(out_dir, record, repeat_simulation(simulation, k), num_tx):
                    _trace_one(tracer, out_dir, record, tile, seed, repeat_simulation(simulation, k), k)
            maps[str(map_id)] = record
            drawer.kept_centers.append(tuple(record["tile_center_m"]))
            atomic_write_json(out_dir / METADATA_FILE, meta)
            progress.update(1)
    return out_dir


def _trace_one(
    tracer: SceneTracer, out_dir: Path, record: dict, tile: Tile, seed: int, simulation: str, repeat: int
) -> bool:
    """Trace and write one simulation of a map; False (nothing written) when the main trace covers no cell."""
    trace_seed_value = trace_seed(seed, record["map"], repeat)
    start = time.perf_counter()
    path_gain = tracer.trace(tile, record["transmitters"], trace_seed_value)
    seconds = time.perf_counter() - start
    shares = covered_shares(path_gain, tile.buildings)
    if repeat == 0 and min(shares) == 0:
        return False
    grey = path_gain_to_grey(path_gain, tile.buildings)
    map_id = record["map"]
    if repeat == 0:  # the map's building and antenna images go with its main trace
        write_grey_png(buildings_path(out_dir, map_id), tile.buildings.astype(np.uint8) * 255)
    for tx, transmitter in enumerate(record["transmitters"]):
        if repeat == 0:
            antenna = np.zeros(tile.buildings.shape, dtype=np.uint8)
            antenna[tuple(transmitter["pixel"])] = 255
            write_grey_png(antenna_path(out_dir, map_id, tx), antenna)
        write_grey_png(gain_path(out_dir, simulation, map_id, tx), grey[tx])
    record["traces"][simulation] = {
        "seed": trace_seed_value,
        "seconds": round(seconds, 3),
        "seconds_per_tx": round(seconds / len(record["transmitters"]), 3),
        "covered_share": [round(share, 4) for share in shares],
    }
    return True
