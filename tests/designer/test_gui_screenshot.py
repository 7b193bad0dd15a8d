"""`convstudio design`: headless screenshots, the no-display message, bad files and bad options."""

import os
import subprocess
import sys

from PyQt6.QtGui import QImage

from convstudio.ir.design import Design, save
from convstudio.ir.templates import build_template


def run_design(*args, env_update=None, drop=()):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_update or {})
    return subprocess.run([sys.executable, "-m", "designer", "design", *args], capture_output=True, text=True, env=env, timeout=120)


def test_screenshot_of_a_design_file_has_the_requested_size(tmp_path):
    path = tmp_path / "net.json"
    save(Design(build_template("lenet")), path)
    out = tmp_path / "shot.png"
    result = run_design(str(path), "--screenshot", str(out), "--size", "900x640", env_update={"QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr
    image = QImage(str(out))
    assert (image.width(), image.height()) == (900, 640)
    colours = {image.pixel(x, y) for x in range(0, 900, 30) for y in range(0, 640, 30)}
    assert len(colours) > 5, "the window was actually drawn"


def test_screenshot_without_any_display_falls_back_to_offscreen(tmp_path):
    out = tmp_path / "default.png"
    result = run_design("--screenshot", str(out), "--size", "640x480", drop=("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
    assert result.returncode == 0, result.stderr
    assert QImage(str(out)).size().width() == 640


def test_no_display_says_so_in_one_line():
    result = run_design(drop=("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no display" in lines[0] and "--screenshot" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_file_and_bad_size_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = run_design(str(bad), "--screenshot", str(tmp_path / "x.png"), env_update={"QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 2 and result.stderr.startswith("error: malformed JSON")
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_design("--screenshot", str(tmp_path / "x.png"), "--size", "big", env_update={"QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 2 and "--size" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_display_check_follows_the_chosen_platform(monkeypatch):
    from convstudio.designer.gui.app import has_display

    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert not has_display()
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    assert not has_display(), "the X11 plugin needs DISPLAY"
    monkeypatch.setenv("DISPLAY", ":0")
    assert has_display()
    monkeypatch.setenv("QT_QPA_PLATFORM", "wayland")
    assert not has_display()
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert has_display()


def test_readme_shows_the_committed_resnet18_screenshot():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert "docs/screenshot_resnet18.png" in (root / "README.md").read_text()
    image = QImage(str(root / "docs" / "screenshot_resnet18.png"))
    assert (image.width(), image.height()) == (1600, 1000)
