"""Paths shared by the benchmark-data tests: shipped fixtures and the optional real data."""

import os
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "data"
BROKEN = FIXTURES / "broken"
SHARED_DATA = Path(os.environ.get("BIOMEGATRON_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data"))
SAMPLES = Path(__file__).parents[1] / "biomegatron_nemo" / "samples"
