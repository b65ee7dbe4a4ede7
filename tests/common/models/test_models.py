"""Tests of common/models: Table I student, CAT, heads, teacher, edge/server parts, complexity."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from rkdsc.common.models import (CATConfig, CATDecoder, CATEncoder, CheckpointError, ClassifierHead,  # noqa: E402
                           EdgePart, JSCCEdgePart, JSCCServerPart, SearchableStudent, ServerPart, Student,
                           StudentConfig, build_teacher, count_flops, count_params, derive_student,
                           table_i_complexity)

B = 2


def _grads_reach(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> list[str]:
    """Names of trainable parameters whose gradient is missing or all zero."""
    return [n for n, p in module.named_parameters()
            if p.requires_grad and not n.startswith(skip) and (p.grad is None or not p.grad.abs().sum() > 0)]


# ----------------------------------------------------------------------------- student

@pytest.mark.parametrize("size", [32, 64])
def test_student_shapes(size):
    torch.manual_seed(0)
    cfg = StudentConfig(input_size=size)
    x = torch.randn(B, 3, size, size)
    assert SearchableStudent(cfg)(x).shape == (B, 512)
    assert Student(cfg, [1, 2, 3, 4])(x).shape == (B, 512)


def test_student_other_input_size_interpolates_positional_embedding():
    student = Student(StudentConfig(input_size=32), [1, 1, 1, 1]).eval()  # grid 1x1
    assert student(torch.randn(B, 3, 96, 96)).shape == (B, 512)  # grid 3x3


def test_student_config_and_depth_validation():
    with pytest.raises(ValueError, match="input_size"):
        StudentConfig(input_size=16)
    with pytest.raises(ValueError, match="depths"):
        Student(StudentConfig(input_size=32), [1, 2, 6, 1])
    with pytest.raises(ValueError, match="depths"):
        Student(StudentConfig(input_size=32), [1, 2, 3])


def test_searchable_gradients_reach_weights_and_alphas():
    torch.manual_seed(0)
    net = SearchableStudent(StudentConfig(input_size=32), alpha_temperature=1.0)
    net(torch.randn(B, 3, 32, 32)).pow(2).mean().backward()
    assert _grads_reach(net) == []
    assert [id(p) for p in net.arch_parameters()] == [id(net.alphas)]
    weight_ids = {id(p) for p in net.weight_parameters()}
    assert id(net.alphas) not in weight_ids
    assert len(weight_ids) + 1 == len(list(net.parameters()))


def test_mixture_weights_softmax_with_temperature():
    net = SearchableStudent(StudentConfig(input_size=32), alpha_temperature=2.0)
    w = net.mixture_weights()
    assert w.shape == (4, 5)
    assert torch.allclose(w, torch.full((4, 5), 0.2))
    with torch.no_grad():
        net.alphas[0] = torch.tensor([0.0, 0.0, 0.0, 0.0, 2.0])
    expected = torch.softmax(torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0]), dim=0)  # alpha / T
    assert torch.allclose(net.mixture_weights()[0], expected)
    assert torch.allclose(net.mixture_weights().sum(dim=1), torch.ones(4))


def test_one_hot_mixture_equals_derived_student():
    torch.manual_seed(0)
    cfg = StudentConfig(input_size=32)
    net = SearchableStudent(cfg)
    net.train()
    with torch.no_grad():  # move BatchNorm running statistics away from their defaults
        for _ in range(2):
            net(torch.randn(4, 3, 32, 32) * 2 + 0.5)
    net.eval()
    x = torch.randn(3, 3, 32, 32)
    for depths in ([1, 3, 5, 2], [5, 5, 5, 5], [1, 1, 1, 1]):
        one_hot = torch.nn.functional.one_hot(torch.tensor(depths) - 1, cfg.max_depth).float()
        student = derive_student(net, depths).eval()
        with torch.no_grad():
            assert torch.allclose(net(x, weights=one_hot), student(x), atol=1e-5, rtol=1e-5)
        assert count_params(student) < count_params(net)
    # a soft mixture differs from every one-hot network
    with torch.no_grad():
        assert not torch.allclose(net(x), derive_student(net, [1, 1, 1, 1]).eval()(x), atol=1e-3)


def test_candidate_params_strictly_increasing_and_match_derived_blocks():
    cfg = StudentConfig(input_size=32)
    counts = SearchableStudent(cfg).candidate_params()
    assert len(counts) == 4 and all(len(row) == cfg.max_depth for row in counts)
    for row in counts:
        assert all(a < b for a, b in zip(row, row[1:]))
    for layer, depth in ((0, 1), (1, 3), (3, 5)):
        depths = [1, 1, 1, 1]
        depths[layer] = depth
        blocks = Student(cfg, depths).layers[layer].blocks
        assert counts[layer][depth - 1] == count_params(blocks)


# ----------------------------------------------------------------------------- CAT

@pytest.mark.parametrize("ratio, compact", [(0.8, 102), (0.2, 409), (0.1, 460)])
def test_compact_dim_table_ii(ratio, compact):
    cfg = CATConfig(compression_ratio=ratio)
    assert cfg.compact_dim == compact
    h, snr = torch.randn(B, 512), torch.tensor([5.0, 20.0])
    x = CATEncoder(cfg)(h, snr)
    assert x.shape == (B, compact) and x.dtype == torch.float32
    assert CATDecoder(cfg)(x, snr).shape == (B, 512)


def test_cat_config_validation_and_ratio_zero():
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="compression_ratio"):
            CATConfig(compression_ratio=bad)
    with pytest.raises(ValueError, match="n_heads"):
        CATConfig(n_heads=7)
    cfg = CATConfig(feature_dim=64, n_heads=4, d_ff=128, compression_ratio=0.0)
    assert cfg.compact_dim == 64
    x = CATEncoder(cfg)(torch.randn(B, 64), torch.zeros(B))
    assert x.shape == (B, 64) and CATDecoder(cfg)(x, torch.zeros(B)).shape == (B, 64)


def test_cat_gradients_reach_all_parameters_including_snr_embeddings():
    torch.manual_seed(0)
    cfg = CATConfig()
    enc, dec = CATEncoder(cfg), CATDecoder(cfg)
    h, snr = torch.randn(4, 512), torch.tensor([0.0, 5.0, 12.0, 20.0])
    dec(enc(h, snr), snr).pow(2).mean().backward()
    assert _grads_reach(enc) == [] and _grads_reach(dec) == []
    assert enc.snr is not None and dec.snr is not None and dec.block1.snr is not None
    # one token: the softmax over a single key is 1, so the q/k projections get no gradient
    F = cfg.feature_dim
    g = enc.block.attn.in_proj_weight.grad
    assert g[: 2 * F].abs().max() < 1e-6 * g[2 * F:].abs().max()


def test_cat_output_depends_on_snr():
    torch.manual_seed(0)
    cfg = CATConfig()
    enc, dec = CATEncoder(cfg).eval(), CATDecoder(cfg).eval()
    h = torch.randn(3, 512)
    low, high = torch.full((3,), 5.0), torch.full((3,), 20.0)
    with torch.no_grad():
        x_low, x_high = enc(h, low), enc(h, high)
        assert (x_low - x_high).abs().max() > 1e-3
        assert (dec(x_low, low) - dec(x_low, high)).abs().max() > 1e-3
        # per-sample SNR: row i only depends on snr_db[i]
        mixed = enc(h, torch.tensor([5.0, 20.0, 5.0]))
        assert torch.allclose(mixed[0], x_low[0], atol=1e-6) and torch.allclose(mixed[1], x_high[1], atol=1e-6)


# ----------------------------------------------------------------------------- heads, system

def test_classifier_head_shapes():
    h = torch.randn(B, 512)
    assert ClassifierHead(512, 10, hidden=256)(h).shape == (B, 10)
    linear = ClassifierHead(512, 100, hidden=0)
    assert linear(h).shape == (B, 100) and count_params(linear) == 512 * 100 + 100


def _system(size=32, ratio=0.8, classes=10):
    torch.manual_seed(0)
    cat = CATConfig(compression_ratio=ratio)
    edge = EdgePart(Student(StudentConfig(input_size=size), [1, 2, 2, 2]), CATEncoder(cat)).eval()
    server = ServerPart(CATDecoder(cat), ClassifierHead(512, classes)).eval()
    return edge, server, cat.compact_dim


def test_edge_server_parts_shapes():
    edge, server, compact = _system()
    snr = torch.tensor([5.0, 20.0])
    with torch.no_grad():
        x = edge(torch.randn(B, 3, 32, 32), snr)
        assert x.shape == (B, compact)
        assert server(x, snr).shape == (B, 10)
        jedge = JSCCEdgePart(Student(StudentConfig(32), [1, 1, 1, 1])).eval()
        jserver = JSCCServerPart(ClassifierHead(512, 10))
        h = jedge(torch.randn(B, 3, 32, 32), snr)
        assert h.shape == (B, 512) and jserver(h, snr).shape == (B, 10)
        assert torch.equal(jserver(h, snr), jserver(h, -snr))  # SNR accepted and ignored


def _export_and_run(module, args, input_names, output_name, path, batch):
    import onnxruntime as ort

    axes = {n: {0: "batch"} for n in [*input_names, output_name]}
    torch.onnx.export(module, args, str(path), input_names=input_names, output_names=[output_name],
                      dynamic_axes=axes, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == input_names
    feeds = [torch.cat([a] * batch)[:batch] for a in args]  # a batch size other than the traced one
    got = sess.run(None, {n: a.numpy() for n, a in zip(input_names, feeds)})[0]
    with torch.no_grad():
        want = module(*feeds).numpy()
    return got, want


@pytest.mark.filterwarnings("ignore")
def test_parts_export_to_onnx_with_dynamic_batch(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    edge, server, compact = _system(size=64)  # 2x2 grid before the attention pool
    img, snr = torch.randn(B, 3, 64, 64), torch.tensor([5.0, 20.0])
    got, want = _export_and_run(edge, (img, snr), ["image", "snr_db"], "symbols", tmp_path / "edge.onnx", 5)
    assert got.shape == (5, compact) and np.abs(got - want).max() < 1e-4
    sym = torch.randn(B, compact)
    got, want = _export_and_run(server, (sym, snr), ["symbols", "snr_db"], "logits", tmp_path / "server.onnx", 3)
    assert got.shape == (3, 10) and np.abs(got - want).max() < 1e-4
    jedge = JSCCEdgePart(Student(StudentConfig(32), [1, 1, 1, 1])).eval()
    got, want = _export_and_run(jedge, (img[:, :, :32, :32], snr), ["image", "snr_db"], "symbols",
                                tmp_path / "jedge.onnx", 4)
    assert got.shape == (4, 512) and np.abs(got - want).max() < 1e-4
    jserver = JSCCServerPart(ClassifierHead(512, 10)).eval()
    got, want = _export_and_run(jserver, (torch.randn(B, 512), snr), ["symbols", "snr_db"], "logits",
                                tmp_path / "jserver.onnx", 3)
    assert got.shape == (3, 10) and np.abs(got - want).max() < 1e-4


# ----------------------------------------------------------------------------- teacher

SMALL_VIT = dict(name="vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2)


def test_small_vit_teacher_is_frozen_and_resizes():
    torch.manual_seed(0)
    teacher = build_teacher(**SMALL_VIT, num_classes=512)
    assert teacher.adapter is None and teacher.img_size == (32, 32)
    assert count_params(teacher, trainable_only=True) == 0
    wrapper = torch.nn.Sequential(teacher)
    wrapper.train()
    assert teacher.training and not teacher.backbone.training
    h = teacher(torch.randn(B, 3, 32, 32))
    assert h.shape == (B, 512) and not h.requires_grad
    assert teacher(torch.randn(B, 3, 48, 48)).shape == (B, 512)  # resized to 32x32


def test_teacher_adapter_is_the_only_trainable_part():
    torch.manual_seed(0)
    teacher = build_teacher(**SMALL_VIT, num_classes=0)  # pooled 192-d features
    assert teacher.out_dim == 192 and teacher.adapter is not None
    teacher(torch.randn(B, 3, 32, 32)).pow(2).mean().backward()
    assert all(p.grad is not None for p in teacher.adapter.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.backbone.parameters())
    assert count_params(teacher, trainable_only=True) == 192 * 512 + 512


def test_teacher_checkpoint_round_trip_and_mismatch(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = build_teacher(**SMALL_VIT, num_classes=512).eval()
    x = torch.randn(B, 3, 32, 32)
    want = src(x)
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(path))
    torch.manual_seed(1)
    loaded = build_teacher(**SMALL_VIT, num_classes=512, checkpoint=path).eval()
    assert torch.allclose(loaded(x), want, atol=1e-6)

    # .pt with a "state_dict" wrapper; a whole Teacher (backbone + adapter) state dict
    torch.manual_seed(2)
    with_adapter = build_teacher(**SMALL_VIT, num_classes=0).eval()
    torch.save({"state_dict": with_adapter.state_dict()}, tmp_path / "whole.pt")
    reloaded = build_teacher(**SMALL_VIT, num_classes=0, checkpoint=tmp_path / "whole.pt").eval()
    assert torch.allclose(reloaded(x), with_adapter(x), atol=1e-6)

    with pytest.raises(CheckpointError, match=r"teacher\.safetensors.*head\.weight"):
        build_teacher(**SMALL_VIT, num_classes=10, checkpoint=path)  # shape mismatch in the head
    partial = {k: v for k, v in src.backbone.state_dict().items() if k != "norm.weight"}
    partial["extra.weight"] = torch.zeros(3)
    save_file({k: v.contiguous() for k, v in partial.items()}, str(tmp_path / "partial.safetensors"))
    expected = r"missing keys \(1\): norm\.weight.*unexpected keys \(1\): extra\.weight"
    with pytest.raises(CheckpointError, match=expected):
        build_teacher(**SMALL_VIT, num_classes=512, checkpoint=tmp_path / "partial.safetensors")
    (tmp_path / "teacher.ckpt").write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="suffix"):
        build_teacher(**SMALL_VIT, num_classes=512, checkpoint=tmp_path / "teacher.ckpt")
    with pytest.raises(CheckpointError, match="no such file"):
        build_teacher(**SMALL_VIT, num_classes=512, checkpoint=tmp_path / "absent.safetensors")


@pytest.mark.parametrize("name, params", [("vit_base_patch16_clip_224.openai", 86_193_152),
                                          ("vit_base_patch32_clip_224.openai", 87_849_728)])
def test_clip_teacher_tags_give_512_projection(name, params):
    with torch.device("meta"):  # shapes only: no weight init, nothing downloaded (pretrained=False)
        teacher = build_teacher(name)
        h = teacher(torch.empty(1, 3, 32, 32))  # resized to 224x224
    assert teacher.out_dim == 512 and teacher.adapter is None and teacher.img_size == (224, 224)
    assert h.shape == (1, 512)
    assert count_params(teacher) == params  # anchors: 86.19M (B/16), 87.85M (B/32)


# ----------------------------------------------------------------------------- complexity

def test_count_flops_is_two_per_mac():
    lin = torch.nn.Linear(10, 20)
    assert count_flops(lin, torch.randn(3, 10)) == 2 * 3 * 10 * 20
    conv = torch.nn.Conv2d(4, 8, 3, padding=1, bias=False)
    assert count_flops(conv, torch.randn(1, 4, 5, 5)) == 2 * (8 * 5 * 5) * (4 * 9)


def test_table_i_complexity_at_224():
    small, anchor, large = (table_i_complexity(d) for d in ([1, 1, 1, 1], [1, 2, 2, 2], [5, 5, 5, 5]))
    assert small["params"] < anchor["params"] < large["params"]
    assert small["gflops"] < anchor["gflops"] < large["gflops"]
    # CLIP ModifiedResNet [1,2,2,2] has 1,976,864 parameters (anchors.md: ~1.98M, ~1.15 GFLOPs);
    # the Eq. (14) shortcuts of layers 2-4 add 64*128 + 128*256 + 256*512 conv and 2*(128+256+512) BN
    shortcuts = 64 * 128 + 128 * 256 + 256 * 512 + 2 * (128 + 256 + 512)
    assert anchor["params"] - shortcuts == 1_976_864
    shortcut_gflops = 2 * (28 * 28 * 64 * 128 + 14 * 14 * 128 * 256 + 7 * 7 * 256 * 512) / 1e9
    assert abs(anchor["gflops"] - shortcut_gflops - 1.15) < 0.01
