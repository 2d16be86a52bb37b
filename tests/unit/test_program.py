from pathlib import Path

import pytest

from loyalty.core.program import ProgramError, load_program
from loyalty.streams.settings import DEFAULT_PROGRAM

VALID = DEFAULT_PROGRAM.read_text()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "program.toml"
    path.write_text(text)
    return path


def test_default_program_has_the_documented_numbers():
    program = load_program(DEFAULT_PROGRAM)
    assert program.fuel_points.points_per_liter == 1
    assert program.fuel_points.volume_threshold_liters == 15
    assert program.fuel_points.volume_multiplier == 2
    assert program.welcome_bonus_points == 100
    assert program.timezone == "Europe/Madrid"


@pytest.mark.parametrize(
    ("old", "new", "field", "reason"),
    [
        ("points = 100", "points = -5", "welcome_bonus.points", "must be >= 0"),
        ("points = 100", "points = 'lots'", "welcome_bonus.points", "must be an integer"),
        (
            "volume_multiplier = 2",
            "volume_multiplier = 0.5",
            "fuel_points.volume_multiplier",
            ">= 1",
        ),
        ('timezone = "Europe/Madrid"', 'timezone = "Mars/Base"', "timezone", "unknown time zone"),
        (
            "points_per_liter = 1",
            "points_per_litre = 1",
            "fuel_points.points_per_liter",
            "required",
        ),
        (
            "window_days = 90",
            "window_days = 90\nwindow_hours = 3",
            "refunds.window_hours",
            "not a known",
        ),
        ("min_points = 5000", "min_points = 900", "tiers.levels", "strictly increase"),
        ("window_days = 7", "window_days = 120", "missions[0].window_days", "<= refunds"),
        ('benefit = "bonus_points"', 'benefit = "cash"', "coupons.newsletter.benefit", "must be"),
        (
            "[notifications.templates.welcome.en]",
            "[notifications.templates.welcome.fr]",
            "notifications.templates.welcome",
            "needs an 'en' template",
        ),
    ],
)
def test_invalid_program_names_file_field_and_reason(tmp_path, old, new, field, reason):
    assert old in VALID
    path = write(tmp_path, VALID.replace(old, new, 1))
    with pytest.raises(ProgramError) as error:
        load_program(path)
    assert error.value.field == field
    assert reason in error.value.reason
    assert str(path) in str(error.value)


def test_program_that_is_not_toml_is_rejected(tmp_path):
    with pytest.raises(ProgramError, match="not valid TOML"):
        load_program(write(tmp_path, "version = "))


def test_missing_program_file_is_rejected(tmp_path):
    with pytest.raises(ProgramError, match="file not found"):
        load_program(tmp_path / "absent.toml")


def test_the_worker_refuses_to_start_with_an_invalid_program(tmp_path, monkeypatch, capsys):
    from loyalty.cli.main import main

    path = write(tmp_path, VALID.replace("points = 100", "points = -5", 1))
    monkeypatch.setenv("LOYALTY_PROGRAM", str(path))
    assert main(["worker"]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "welcome_bonus.points" in error and "must be >= 0" in error
