"""rkdsc.common.config (topology TOML), deploy/topology.toml and rkdsc.common.data.samples."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rkdsc.common.config import FADINGS, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_topology_has_three_devices_at_different_distances():
    cfg = load_config(ROOT / "deploy" / "topology.toml", env={})
    assert cfg.bundle.path == ROOT / "deploy" / "bundle"
    got = [(t.id, t.task, t.snr_db, t.fading) for t in cfg.transmitters]
    assert got == [("edge-near", "shapes", 20.0, "awgn"), ("edge-mid", "digits", 5.0, "rayleigh"),
                   ("edge-far", "digits", -5.0, "awgn")]  # three devices over the bundle's two tasks
    assert all(t.images == ROOT / "runs" / "samples" / t.task == cfg.default_images(t.task)
               for t in cfg.transmitters)
    assert len({t.seed for t in cfg.transmitters}) == 3
    assert cfg.relay_addr == f"127.0.0.1:{cfg.basestation.port}"


def test_channel_names_have_one_definition():
    """FADINGS, EQUALIZERS and the channel defaults are assigned once, in numpy_channel.py; the
    config (and everything else) imports them."""
    import re

    from rkdsc.common import channel
    from rkdsc.common.config import TransmitterConfig

    assert FADINGS is channel.FADINGS and TransmitterConfig(id="x").fading == channel.DEFAULT_FADING
    names = ("FADINGS", "EQUALIZERS", "DEFAULT_FADING", "DEFAULT_EQUALIZER", "DEFAULT_K_FACTOR")
    pattern = re.compile(rf"^\s*({'|'.join(names)})\s*(:[^=]*)?=", re.M)
    found = {}
    for folder in ("common", "edge", "basestation", "server"):
        for path in (ROOT / folder).rglob("*.py"):
            for name, _ in pattern.findall(path.read_text(encoding="utf-8")):
                found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert found == {name: ["common/channel/numpy_channel.py"] for name in names}
    literal = repr(tuple(channel.FADINGS))  # nor a copy under another name (CHANNELS = ("awgn", ...))
    copies = [str(p.relative_to(ROOT)) for folder in ("common", "edge", "basestation", "server")
              for p in (ROOT / folder).rglob("*.py") if literal.replace("'", '"') in p.read_text(encoding="utf-8")]
    assert copies == ["common/channel/numpy_channel.py"]


def _doc(**tx_overrides):
    tx = [{"id": "a"}, {"id": "b", **tx_overrides}]
    return {"bundle": {"path": "b"}, "transmitters": tx}


@pytest.mark.parametrize("doc, message", [
    (_doc(fading="foo"),
     "transmitters[1].fading: expected one of awgn, rayleigh, rayleigh_fast, rician, got 'foo'"),
    (_doc(snr_db="loud"), "transmitters[1].snr_db: expected a finite number, got 'loud'"),
    (_doc(batch_size=0), "transmitters[1].batch_size: expected a value >= 1, got 0"),
    (_doc(id="a"), "transmitters[1].id: duplicate transmitter id 'a'"),
    (_doc(snr=3), "transmitters[1].snr: unknown key"),
    ({"transmitters": []}, "bundle: required section [bundle] is missing"),
    ({"bundle": {"path": "b"}, "server": {"port": 70000}}, "server.port: expected a value <= 65535, got 70000"),
    ({"bundle": {"path": "b"}, "server": {"max_wait_ms": True}}, "server.max_wait_ms: expected a finite number, got True"),
    ({"bundle": {"path": "b"}, "basestation": {"server_addr": "nohost"}},
     "basestation.server_addr: expected host:port, got 'nohost'"),
    ({"bundle": {}}, "bundle.path: required key is missing"),
    ({"bundle": {"path": "b"}, "relay_addr": "x"}, "relay_addr: unknown key 'relay_addr'"),
    (_doc(seed=1.5), "transmitters[1].seed: expected an integer, got 1.5"),
    (_doc(limit=True), "transmitters[1].limit: expected an integer, got True"),
    (_doc(id="a b"), "transmitters[1].id: expected an id without spaces, at most 128 characters, got 'a b'"),
    ({"bundle": {"path": "b"}, "transmitters": {"id": "x"}}, "transmitters: expected a list, got {'id': 'x'}"),
])
def test_validation_errors_name_the_field_and_the_value(doc, message):
    with pytest.raises(ConfigError) as err:
        parse_config(doc, env={})
    assert message in str(err.value)


def test_load_config_prefixes_the_file(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('[bundle]\npath = "b"\n[[transmitters]]\nid = "x"\nfading = "foo"\n')
    with pytest.raises(ConfigError, match=r"t\.toml: transmitters\[0\]\.fading: .* got 'foo'"):
        load_config(path, env={})
    path.write_text("[bundle\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, env={})


def test_relative_paths_resolve_against_root_which_is_relative_to_the_file(tmp_path):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "t.toml"
    path.write_text('root = ".."\n[bundle]\npath = "deploy/bundle"\n[[transmitters]]\nid = "x"\nimages = "imgs"\n'
                    '[[transmitters]]\nid = "y"\ntask = "other"\n')
    cfg = load_config(path, env={})
    assert cfg.root == tmp_path.resolve()
    assert cfg.bundle.path == tmp_path.resolve() / "deploy" / "bundle"
    assert cfg.transmitter("x").images == tmp_path.resolve() / "imgs"
    assert cfg.transmitter("y").images == tmp_path.resolve() / "runs" / "samples" / "other"
    path.write_text('[bundle]\npath = "b"\n')  # no root: the file's folder
    assert load_config(path, env={}).bundle.path == (tmp_path / "conf" / "b").resolve()


def test_only_endpoints_come_from_the_environment():
    env = {"RKDSC_SERVER_BIND": "0.0.0.0:6000", "RKDSC_SERVER_METRICS_PORT": "0",
           "RKDSC_SERVER_ADDR": "server:6000", "RKDSC_RELAY_BIND": "0.0.0.0:6001",
           "RKDSC_RELAY_METRICS_PORT": "-1", "RKDSC_RELAY_ADDR": "relay:6001",
           "RKDSC_SNR_DB": "99"}  # not an endpoint: ignored
    cfg = parse_config({"bundle": {"path": "b"}, "transmitters": [{"id": "x", "snr_db": 3.0}]}, env=env)
    assert (cfg.server.host, cfg.server.port, cfg.server.metrics_port) == ("0.0.0.0", 6000, 0)
    assert (cfg.basestation.host, cfg.basestation.port, cfg.basestation.metrics_port) == ("0.0.0.0", 6001, -1)
    assert cfg.basestation.server_addr == "server:6000" and cfg.relay_addr == "relay:6001"
    assert cfg.transmitter("x").snr_db == 3.0
    with pytest.raises(ConfigError, match="RKDSC_RELAY_BIND: expected host:port"):
        parse_config({"bundle": {"path": "b"}}, env={"RKDSC_RELAY_BIND": "6001"})
    # a wildcard bind address is reached through localhost
    assert parse_config({"bundle": {"path": "b"}, "basestation": {"host": "0.0.0.0", "port": 7}},
                        env={}).relay_addr == "127.0.0.1:7"


def test_samples_are_the_held_back_split_in_class_folders_and_deterministic(tmp_path):
    from rkdsc.common.data.digits import load_digits_arrays, split_indices
    from rkdsc.common.data.samples import cli, write_samples

    a = write_samples(tmp_path / "a", count=30, size=16)
    assert cli(["--out", str(tmp_path / "b"), "--count", "30", "--size", "16"]) == 0
    b = sorted((tmp_path / "b").glob("*/*.png"))
    digest = lambda ps: [hashlib.sha256(p.read_bytes()).hexdigest() for p in ps]  # noqa: E731
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    assert digest(a) == digest(b)
    images, labels = load_digits_arrays()
    train, held = split_indices(len(images))
    for p in a:
        idx = int(p.stem)
        assert idx in set(held[:30]) and idx not in set(train) and p.parent.name == str(labels[idx])
    from PIL import Image

    with Image.open(a[0]) as im:
        assert im.size == (16, 16) and im.mode == "RGB"
    assert cli(["--out", str(tmp_path / "a"), "--count", "3"]) == 2  # exists: needs --force


# ----------------------------------------------------------------------------- hardening: unreadable files

def test_a_config_with_non_utf8_bytes_is_a_config_error_naming_the_file_and_the_byte_offset(tmp_path):
    data = b'[bundle]\npath = "b\xff\xfendle"\n'
    path = tmp_path / "latin.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    offset = data.index(b"\xff")
    assert str(err.value).startswith(f"{path}: not UTF-8 text")
    assert f"byte 0xff at byte offset {offset} (line 2, column 10)" in str(err.value)


def test_a_utf8_bom_is_accepted_and_a_folder_is_a_config_error(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbf[bundle]\npath = "b"\n')
    assert load_config(path, env={}).bundle.path == tmp_path / "b"
    with pytest.raises(ConfigError, match=f"{tmp_path}: is a folder, not a config file"):
        load_config(tmp_path, env={})


def test_services_exit_2_on_a_non_utf8_config_without_a_traceback(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "latin.toml"
    path.write_bytes(b'[bundle]\npath = "b\xe9"\n')
    offset = path.read_bytes().index(b"\xe9")
    rkdsc = str(Path(sys.executable).with_name("rkdsc"))
    for args in (["server"], ["basestation"], ["edge", "--id", "a", "--out", str(tmp_path / "o")]):
        proc = subprocess.run([rkdsc, *args, "--config", str(path)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and f"{path}: not UTF-8 text" in proc.stderr, (args, proc.stderr)
        assert f"byte offset {offset} " in proc.stderr, proc.stderr


def test_max_failed_fraction_is_a_fraction():
    assert parse_config({"bundle": {"path": "b"}, "transmitters": [{"id": "a"}]}).transmitters[0] \
        .max_failed_fraction == 0.0
    with pytest.raises(ConfigError, match=r"transmitters\[0\]\.max_failed_fraction"):
        parse_config({"bundle": {"path": "b"}, "transmitters": [{"id": "a", "max_failed_fraction": 1.5}]})
