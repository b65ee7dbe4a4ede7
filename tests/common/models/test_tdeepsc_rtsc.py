"""T-DeepSC and RTSC: shapes, what each sends per image, and their Table II size at the paper's input."""
from __future__ import annotations

import pytest
import torch

from rkdsc.common.models.complexity import count_flops, count_params
from rkdsc.common.models.registry import get_method
from rkdsc.common.models.rtsc import RTSCConfig, RTSCEncoder, build_rtsc, to_native
from rkdsc.common.models.spec import ModelSpec, read_model_spec
from rkdsc.common.models.system import JSCCEdgePart, JSCCServerPart
from rkdsc.common.models.tdeepsc import TDeepSCConfig, TDeepSCEncoder, build_tdeepsc

# Table II of the paper: encoder params (M) and "GFLOPs", which are MACs (count_flops counts 2 per MAC)
TABLE_II = {"t-deepsc": (8.90, 2.266), "rtsc": (0.72, 0.071)}
TINY_T = TDeepSCConfig(input_size=32, patch_size=8, embed_dim=16, depth=1, n_heads=2, dec_dim=16, dec_depth=1,
                       dec_heads=2)
TINY_R = RTSCConfig(stem_widths=(4, 8), embed_dim=16, depth=1, n_heads=2, dec_depth=1)


@pytest.mark.parametrize("method, encoder", [("t-deepsc", lambda: TDeepSCEncoder(TDeepSCConfig())),
                                             ("rtsc", lambda: RTSCEncoder(RTSCConfig()))])
def test_paper_size_matches_table_ii_within_10_percent(method, encoder):
    torch.manual_seed(0)
    enc = encoder()
    params_m, gmacs = count_params(enc) / 1e6, count_flops(enc, torch.zeros(1, 3, 224, 224)) / 2e9
    want_params, want_gmacs = TABLE_II[method]
    assert params_m == pytest.approx(want_params, rel=0.10), params_m
    assert gmacs == pytest.approx(want_gmacs, rel=0.10), gmacs


def test_what_each_sends_per_image_at_the_paper_size():
    """T-DeepSC: 10 real values (its scores over the 10-entry KB) = 5 complex symbols;
    RTSC: 64 tokens x 8 = 512 real values = 256 complex symbols, at any input size."""
    from rkdsc.common.bundle.manifest import symbols_for

    assert TDeepSCConfig().n_values == 10 and symbols_for(TDeepSCConfig().n_values) == 5
    assert RTSCConfig().n_values == 512 and symbols_for(RTSCConfig().n_values) == 256
    enc = RTSCEncoder(RTSCConfig()).eval()
    with torch.no_grad():
        for size in (32, 48, 224):
            assert enc(torch.zeros(2, 3, size, size)).shape == (2, 512)


def test_tdeepsc_patch_grid_follows_the_input():
    assert (TDeepSCConfig().patch_size, TDeepSCConfig().num_patches) == (16, 196)
    assert TDeepSCConfig.for_input(224).patch_size == 16
    assert TDeepSCConfig.for_input(32).patch_size == 4 and TDeepSCConfig.for_input(64).patch_size == 8
    assert TDeepSCConfig.for_input(32, depth=2).depth == 2
    with pytest.raises(ValueError, match="must divide input_size"):
        TDeepSCConfig(input_size=32, patch_size=5)
    with pytest.raises(ValueError, match="must divide embed_dim"):
        RTSCConfig(embed_dim=30, n_heads=4)


def test_to_native_pools_multiples_and_resizes_the_rest():
    x = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64).expand(1, 3, 64, 64)
    torch.testing.assert_close(to_native(x, 32), torch.nn.functional.avg_pool2d(x, 2))
    assert to_native(torch.zeros(1, 3, 40, 40), 32).shape == (1, 3, 32, 32)
    y = torch.randn(1, 3, 32, 32)
    assert to_native(y, 32) is y


@pytest.mark.parametrize("method", ["t-deepsc", "rtsc"])
def test_system_shapes_channel_and_parts(method):
    torch.manual_seed(0)
    cfg = TINY_T if method == "t-deepsc" else TINY_R
    system = (build_tdeepsc if method == "t-deepsc" else build_rtsc)(cfg, 7, 0)
    x, snr = torch.randn(3, 3, 32, 32), torch.tensor([0.0, 12.0, 30.0])
    logits = system(x, snr, None, ["awgn"], torch.Generator().manual_seed(0))
    assert logits.shape == (3, 7)
    logits.sum().backward()  # end to end through the differentiable channel
    assert system.encoder.to_channel.weight.grad is not None
    spec = ModelSpec(method=method, feature_dim=cfg.n_values, num_classes=7, head_hidden=0,
                     **({"tdeepsc": cfg} if method == "t-deepsc" else {"rtsc": cfg}))
    m = get_method(method)
    edge, server = m.parts(m.build(spec))
    assert isinstance(edge, JSCCEdgePart) and isinstance(server, JSCCServerPart)
    with torch.no_grad():
        sym = edge.eval()(x, snr)
        assert sym.shape == (3, cfg.n_values)
        torch.testing.assert_close(edge(x, torch.zeros(3)), sym)  # snr_db is accepted and ignored
        assert server.eval()(sym, snr).shape == (3, 7)
    assert spec.compact_dim == cfg.n_values and spec.compression_ratio == 0.0
    assert read_model_spec({"class_names": list("abcdefg"), **spec.to_json()}) == spec


def test_spec_feature_dim_must_be_what_the_encoder_sends():
    with pytest.raises(ValueError, match="must equal the 10 values"):
        get_method("t-deepsc").build(ModelSpec(method="t-deepsc", feature_dim=512, tdeepsc=TINY_T))
    with pytest.raises(ValueError, match="no rtsc config"):
        get_method("rtsc").build(ModelSpec(method="rtsc", feature_dim=512))


def test_preset_fields():
    from rkdsc.common.train.presets import PresetError, load_preset

    p = load_preset("paper")
    assert p.baseline.tdeepsc_snr_db == 12.0
    assert p.tdeepsc_config() == TDeepSCConfig() and p.rtsc_config() == RTSCConfig()
    assert load_preset("smoke").tdeepsc_config().input_size == 32
    with pytest.raises(PresetError, match="baseline.tdeepsc"):
        load_preset("smoke", {"baseline.tdeepsc": {"no_such_field": 1}})
