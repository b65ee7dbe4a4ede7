"""deploy/paper-cpu.toml and `make paper-cpu` (docs/paper-topology.md) agree with each other and with
the CPU presets: the topology validates, its tasks are the task names the presets export, and the
Makefile writes the bundle and image folders the topology reads."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from rkdsc.common.config import load_config

REPO = Path(__file__).resolve().parents[2]
PRESETS = ("cifar10-cpu", "tinyimagenet-cpu")


@pytest.fixture(scope="module")
def cfg():
    return load_config(REPO / "deploy" / "paper-cpu.toml", env={})


@pytest.fixture(scope="module")
def recipe() -> str:
    text = (REPO / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    m = re.search(r"^paper-cpu:.*\n((?:\t.*\n)+)", text, re.M)
    assert m, "Makefile has no paper-cpu target"
    return m.group(1)


def test_tasks_are_the_presets_task_names(cfg):
    pytest.importorskip("torch")
    from rkdsc.common.train.distill import task_name
    from rkdsc.common.train.presets import load_preset

    names = {task_name(load_preset(p)) for p in PRESETS}
    assert {t.task for t in cfg.transmitters} == names
    for task in names:  # each task near (AWGN) and far (Rayleigh): the paper's distances
        fadings = {t.fading for t in cfg.transmitters if t.task == task}
        assert fadings == {"awgn", "rayleigh"}, (task, fadings)


def test_makefile_writes_what_the_topology_reads(cfg, recipe):
    rel = lambda p: Path(p).resolve().relative_to(REPO).as_posix()  # noqa: E731
    assert f"--out {rel(cfg.bundle.path)} " in recipe
    for t in cfg.transmitters:
        assert f"--out {rel(t.images)} " in recipe, t.id
        assert rel(t.images).endswith(f"{t.task}-val"), t.id  # each task streams its own split
    for preset in PRESETS:
        assert f"--preset {preset} --workdir runs/{preset} " in recipe
        assert f"runs/{preset}/bundles/rkd-sc" in recipe
    assert "rkdsc demo --config deploy/paper-cpu.toml" in recipe
