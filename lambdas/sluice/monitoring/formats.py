"""Names and version of the JSON documents of the drift statistics: profiles, sketches, reports."""

from __future__ import annotations

PROFILE_FORMAT = "sluice.drift-profile"
SKETCH_FORMAT = "sluice.drift-sketch"
REPORT_FORMAT = "sluice.drift-report"
FORMAT_VERSION = 1
