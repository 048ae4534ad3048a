from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "stylegan2"


def fixture_file(name: str) -> Path:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"StyleGAN2 reference fixtures are not here ({path} is absent: run beside ../shared)")
    return path


@pytest.fixture(scope="session")
def ada_pkl() -> Path:
    return fixture_file("ada_tiny.pkl")


@pytest.fixture(scope="session")
def rosinality_pt() -> Path:
    return fixture_file("rosinality_tiny.pt")
