"""Progress of counted work (frames, epochs) where stderr is not a terminal: a line at each tenth and at the
end, never one per unit (``edgec.cli.console.CountProgress``)."""

from edgec.cli.console import CountProgress


def test_a_line_per_tenth_and_at_the_end_in_logs(capsys):
    with CountProgress("frames", 1000, "answered") as progress:
        for i in range(1, 1001):
            progress(i, 1000)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"  frames: {n}/1000 answered" for n in range(100, 1001, 100)]


def test_a_slow_run_gets_a_line_every_30_s_and_notes_are_shown(capsys, monkeypatch):
    now = [0.0]
    with CountProgress("training", 1000, "epochs") as progress:
        progress._clock, progress.last = (lambda: now[0]), 0.0
        progress(1, 1000, "loss 2.301")  # first tenth not reached, 0 s: no line
        now[0] = 31.0
        progress(2, 1000, "loss 1.9")  # 31 s since the start: a line
    assert capsys.readouterr().err.splitlines() == ["  training: 2/1000 epochs, loss 1.9"]


def test_one_unit_shows_nothing(capsys):
    with CountProgress("frames", 1, "answered") as progress:
        progress(1, 1)
    assert capsys.readouterr().err == ""


def test_number_lists_of_flags_are_finite_and_sizes_bounded():
    """``--size nan,1`` or ``--size 100000,100000`` is refused in one line, before an image is read (a huge
    size once filled 22 GB before the shape check)."""
    import pytest

    from edgec.cli.console import floats
    from edgec.errors import UsageError

    assert floats("224,224", 2, "--size") == [224.0, 224.0]
    for bad, flag, n in [("nan,1", "--size", 2), ("inf,1", "--size", 2), ("1e400,1", "--size", 2),
                         ("100000,100000", "--size", 2), ("0,4", "--size", 2), ("nan,0.5,0.5", "--mean", 3)]:
        with pytest.raises(UsageError, match=f"{flag} '{bad}' needs"):
            floats(bad, n, flag)


def test_tls_files_must_be_pem(tmp_path):
    import pytest

    from edgec.errors import UsageError
    from edgec.flows.serve import _read

    junk = tmp_path / "j.pem"
    junk.write_text("junk\n")
    with pytest.raises(UsageError, match="is not a PEM file"):
        _read(junk, "TLS certificate")
    good = tmp_path / "g.pem"
    good.write_text("-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n")
    assert _read(good, "TLS certificate").startswith(b"-----BEGIN")
