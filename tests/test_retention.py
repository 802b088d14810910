"""Pruning of per-container log directories: deleted containers only, by age and by count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from retinue.config import settings as config
from retinue.supervisor import retention

DAY = 86400.0
NOW = 1_800_000_000.0


def log_dir(root: Path, cid: str, age_days: float, ours: bool = True) -> Path:
    d = root / cid
    d.mkdir()
    written = NOW - age_days * DAY
    for name in (["supervisor.log"] if ours else []) + ["web.log"]:
        (d / name).write_text("x\n")
        os.utime(d / name, (written, written))
    return d


def living(state: Path, cid: str) -> None:
    (state / "ids" / cid).mkdir(parents=True)
    (state / "ids" / cid / "run%2Fc").touch()


def test_prune_by_age_and_count_never_the_living(tmp_path: Path) -> None:
    logs, state = tmp_path / "log", tmp_path / "state"
    logs.mkdir()
    state.mkdir()
    for i, age in enumerate([0.1, 1, 2, 3, 9, 30]):
        log_dir(logs, f"dead{i}", age)
    log_dir(logs, "alive-old", 30)
    living(state, "alive-old")
    log_dir(logs, "not-ours", 30, ours=False)
    (logs / "stray-file").write_text("")

    removed = retention.prune(str(logs), str(state), 7 * DAY, 100, now=NOW)
    assert sorted(os.path.basename(r) for r in removed) == ["dead4", "dead5"]
    removed = retention.prune(str(logs), str(state), 7 * DAY, 2, now=NOW)
    assert sorted(os.path.basename(r) for r in removed) == ["dead2", "dead3"]
    assert sorted(os.listdir(logs)) == ["alive-old", "dead0", "dead1", "not-ours", "stray-file"]
    # No age limit, keep none: every deleted container's directory goes, the living one stays.
    retention.prune(str(logs), str(state), 0, 0, now=NOW)
    assert sorted(os.listdir(logs)) == ["alive-old", "not-ours", "stray-file"]


def test_prune_of_a_missing_log_dir_is_nothing(tmp_path: Path) -> None:
    assert retention.prune(str(tmp_path / "nope"), str(tmp_path), 1, 1) == []


@pytest.mark.parametrize(("text", "seconds"), [
    ("7d", 7 * DAY), ("12h", 12 * 3600.0), ("1w2d", 9 * DAY), ("90m", 5400.0), ("", 0.0),
])
def test_retention_durations(text: str, seconds: float) -> None:
    assert config.parse_retention(text) == seconds


@pytest.mark.parametrize(("extra", "message"), [
    ('log_retention = "7 days"\n', "log_retention: expected a duration like 7d, 12h or 1w2d "
     "(or \"\" for no age limit), got '7 days'"),
    ('log_retention = "0d"\n', "log_retention: expected a duration like 7d"),
    ("log_retention = 7\n", "log_retention: expected a string, got an integer: 7"),
    ("log_keep_containers = -1\n", "log_keep_containers: expected 0 or more, got -1"),
])
def test_retention_settings_are_checked(tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'policy = ""\nservices = ""\n{extra}')
    with pytest.raises(config.ConfigError) as e:
        config.load(str(path))
    assert f"{path}: {message}" in str(e.value)


def test_retention_defaults_compile(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('policy = ""\nservices = ""\n')
    compiled = config.compile_config(config.load(str(path)), "runc", "/hook")
    assert (compiled["log_retention"], compiled["log_keep_containers"]) == (7 * DAY, 100)
