"""Importers: foreign data -> an edge-gmm dataset, by format name (`IMPORTERS`).

Every importer parses its whole input first and raises DataError naming file and line/offset on the
first problem; only then does it write through DatasetWriter, so malformed input leaves nothing behind.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from edge_gmm.data.format import Dataset
from edge_gmm.errors import ConfigError

# format name -> module under edge_gmm.data.importers defining `load(src, test, opts) -> Parsed`
IMPORTERS: dict[str, str] = {
    "ts": "ts",
    "wav-folder": "wav_folder",
    "image-folder": "image_folder",
    "csv": "csv_series",
    "edge-impulse": "edge_impulse",
}


@dataclass
class ImportOptions:
    """Knobs the importers understand; each importer reads the ones that apply to its format."""

    name: str = ""  # dataset name; "" = derived from the source
    seed: int = 0  # for the val/test split
    val_frac: float = 0.15  # of the training sessions, by class
    test_frac: float = 0.15  # only when no --test source is given
    rate: float = 0.0  # Hz for formats without one (ts: default 1.0)
    unequal: str = "pad"  # ts with unequal lengths: pad | truncate
    window_s: float = 0.0  # recommended window; 0 = the importer's default
    hop_s: float = 0.0
    image_size: str = ""  # image-folder: "HxW"; "" = the first image's size
    time_column: str = ""  # csv: "" = the first of timestamp/time/t
    time_unit: str = "s"  # csv: s | ms | us | ns (ISO dates are always understood)
    label_column: str = ""  # csv: per-row labels -> segments
    modality: str = ""  # name of the imported modality; "" = the importer's default
    hmac_key: str = ""  # edge-impulse: verify HMAC-SHA256 signatures with this key
    overwrite: bool = False


def import_dataset(fmt: str, src: str | Path, out: str | Path, test: str | Path | None = None, opts: ImportOptions | None = None) -> Dataset:
    """Import `src` (and the held-out `test`) in format `fmt` into a dataset at `out`."""
    if fmt not in IMPORTERS:
        raise ConfigError(f"unknown import format {fmt!r}; choose one of: {', '.join(IMPORTERS)}")
    opts = opts or ImportOptions()
    mod = importlib.import_module(f"edge_gmm.data.importers.{IMPORTERS[fmt]}")
    parsed = mod.load(Path(src), Path(test) if test else None, opts)
    return parsed.write(Path(out), opts)
