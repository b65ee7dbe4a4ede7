"""[[fleets]] in the topology (rkdsc.common.config): expansion into transmitters, validation errors
naming the field and the value, reproducible draws, the O(1) lookup, and certificates for them."""
from __future__ import annotations

import dataclasses
import time

import pytest

from rkdsc.common.config import FLEET_KEYS, ConfigError, FleetConfig, TransmitterConfig, parse_config


def _doc(fleets, transmitters=({"id": "edge-near", "seed": 1},), **top):
    return {"bundle": {"path": "bundle"}, "transmitters": [dict(t) for t in transmitters],
            "fleets": [dict(f) for f in fleets], **top}


CITY = {"name": "city", "id_pattern": "dev-{index:04d}", "count": 50, "seed_base": 100, "task": "shapes",
        "fading": "rayleigh", "snr_db_range": [-5.0, 20.0], "limit": 4, "batch_size": 2, "max_in_flight": 8,
        "path_gain_db": -1.0}


def test_a_fleet_expands_into_transmitters_after_the_listed_ones(tmp_path):
    cfg = parse_config(_doc([CITY, {"name": "lab", "id_pattern": "lab-{index}", "count": 3, "snr_db": 7.0,
                                    "images": "imgs"}]), base_dir=tmp_path, env={})
    ids = [t.id for t in cfg.transmitters]
    assert ids[:3] == ["edge-near", "dev-0000", "dev-0001"] and ids[-3:] == ["lab-0", "lab-1", "lab-2"]
    assert len(ids) == 1 + 50 + 3 and cfg.fleet("city").ids == ids[1:51]
    for i, t in enumerate(cfg.fleet_transmitters("city")):
        assert (t.id, t.seed, t.task, t.fading, t.limit, t.batch_size, t.max_in_flight, t.path_gain_db) == \
            (f"dev-{i:04d}", 100 + i, "shapes", "rayleigh", 4, 2, 8, -1.0)
        assert -5.0 <= t.snr_db <= 20.0 and t.images == tmp_path / "runs" / "samples" / "shapes"
        assert t.initial_estimate_db == t.snr_db - 1.0  # each device's own SNR
    assert len({t.snr_db for t in cfg.fleet_transmitters("city")}) > 40  # drawn, not one value
    lab = cfg.fleet_transmitters("lab", slice(1, None))
    assert [(t.id, t.snr_db, t.seed, t.images) for t in lab] == [("lab-1", 7.0, 1, tmp_path / "imgs"),
                                                                  ("lab-2", 7.0, 2, tmp_path / "imgs")]
    # devices are independent objects: changing one leaves the others alone
    cfg.transmitter("lab-1").snr_db = 30.0
    assert cfg.transmitter("lab-2").snr_db == 7.0


def test_a_fleet_is_a_transmitter_template_every_per_device_key_is_a_fleet_key():
    fleet_keys = {f.name for f in dataclasses.fields(FleetConfig) if f.init}
    assert set(FLEET_KEYS) == {f.name for f in dataclasses.fields(TransmitterConfig)} - {"id", "seed"}
    assert set(FLEET_KEYS) <= fleet_keys


def test_draws_are_reproducible_seeded_and_stable_when_the_fleet_grows():
    def snrs(**kw):
        return [t.snr_db for t in parse_config(_doc([{**CITY, **kw}]), env={}).fleet_transmitters("city")]

    a = snrs()
    assert a == snrs() and a[:20] == snrs(count=20)      # same seed, same values; device i keeps its draw
    assert a != snrs(draw_seed=7) and a != snrs(seed_base=101)  # draw_seed defaults to seed_base
    assert a == snrs(seed_base=5, draw_seed=100)           # ... and decides the draws alone
    assert all(round(v, 3) == v for v in a)
    assert abs(sum(a) / len(a) - 7.5) < 3.0                 # uniform over [-5, 20]


def test_distance_and_azimuth_draws_go_into_each_devices_medium():
    doc = _doc([{**CITY, "distance_m_range": [10.0, 500.0], "azimuth_deg_range": [0.0, 90.0],
                 "medium": {"speed_mps": 3.0}}], medium={})  # a [medium] table with its defaults
    cfg = parse_config(doc, env={})
    devs = cfg.fleet_transmitters("city")
    assert all(10.0 <= t.medium.distance_m <= 500.0 and 0.0 <= t.medium.azimuth_deg <= 90.0 for t in devs)
    assert all(t.medium.speed_mps == 3.0 for t in devs)     # the template's other keys
    assert len({t.medium.distance_m for t in devs}) > 40 and devs[0].medium is not devs[1].medium
    with pytest.raises(ConfigError, match=r"fleets\[0\]\.distance_m_range: .*needs a \[medium\] table"):
        parse_config(_doc([{**CITY, "distance_m_range": [10.0, 500.0]}]), env={})


