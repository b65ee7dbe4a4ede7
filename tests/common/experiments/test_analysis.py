"""Fig. 7 / Table III analysis from synthetic but well-formed arch.json files."""
from __future__ import annotations

import json

import pytest

from rkdsc.common.experiments import analysis

# The paper's search space at 224x224 (Table I): parameters of the first j blocks of each layer
# (SearchableStudent(StudentConfig()).candidate_params()).
CANDIDATES = [
    [4544, 9088, 13632, 18176, 22720],
    [24192, 41984, 59776, 77568, 95360],
    [95488, 165888, 236288, 306688, 377088],
    [379392, 659456, 939520, 1219584, 1499648],
]


def arch_doc(method: str, final: list[int], accs: list[float], depth_path: list[list[int]]) -> dict:
    history = [{"epoch": e, "alpha": [[0.0] * 5] * 4, "val_acc": a, "selected_depths": d,
                "selected_params": sum(CANDIDATES[l][x - 1] for l, x in enumerate(d)), "loss_w": 1.0, "loss_a": 1.0}
               for e, (a, d) in enumerate(zip(accs, depth_path))]
    return {"method": method, "depths": final, "alpha": [[0.0] * 5] * 4, "beta": [[0.2] * 5] * 4,
            "candidate_params": CANDIDATES, "selected_params": sum(CANDIDATES[l][x - 1] for l, x in enumerate(final)),
            "history": history, "preset": "test", "seed": 0}


@pytest.fixture()
def arch_pair(tmp_path):
    kdl = arch_doc("kdl-darts", [3, 4, 4, 1], [0.30, 0.45, 0.61],
                [[5, 5, 5, 5], [3, 4, 4, 2], [3, 4, 4, 1]])
    darts = arch_doc("darts", [5, 2, 5, 2], [0.28, 0.40, 0.55],
                  [[5, 5, 5, 5], [5, 2, 5, 3], [5, 2, 5, 2]])
    wd = tmp_path / "run"
    for a in (kdl, darts):
        d = wd / f"search-{a['method']}"
        d.mkdir(parents=True)
        (d / "arch.json").write_text(json.dumps(a))
    return wd


def test_table_iii_rows_and_comparison(arch_pair, tmp_path):
    doc = analysis.analyze_workdir(arch_pair, tmp_path / "fig", label="cifar10")
    rows = {r["method"]: r for r in doc["rows"]}
    assert [r["method"] for r in doc["rows"]] == ["darts", "kdl-darts"]  # paper's row order
    # the paper's Table III CIFAR10 architectures: KDL-DARTS 0.014/0.078/0.307/0.379, DARTS total 1.101
    assert rows["kdl-darts"]["layer_params"] == [13632, 77568, 306688, 379392]
    assert rows["darts"]["layer_params"] == [22720, 41984, 377088, 659456]
    for r in rows.values():
        assert r["total_params"] == sum(r["layer_params"])
        assert r["total_params_m"] == pytest.approx(sum(r["layer_params_m"]))
        assert r["total_params"] == r["selected_params_reported"]
    assert rows["darts"]["total_params_m"] == pytest.approx(1.101, abs=1e-3)
    assert rows["kdl-darts"]["final_val_acc_pct"] == pytest.approx(61.0)
    c = doc["comparison"]
    assert c["param_reduction_pct"] == pytest.approx(100 * (1101248 - 777280) / 1101248)
    assert c["final_val_acc_gain_pp"] == pytest.approx(6.0)
    assert c["final_val_acc_gain_rel_pct"] == pytest.approx(100 * 6.0 / 55.0)
    # per-epoch series: layer sums of the selected depths
    s = doc["series"]["kdl-darts"]
    assert s["selected_params"][0] == sum(row[4] for row in CANDIDATES)
    assert s["layer_params"][3] == [1499648, 659456, 379392]
    # files: the JSON matches and the Markdown carries the numbers
    saved = json.loads((tmp_path / "fig" / "table3-cifar10.json").read_text())
    assert saved["rows"][1]["total_params"] == 777280
    md = (tmp_path / "fig" / "table3-cifar10.md").read_text()
    assert "| cifar10 | KDL-DARTS | [3, 4, 4, 1] | 0.0136 | 0.0776 | 0.3067 | 0.3794 | 0.7773 | 61.00 |" in md


def test_fig7_png_written(arch_pair, tmp_path):
    doc = analysis.analyze_workdir(arch_pair, tmp_path / "fig", label="c10")
    png = tmp_path / "fig" / "fig7-c10.png"
    assert doc["fig7_png"] == str(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_cli_with_arch_files(arch_pair, tmp_path, capsys):
    rc = analysis.cli(["--arch", str(arch_pair / "search-kdl-darts" / "arch.json"),
                       "--arch", str(arch_pair / "search-darts" / "arch.json"),
                       "--label", "x", "--out-dir", str(tmp_path / "o")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "KDL-DARTS" in out and "29.4% fewer parameters" in out  # same reduction as the paper's CIFAR10
    assert (tmp_path / "o" / "fig7-x.png").stat().st_size > 0


def test_bad_arch_names_field(tmp_path):
    bad = {"method": "darts", "depths": [1, 2, 9, 1], "candidate_params": CANDIDATES}
    p = tmp_path / "arch.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(analysis.ArchError, match=r"'depths'\[2\]=9"):
        analysis.load_arch(p)
    assert analysis.analyze_workdir(tmp_path / "empty", tmp_path / "o") is None
