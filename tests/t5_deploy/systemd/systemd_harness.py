"""Helpers of the systemd unit and mount helper tests (a module name of its
own: `from conftest import` would be ambiguous between conftest files)."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parents[3]
SYSTEMD_DIR = REPO / "systemd"
