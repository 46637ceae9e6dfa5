import pytest

from mfn4rec_tf import smoke

TINY = ["--num-items", "20", "--batch-size", "8", "--length", "5", "--variants", "mfn4rec", "mfn4rec-g"]


def test_main_trains_and_reports(capsys):
    assert smoke.main(TINY + ["--steps", "30"]) == 0
    out = capsys.readouterr().out
    assert "mfn4rec-g" in out and "first loss" in out


def test_main_fails_when_loss_does_not_fall_enough():
    assert smoke.main(TINY + ["--steps", "2", "--max-ratio", "0.01"]) == 1


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--length", "1"], ["--variants", "nope"]])
def test_bad_arguments_exit_with_usage(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        smoke.main(bad)
    assert exit_info.value.code == 2
    assert "usage" in capsys.readouterr().err
