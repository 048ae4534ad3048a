"""Engines on one host share its cores: each takes cores // busy engines, counted by locks that
die with their process; a fixed thread count is kept; the cgroup quota caps the cores."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.model import host
from engine.model.host import HostShare, quota_cores

REPO = Path(__file__).resolve().parents[1]

PEER = """
import sys, time
from pathlib import Path
from engine.model.host import HostShare
share = HostShare(folder=Path(sys.argv[1]), cores=4)
if sys.argv[2] == "busy":
    share.working()
print("ready", flush=True)
sys.stdin.readline()
"""


def peer(folder: Path, state: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", PEER, str(folder), state], cwd=REPO, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == "ready"
    return p


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "engines"


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_busy_engines_split_the_cores_and_idle_ones_do_not_count(folder, keep_threads):
    me = HostShare(folder=folder, cores=4)
    assert me.working() == 4  # alone
    peers = [peer(folder, "busy"), peer(folder, "idle")]
    try:
        assert me.busy_peers() == 1
        assert me.working(now=time.monotonic() + 1) == 2 and torch.get_num_threads() == 2
        peers.append(peer(folder, "busy"))
        assert me.working(now=time.monotonic() + 2) == 1
    finally:
        for p in peers:
            p.kill()
            p.wait()
    # the kernel dropped the dead peers' locks: this engine has the host again, and their slots go
    assert me.working(now=time.monotonic() + 3) == 4
    assert sorted(os.listdir(folder)) == [str(os.getpid())]
    me.close()


def test_an_idle_engine_frees_its_cores_for_a_peer(folder):
    me = HostShare(folder=folder, cores=4)
    me.working()
    assert me.busy_peers() == 0  # its own slot is never counted
    me.idle()
    assert not me.busy
    me.close()
    assert not (folder / str(os.getpid())).exists()


def test_a_fixed_thread_count_is_kept_beside_busy_peers(folder, keep_threads):
    me = HostShare(fixed=3, folder=folder, cores=4)
    p = peer(folder, "busy")
    try:
        assert me.working(now=time.monotonic() + 1) == 3
    finally:
        p.kill()
        p.wait()
    me.close()


def test_a_folder_others_can_write_turns_sharing_off(tmp_path, keep_threads):
    shared = tmp_path / "open"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    me = HostShare(folder=shared, cores=2)
    assert me.working() == 2 and not me.busy  # no slot: the engine keeps its cores
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert HostShare(folder=link, cores=2)._fd is None  # a symlink is not our folder


def test_junk_in_the_folder_is_not_an_engine(folder):
    me = HostShare(folder=folder, cores=2)
    (folder / "notes.txt").write_text("x")
    (folder / "99999999999999999999999").write_text("")  # no such pid
    os.mkfifo(folder / "12")
    assert me.busy_peers() == 0
    me.close()


def test_prepare_process_takes_the_share_or_the_fixed_count(monkeypatch, folder, keep_threads):
    from engine.model.runtime import prepare_process

    monkeypatch.setenv(host.DIR_ENV, str(folder))
    monkeypatch.setattr(host, "SHARE", None)
    assert prepare_process(1) == 1 and torch.get_num_threads() == 1
    assert prepare_process(None) == host.available_cores() == torch.get_num_threads()
    host.SHARE.close()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_cgroup_quota_caps_the_cores(tmp_path, monkeypatch):
    root = tmp_path / "cg"
    monkeypatch.setattr(host, "_cgroup_v2_dirs", lambda r: [r / "a" / "b", r / "a", r])
    write(root / "a" / "b" / "cpu.max", "max 100000\n")
    write(root / "a" / "cpu.max", "150000 100000\n")  # --cpus 1.5 on the parent
    write(root / "cpu.max", "max 100000\n")
    assert quota_cores(root) == 1.5
    write(root / "a" / "b" / "cpu.max", "50000 100000\n")
    assert quota_cores(root) == 0.5
    write(root / "a" / "b" / "cpu.max", "junk")
    write(root / "a" / "cpu.max", "-1 0")
    assert quota_cores(root) is None
    v1 = tmp_path / "v1"
    write(v1 / "cpu" / "cpu.cfs_quota_us", "200000\n")
    write(v1 / "cpu" / "cpu.cfs_period_us", "100000\n")
    monkeypatch.setattr(host, "_cgroup_v2_dirs", lambda r: [r])
    assert quota_cores(v1) == 2.0
    monkeypatch.setattr(host, "quota_cores", lambda: 1.2)
    monkeypatch.setattr(host, "affinity_cores", lambda: 8)
    assert host.available_cores() == 2
