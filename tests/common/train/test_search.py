"""KDL-DARTS / DARTS (Algorithm 1, Eqs. 17-21): penalty factors, selection rule, reduction to
DARTS, real searches on the smoke preset, arch.json and resume."""

from __future__ import annotations

import json

import pytest
import torch

from rkdsc.common.train.presets import load_preset

ARCH_KEYS = {"method", "selection", "depths", "alpha", "mixture", "beta", "metric", "candidate_params",
             "fixed_params", "selected_params", "supernet_params", "val_acc", "history", "preset", "seed",
             "lambda_j", "kd_weight", "t_alpha", "t_beta", "beta_normalization", "epochs", "steps_per_epoch",
             "images", "student", "teacher", "wall_s"}
HISTORY_KEYS = {"epoch", "alpha", "mixture", "val_acc", "val_loss", "selected_depths", "selected_params", "loss_w",
                "loss_a", "penalty", "train_acc", "lr_w", "lr_alpha", "time_s"}
CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: avoid OpenMP spin-waiting on shared cores
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("search")


@pytest.fixture(scope="module")
def runs(workdir):
    """Real searches on the smoke preset, same seed and data: DARTS, KDL-DARTS (paper lambda_J)."""
    from rkdsc.common.train.search import run_search

    quiet = lambda _m: None  # noqa: E731
    p = load_preset("smoke")
    return {"darts": run_search(p, "darts", workdir, log=quiet, device=CPU),
            "kdl-darts": run_search(p, "kdl-darts", workdir, log=quiet, device=CPU)}


# -- Eqs. (17)-(20) and the selection rule -----------------------------------------------

def test_penalty_factors_normalised_and_not_saturated():
    from rkdsc.common.models.student import SearchableStudent
    from rkdsc.common.train.search import penalty_factors

    cand = SearchableStudent(load_preset("paper").student_config()).candidate_params()
    beta = penalty_factors(cand, 2.0)
    assert beta.shape == (4, 5)
    assert torch.allclose(beta.sum(1), torch.ones(4))
    assert bool((beta.diff(dim=1) > 0).all())  # larger candidate, larger penalty
    assert float(beta.max()) < 0.5  # raw counts / 2 would give a one-hot row
    raw = torch.softmax(torch.tensor(cand, dtype=torch.float64) / 2.0, dim=1)
    assert float(raw.max()) > 0.999
    # a lower temperature sharpens the penalty
    assert float(penalty_factors(cand, 0.5)[:, -1].min()) > float(beta[:, -1].max())


def test_penalty_gradient_is_beta():  # Eq. (20)
    from rkdsc.common.train.search import complexity_penalty, penalty_factors

    beta = penalty_factors([[1, 3, 6], [2, 4, 8]], 2.0)
    alphas = torch.randn(2, 3, requires_grad=True)
    complexity_penalty(alphas, beta).backward()
    assert torch.allclose(alphas.grad, beta)


def test_alpha_beta_selection_never_deeper_than_alpha_for_the_same_alphas():
    from rkdsc.common.train.search import penalty_factors, select_depths

    beta = penalty_factors([[10, 20, 30, 40, 50]] * 4, 2.0)
    g = torch.Generator().manual_seed(0)
    strictly_shallower = 0
    for _ in range(500):
        alphas = torch.randn(4, 5, generator=g) * 0.3
        d_ab, d_a = select_depths(alphas, beta, 1.0, "alpha-beta"), select_depths(alphas, beta, 1.0, "alpha")
        assert all(x <= y for x, y in zip(d_ab, d_a))
        strictly_shallower += d_ab != d_a
    assert strictly_shallower > 50  # the (1 - beta) factor does change choices
    with pytest.raises(ValueError, match="selection"):
        select_depths(torch.zeros(4, 5), beta, 1.0, "beta")


# -- real searches ---------------------------------------------------------------------------

def test_arch_json_keys_history_and_param_count(runs, workdir):
    from rkdsc.common.models.complexity import count_params
    from rkdsc.common.models.student import Student

    p = load_preset("smoke")
    for method, res in runs.items():
        arch = json.loads((workdir / f"search-{method}" / "arch.json").read_text())
        assert ARCH_KEYS <= set(arch) and arch["method"] == method
        assert arch["depths"] == res["depths"] and len(arch["depths"]) == 4
        assert all(1 <= d <= p.student.max_depth for d in arch["depths"])
        assert len(arch["alpha"]) == 4 and all(len(r) == p.student.max_depth for r in arch["alpha"])
        assert len(arch["history"]) == p.search.epochs
        for i, h in enumerate(arch["history"]):
            assert HISTORY_KEYS <= set(h) and h["epoch"] == i + 1 and 0.0 <= h["val_acc"] <= 1.0
        assert arch["history"][-1]["selected_depths"] == arch["depths"]
        assert arch["history"][-1]["alpha"] == arch["alpha"]
        assert arch["selected_params"] == count_params(Student(p.student_config(), arch["depths"]))
        lines = (workdir / f"search-{method}" / "search.jsonl").read_text().splitlines()
        assert len(lines) == p.search.epochs
    assert runs["darts"]["selection"] == "alpha" and runs["darts"]["lambda_j"] == 0.0
    assert runs["darts"]["teacher"] is None and runs["kdl-darts"]["teacher"]["sha256"]
    assert runs["kdl-darts"]["selection"] == "alpha-beta" and runs["kdl-darts"]["lambda_j"] == 0.05


