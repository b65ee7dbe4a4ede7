"""SNR trace files: both layouts, the interpolation rules, errors naming file and line."""
from __future__ import annotations

import numpy as np
import pytest

from rkdsc.common.channel.trace import TraceError, load_trace


def write(tmp_path, text, name="trace.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_long_format_linear_in_db_and_hold_outside(tmp_path):
    p = write(tmp_path, "# measured\ntime_s,transmitter,snr_db\n0,a,10\n2,a,0\n1,b,5\n")
    tr = load_trace(p)
    assert tr.transmitters == ["a", "b"]
    assert tr.snr_db("a", 1.0) == pytest.approx(5.0)
    assert tr.snr_db("a", 0.5) == pytest.approx(7.5)
    assert tr.snr_db("a", -1.0) == 10.0 and tr.snr_db("a", 9.0) == 0.0
    np.testing.assert_allclose(tr.snr_db("a", np.array([0.0, 2.0])), [10.0, 0.0])
    assert tr.snr_db("b", 0.0) == 5.0


def test_wide_format_previous_hold_and_empty_cells(tmp_path):
    p = write(tmp_path, "time_s,a,b\n0,10,\n1,20,3\n3,,7\n")
    tr = load_trace(p, "previous")
    assert tr.snr_db("a", 0.99) == 10.0 and tr.snr_db("a", 1.0) == 20.0 and tr.snr_db("a", 5.0) == 20.0
    assert tr.snr_db("b", 0.0) == 3.0 and tr.snr_db("b", 2.9) == 3.0 and tr.snr_db("b", 3.0) == 7.0
    with pytest.raises(TraceError, match=r"no samples for transmitter 'c' \(has: a, b\)"):
        tr.snr_db("c", 0.0)


@pytest.mark.parametrize("text,match", [
    ("t,a\n0,1\n", r"trace.csv:1: expected a header starting with time_s"),
    ("time_s,a\n0,x\n", r"trace.csv:2: column a: expected a number, got 'x'"),
    ("time_s,a\n0,1\n0,2\n", r"transmitter 'a' has two samples at time_s = 0"),
    ("time_s,a\n-1,2\n", r"trace.csv:2: column time_s: expected a time >= 0"),
    ("time_s,a\n0,1,2\n", r"trace.csv:2: expected 2 columns, got 3"),
    ("time_s,a\n0,inf\n", r"expected a finite number"),
    ("", r"empty SNR trace"),
])
def test_errors_name_the_file_and_line(tmp_path, text, match):
    with pytest.raises(TraceError, match=match):
        load_trace(write(tmp_path, text))


def test_missing_file_and_bad_rule(tmp_path):
    with pytest.raises(TraceError, match=r"cannot read the SNR trace"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match=r"interpolation: expected one of linear, previous, got 'cubic'"):
        load_trace(write(tmp_path, "time_s,a\n0,1\n"), "cubic")
