from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THREADS_ENV = "WSPACE_TEST_THREADS"  # tests/test_numerics.py reruns tests at this many torch threads


def pytest_configure(config) -> None:
    """torch caps OMP_NUM_THREADS at the cores it sees; a thread count asked for here is set as is."""
    if os.environ.get(THREADS_ENV):
        import torch

        torch.set_num_threads(int(os.environ[THREADS_ENV]))


@pytest.fixture(autouse=True)
def engine_settings_stay_in_their_test():
    """A test that prepares this process as an engine (a CLI command run in-process) leaves no
    host share behind: later tests would otherwise have their torch threads refitted as other
    engines on the machine come and go (engine/model/host.py), and keep the thread count they had."""
    import torch

    from engine.model import host

    threads = torch.get_num_threads()
    yield
    if host.SHARE is not None:
        host.SHARE.close()
        host.SHARE = None
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random-init 32-px generator in the native format, for tests of the engine's plumbing."""
    import torch

    from engine.model.checkpoints import save_native
    from engine.model.networks import Generator, GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=32, z_dim=32, w_dim=32, mapping_layers=2,
                                  channels={4: 32, 8: 32, 16: 32, 32: 16}))
    path = tmp_path_factory.mktemp("m") / "tiny.safetensors"
    save_native(G, path)
    return path


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A redis-server of the test module's own, on a free port (tests/redis_helpers.py)."""
    from tests.redis_helpers import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()