@pytest.mark.parametrize("change, message", [
    ({"id_pattern": "dev"}, r"fleets\[0\]\.id_pattern: expected a format string whose only field is \{index\}.*got 'dev'"),
    ({"id_pattern": "dev-{i}"}, r"fleets\[0\]\.id_pattern: expected .*\{index\}.*got 'dev-\{i\}'"),
    ({"id_pattern": "dev-{index:s}"}, r"fleets\[0\]\.id_pattern: expected .*formatting an integer.*got 'dev-\{index:s\}'"),
    ({"id_pattern": "dev {index}"}, r"fleets\[0\]\.id_pattern: expected ids without spaces.*'dev 0'.*got 'dev \{index\}'"),
    ({"count": 0}, r"fleets\[0\]\.count: expected a value >= 1, got 0"),
    ({"snr_db_range": [5.0, 1.0]}, r"fleets\[0\]\.snr_db_range: expected \[lo, hi\] with -100 <= lo <= hi <= 100, got \[5.0, 1.0\]"),
    ({"snr_db_range": [1.0]}, r"fleets\[0\]\.snr_db_range: expected \[lo, hi\] in dB"),
    ({"fading": "foo"}, r"fleets\[0\]\.fading: expected one of awgn, .*got 'foo'"),
    ({"seed": 3}, r"fleets\[0\]\.seed: unknown key 'seed' \(known keys: name, id_pattern, count, seed_base"),
])
def test_fleet_errors_name_the_field_and_the_value(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_doc([{**CITY, **change}]), env={})


def test_two_fleets_may_not_share_ids_or_names():
    other = {"name": "town", "id_pattern": "dev-{index:04d}", "count": 5}
    with pytest.raises(ConfigError, match=r"fleets\[1\]\.id_pattern: 'dev-\{index:04d\}' makes device 0 id "
                                          r"'dev-0000', which fleets\[0\] \('city'\) device 0 already has"):
        parse_config(_doc([CITY, other]), env={})
    with pytest.raises(ConfigError, match=r"fleets\[0\]\.id_pattern: 'dev-\{index:04d\}' makes device 7 id "
                                          r"'dev-0007', which transmitters\[1\] already has"):
        parse_config(_doc([CITY], transmitters=[{"id": "a"}, {"id": "dev-0007"}]), env={})
    with pytest.raises(ConfigError, match=r"fleets\[1\]\.name: duplicate fleet name 'city'"):
        parse_config(_doc([CITY, {**other, "name": "city", "id_pattern": "t{index}"}]), env={})
    with pytest.raises(ConfigError, match=r"fleets: no fleet named 'x'; known: city"):
        parse_config(_doc([CITY]), env={}).fleet("x")


def test_ten_thousand_devices_load_fast_and_lookup_is_a_dict():
    t0 = time.perf_counter()
    cfg = parse_config(_doc([{**CITY, "count": 10_000, "id_pattern": "d{index:05d}"}]), env={})
    load_s = time.perf_counter() - t0
    assert len(cfg.transmitters) == 10_001 and load_s < 5.0, load_s  # about 0.1 s on a quiet 2-core machine
    t0 = time.perf_counter()
    for i in range(10_000):
        assert cfg.transmitter(f"d{i:05d}").seed == 100 + i
    assert time.perf_counter() - t0 < 2.0  # 10,000 linear scans of 10,000 would take seconds
    # the index follows changes to the list; unknown ids name a few known ones, not 10,000
    cfg.transmitters.insert(0, TransmitterConfig(id="new"))
    assert cfg.transmitter("new").id == "new" and cfg.transmitter("d00007").seed == 107
    with pytest.raises(ConfigError) as err:
        cfg.transmitter("nope")
    assert "(10002 in all)" in str(err.value) and len(str(err.value)) < 300


def test_certs_are_issued_for_fleet_devices(tmp_path):
    from rkdsc.common.certs import cli as certs_cli

    config = tmp_path / "t.toml"
    config.write_text('[bundle]\npath = "b"\n[[transmitters]]\nid = "edge-near"\n'
                      '[[fleets]]\nname = "city"\nid_pattern = "dev-{index:02d}"\ncount = 12\n')
    t0 = time.perf_counter()
    assert certs_cli(["--out", str(tmp_path / "certs"), "--config", str(config)]) == 0
    elapsed = time.perf_counter() - t0
    names = sorted(p.name for p in (tmp_path / "certs" / "transmitters").glob("*.pem"))
    assert names == ["dev-%02d.pem" % i for i in range(12)] + ["edge-near.pem"]
    assert elapsed < 30.0
