"""`rkdsc link` (rkdsc.basestation.admin) against a real relay on localhost, and the Rician K
factor of a link (topology `rician_k`, SetLink `rician_k`, used in the relay's channel)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rkdsc.basestation import admin
from rkdsc.common.channel import DEFAULT_K_FACTOR
from tests.conftest import DEFAULT_TRANSMITTERS, Services, make_frame


def test_list_get_set_through_the_python_client(services):
    with admin.RelayAdmin(services.relay_addr) as a:
        links = a.list()
        assert [s["transmitter_id"] for s in links] == ["edge-near", "edge-mid", "edge-far"]
        assert all(s["rician_k"] == DEFAULT_K_FACTOR for s in links)  # the channel's default K
        far = a.get("edge-far")
        assert (far["snr_db"], far["path_gain_db"], far["effective_snr_db"]) == (-5.0, -1.0, -6.0)
        new = a.set("edge-far", snr_db=-30.0, fading="rician", rician_k=6.5)
        assert (new["snr_db"], new["effective_snr_db"], new["fading"], new["rician_k"]) == (-30.0, -31.0, "rician", 6.5)
        assert a.get("edge-far") == new
        assert a.get("edge-near")["snr_db"] == 20.0  # other links untouched


def test_cli_set_prints_the_new_state_and_negative_numbers_work(services, capsys):
    rc = admin.cli(["set", "edge-mid", "--snr", "-30", "--path-gain", "-2.5", "--relay", services.relay_addr, "--json"])
    assert rc == 0
    state = json.loads(capsys.readouterr().out)
    assert state["transmitter_id"] == "edge-mid" and state["snr_db"] == -30.0 and state["effective_snr_db"] == -32.5
    assert admin.cli(["list", "--relay", services.relay_addr]) == 0
    table = capsys.readouterr().out
    assert "edge-mid" in table and "-30.00" in table and "rician_k" in table


def test_the_rkdsc_dispatcher_knows_link(services, capsys):
    from rkdsc.common.cli import main

    assert main(["link", "get", "edge-near", "--relay", services.relay_addr, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["snr_db"] == 20.0


@pytest.mark.parametrize("argv, field", [
    (["set", "nobody", "--snr", "1"], "transmitter_id"),
    (["set", "edge-mid", "--snr", "300"], "snr_db"),
    (["set", "edge-mid", "--snr", "90", "--path-gain", "50"], "snr_db + path_gain_db"),
    (["get", "nobody"], "transmitter_id"),
])
def test_refused_requests_exit_2_naming_the_field(services, capsys, argv, field):
    assert admin.cli(argv + ["--relay", services.relay_addr]) == 2
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and f": {field}" in err
    assert admin.RelayAdmin(services.relay_addr).get("edge-mid")["snr_db"] == 5.0  # unchanged


@pytest.mark.parametrize("argv, field", [
    (["set", "edge-mid", "--rician-k", "-1"], "rician_k"),
    (["set", "edge-mid", "--snr", "nan"], "snr_db"),
    (["set", "edge-mid"], "at least one of"),
    (["list", "--relay", "no-port"], "--relay"),
])
def test_bad_arguments_exit_2_before_calling(capsys, argv, field):
    if "--relay" not in argv:
        argv = argv + ["--relay", "127.0.0.1:1"]
    assert admin.cli(argv) == 2
    assert field in capsys.readouterr().err


def test_an_unreachable_relay_exits_1_naming_the_address(capsys):
    assert admin.cli(["list", "--relay", "127.0.0.1:1", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err and "127.0.0.1:1" in err


def test_relay_address_comes_from_flag_env_then_topology(tmp_path, make_config):
    _, path = make_config(basestation={"port": 50999})
    assert admin.resolve_relay("h:1", str(path), env={"RKDSC_RELAY_ADDR": "e:2"}) == "h:1"
    assert admin.resolve_relay(None, str(path), env={"RKDSC_RELAY_ADDR": "e:2"}) == "e:2"
    assert admin.resolve_relay(None, str(path), env={}) == "127.0.0.1:50999"
    with pytest.raises(ValueError, match="--relay"):
        admin.resolve_relay(None, str(tmp_path / "missing.toml"), env={})


def test_topology_rician_k_is_validated_and_has_the_channels_default(make_config):
    from rkdsc.common.config import ConfigError

    cfg, _ = make_config()
    assert cfg.transmitters[0].rician_k == DEFAULT_K_FACTOR
    with pytest.raises(ConfigError, match=r"transmitters\[0\]\.rician_k"):
        make_config(transmitters=[{**DEFAULT_TRANSMITTERS[0], "rician_k": -1.0}])


def _inst_snrs(stub, k: int, tx: str, first_id: int, n: int = 12) -> np.ndarray:
    out = []
    for i in range(n):
        res = stub.TransmitOne(make_frame(k, tx, frame_id=first_id + i, seed=i), timeout=20)
        assert res.error.code == 0
        out.append(res.link.instantaneous_snr_db - res.link.effective_snr_db)  # 10 log10 |h|^2
    return np.asarray(out)


def test_the_relay_channel_uses_the_links_k_factor(make_config, bundle):
    """A huge K is nearly a pure line-of-sight path (|h|^2 ~ 1); K = 0 is Rayleigh (|h|^2 spreads
    over many dB). The topology's rician_k starts the link, SetLink changes it."""
    txs = [{**DEFAULT_TRANSMITTERS[1], "fading": "rician", "rician_k": 1e6}]
    cfg, _ = make_config(transmitters=txs)
    svc = Services(cfg, bundle)
    try:
        k = bundle.task("digits").symbols_per_image
        with admin.RelayAdmin(svc.relay_addr) as a:
            assert a.get("edge-mid")["rician_k"] == 1e6
            los = _inst_snrs(svc.relay_stub, k, "edge-mid", 0)
            assert np.max(np.abs(los)) < 0.05
            a.set("edge-mid", rician_k=0.0)
            scatter = _inst_snrs(svc.relay_stub, k, "edge-mid", 100)
            assert np.std(scatter) > 1.5
    finally:
        svc.close()
