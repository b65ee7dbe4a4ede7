"""docs/topology.md is generated from common/config.py and cannot drift: every topology key has an
entry with a description, and the committed file equals what the generator writes now."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_topology_doc", ROOT / "scripts" / "gen_topology_doc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_config_field_has_a_described_entry(gen):
    from rkdsc.common import config

    rows = gen.entries()  # raises DocError naming any field without a description
    by_class = {}
    for r in rows:
        by_class.setdefault(r["class"], set()).add(r["key"])
        assert r["description"], r
    for _, cls_name, _ in gen.SECTIONS:
        keys = {f.name for f in dataclasses.fields(getattr(config, cls_name)) if f.init}
        assert by_class[cls_name] == keys, cls_name
    rician = next(r for r in rows if r["key"] == "rician_k")
    assert rician["default"] == "`3.0`" and "K factor" in rician["description"]
    snr = next(r for r in rows if r["class"] == "TransmitterConfig" and r["key"] == "snr_db")
    assert (snr["unit"], snr["range"]) == ("dB", "-100 .. 100")


def test_the_committed_reference_is_up_to_date(gen):
    assert gen.main(["--check"]) == 0, ("docs/topology.md is stale: run "
                                        ".venv/bin/python scripts/gen_topology_doc.py")
    text = (ROOT / "docs" / "topology.md").read_text()
    for key in ("path_gain_db", "limit", "max_in_flight", "result_timeout_s", "initial_snr_estimate_db", "root"):
        assert f"`{key}`" in text


def test_a_stale_file_and_a_field_without_comment_fail(gen, tmp_path):
    stale = tmp_path / "topology.md"
    stale.write_text("# old\n")
    assert gen.main(["--check", "--out", str(stale)]) == 1

    @dataclasses.dataclass
    class Described:
        a: int = 1  # the a
        b: float = 2.0  # the b, whose comment
                        # goes on
        c: str = ""

    comments = gen.field_comments(Described)
    assert comments == {"a": "the a", "b": "the b, whose comment goes on", "c": ""}


def test_every_preset_key_is_in_the_training_interfaces_reference():
    from rkdsc.common.train import presets

    text = (ROOT / "docs" / "training-interfaces.md").read_text()
    section = text[text.index("## Preset keys"):]
    for f in dataclasses.fields(presets.Preset):
        if f.init and f.name not in presets.SECTIONS:
            assert f"`{f.name}`" in section, f.name
    for name, cls in presets.SECTIONS.items():
        block = section[section.index(f"- `[{name}]`"):]
        nxt = block.find("\n- `[", 1)
        block = block if nxt < 0 else block[:nxt]
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in block, f"[{name}] {f.name} is missing in docs/training-interfaces.md"
