"""The shared argparse value types: good lists parse, bad ones name the option and the value."""
import argparse

import pytest

from rkdsc.common.cliargs import float_list, int_list, str_list


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t", exit_on_error=False)
    p.add_argument("--batches", type=int_list(min_value=1))
    p.add_argument("--ratios", type=float_list(lo=0.0, hi=1.0, hi_open=True))
    return p


def test_lists_parse():
    args = _parser().parse_args(["--batches", "1, 32,", "--ratios", "0,0.5,0.9"])
    assert args.batches == (1, 32)
    assert args.ratios == (0.0, 0.5, 0.9)
    assert str_list(" awgn, ,rayleigh") == ["awgn", "rayleigh"]


@pytest.mark.parametrize("opt,value,needle", [
    ("--batches", "1,x", "comma-separated integers"),
    ("--batches", "0,4", ">= 1"),
    ("--batches", ",", "at least one"),
    ("--ratios", "0.5,1.0", "[0.0, 1.0)"),
    ("--ratios", "-0.1", "[0.0, 1.0)"),
    ("--ratios", "nan", "finite"),
    ("--ratios", "a", "comma-separated numbers"),
])
def test_bad_lists_name_option_and_value(opt, value, needle):
    with pytest.raises(argparse.ArgumentError) as err:
        _parser().parse_args([opt, value])
    msg = str(err.value)
    assert opt in msg and repr(value) in msg and needle in msg


def test_closed_upper_bound():
    parse = float_list(lo=0.0, hi=1.0)
    assert parse("1.0") == (1.0,)
    with pytest.raises(argparse.ArgumentTypeError):
        parse("1.01")


@pytest.mark.parametrize("argv", [
    ["rkdsc", "bench", "--edges", "0"],
    ["rkdsc", "profile", "--batches", "1,-2"],
    ["rkdsc", "ablation", "--workdir", "x", "--ratios", "1.5"],
])
def test_cli_rejects_bad_list(argv, capsys):
    from rkdsc.common import cli
    with pytest.raises(SystemExit) as exc:
        cli.main(argv[1:])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert argv[-2] in err and argv[-1] in err