def test_kdl_darts_selects_fewer_parameters_than_darts(runs):
    """Same seed, data and supernet initialisation; the paper's lambda_J = 0.05 (Table III:
    KDL-DARTS's architectures are smaller)."""
    kdl, darts = runs["kdl-darts"], runs["darts"]
    assert kdl["selected_params"] < darts["selected_params"], (kdl["depths"], darts["depths"])
    # and its rule is the penalised metric: the chosen candidate maximises softmax(alpha) * (1 - beta)
    metric = torch.tensor(kdl["metric"])
    w = torch.softmax(torch.tensor(kdl["alpha"]), dim=1)
    assert torch.allclose(metric, w * (1 - torch.tensor(kdl["beta"])), atol=1e-6)
    assert [int(j) + 1 for j in metric.argmax(1)] == kdl["depths"]


def test_penalty_pushes_alphas_towards_small_candidates(workdir):
    """With a large lambda_J the alpha step's penalty gradient (beta) dominates: in every layer
    the mixture weight falls with the candidate's size."""
    from rkdsc.common.train.search import run_search

    p = load_preset("smoke", {"search.lambda_j": 20.0, "search.epochs": 2})
    res = run_search(p, "kdl-darts", workdir / "big-lambda", log=lambda _m: None, device=CPU)
    mix = torch.tensor(res["mixture"])
    assert bool((mix.diff(dim=1) < 0).all()), mix
    assert res["depths"] == [1, 1, 1, 1]


def test_kdl_darts_without_penalty_and_kd_is_darts(runs, workdir):
    """lambda_J = 0 and kd_weight = 0 (no teacher term): KDL-DARTS performs DARTS's updates
    bit for bit; with selection "alpha" it also selects the same depths."""
    from rkdsc.common.train.search import run_search

    p = load_preset("smoke", {"search.lambda_j": 0.0, "search.kd_weight": 0.0})
    same = run_search(p, "kdl-darts", workdir / "as-darts", log=lambda _m: None, selection="alpha", device=CPU)
    darts = runs["darts"]
    assert same["alpha"] == darts["alpha"]  # exact float equality
    assert [h["alpha"] for h in same["history"]] == [h["alpha"] for h in darts["history"]]
    assert [h["loss_w"] for h in same["history"]] == [h["loss_w"] for h in darts["history"]]
    assert same["depths"] == darts["depths"] and same["teacher"] is None
    # the paper's KDL-DARTS (KD + penalty) really does update differently
    assert runs["kdl-darts"]["alpha"] != darts["alpha"]


def test_resume_continues_exactly(workdir):
    from rkdsc.common.train.search import run_search

    p = load_preset("smoke")
    quiet = lambda _m: None  # noqa: E731
    part = run_search(p, "darts", workdir / "resume", log=quiet, device=CPU, stop_after=1)
    assert len(part["history"]) == 1 and not (workdir / "resume" / "search-darts" / "arch.json").exists()
    rest = run_search(p, "darts", workdir / "resume", log=quiet, device=CPU, resume=True)
    straight = json.loads((workdir / "search-darts" / "arch.json").read_text())
    assert rest["alpha"] == straight["alpha"]
    assert [h["val_acc"] for h in rest["history"]] == [h["val_acc"] for h in straight["history"]]


def test_cli_writes_arch_json(tmp_path, capsys):
    from rkdsc.common.train.search import cli

    with pytest.raises(SystemExit) as e:
        cli(["--help"])
    assert e.value.code == 0 and "--method" in capsys.readouterr().out
    rc = cli(["--method", "darts", "--preset", "smoke", "--workdir", str(tmp_path), "--epochs", "1", "--quiet",
              "--device", "cpu"])
    assert rc == 0
    arch = json.loads((tmp_path / "search-darts" / "arch.json").read_text())
    assert arch["epochs"] == 1 and len(arch["history"]) == 1
    assert cli(["--preset", "smoke", "--set", "search.lambda_jj=1"]) == 2
    assert "unknown key 'lambda_jj'" in capsys.readouterr().err
