"""Default locations, defined once: the repository, its data folders, the results database and
the shared benchmark data root.

=======================  ================================================  =================================================
name                     default                                           override
=======================  ================================================  =================================================
:data:`REPO_ROOT`        the folder holding ``core/``                      –
:data:`CATALOG_TOML`     ``data/stages.toml``                              –
:data:`WEIGHTS_DIR`      ``data/weights`` (learned-codec checkpoints)      –
:data:`SEG_MODELS_DIR`   ``data/models`` (segmenter models)                –
:data:`SEGMENTERS_TOML`  ``data/segmenters.toml`` (segmenter per dataset)  ``$BIOCODEC_SEGMENTERS``, ``$BIOCODEC_MEMBRANES``
:func:`default_db`       ``results.duckdb`` in the repository              ``$BIOCODEC_DB``
:func:`data_root`        ``../shared/data`` beside the repository          ``$BIOCODEC_DATA_ROOT``
=======================  ================================================  =================================================

Every entry point (runner, dashboard, file CLI, training, bench) takes its defaults from here,
so a command gives the same answer from any working directory.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
CATALOG_TOML = DATA_DIR / "stages.toml"
WEIGHTS_DIR = DATA_DIR / "weights"
SEG_MODELS_DIR = DATA_DIR / "models"
SEGMENTERS_TOML = DATA_DIR / "segmenters.toml"
SHARED_DATA_ROOT = (REPO_ROOT.parent / "shared" / "data").resolve()


def default_db(environ=os.environ) -> Path:
    """The results database: ``$BIOCODEC_DB`` if set, else ``results.duckdb`` in the repository (absolute)."""
    value = environ.get("BIOCODEC_DB")
    return Path(value).expanduser().resolve() if value else REPO_ROOT / "results.duckdb"


def data_root(environ=os.environ) -> Path:
    """The benchmark data root: ``$BIOCODEC_DATA_ROOT`` if set, else ``../shared/data`` beside the repository."""
    value = environ.get("BIOCODEC_DATA_ROOT")
    return Path(value).expanduser().resolve() if value else SHARED_DATA_ROOT
