"""private_data_dir and keep_private on a real folder: modes by stat."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from tessera.storage.private_files import keep_private, private_data_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_missing_data_dir_is_made_0700_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "deep" / "data"
    private_data_dir(data_dir)
    assert _mode(data_dir) == 0o700
    assert "open to other accounts" not in caplog.text


def test_an_open_dir_and_its_files_are_tightened_and_links_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o777)
    os.chmod(data_dir, 0o775)
    (data_dir / "events.sqlite").write_text("")
    os.chmod(data_dir / "events.sqlite", 0o664)
    (data_dir / "already").write_text("")
    os.chmod(data_dir / "already", 0o400)  # narrower than 0600: left as it is
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("")
    os.chmod(outside, 0o644)
    (data_dir / "link").symlink_to(outside)
    with caplog.at_level(logging.WARNING):
        private_data_dir(data_dir)
    assert _mode(data_dir) == 0o700
    assert _mode(data_dir / "events.sqlite") == 0o600
    assert _mode(data_dir / "already") == 0o400
    assert _mode(outside) == 0o644
    assert "was open to other accounts (was 0775)" in caplog.text
    assert "events.sqlite" in caplog.text and "already" not in caplog.text


def test_keep_private_tightens_one_file_and_ignores_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "config.sqlite"
    keep_private(path)
    assert not path.exists()
    path.write_text("")
    os.chmod(path, 0o644)
    keep_private(path)
    assert _mode(path) == 0o600
