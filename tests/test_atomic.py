"""Atomic writes: a file appears complete or not at all, and temporary names never collide."""

import os
import threading

import pytest

from comfyui_meticulous.files import atomic_path, atomic_write
from comfyui_meticulous.files.atomic import partial_name


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write(target, "first")
    atomic_write(target, b"second")
    assert target.read_text() == "second"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_failure_removes_temporary_and_keeps_the_original(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("original")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as staging:
            staging.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "original"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_no_overwrite_refuses_an_existing_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("original")
    with pytest.raises(FileExistsError, match="a.txt"):
        with atomic_path(target, overwrite=False) as staging:
            staging.write_text("new")
    assert target.read_text() == "original"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_temporary_names_are_unique_and_hidden(tmp_path):
    names = {partial_name(tmp_path / "x.png").name for _ in range(100)}
    assert len(names) == 100
    assert all(name.startswith(".x.png.") and name.endswith(".partial") for name in names)


def test_concurrent_writers_to_one_name_all_finish(tmp_path):
    target = tmp_path / "same.bin"
    errors = []

    def write(index):
        try:
            atomic_write(target, bytes([index]) * 10000)
        except Exception as err:  # noqa: BLE001 - collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    data = target.read_bytes()
    assert len(data) == 10000 and len(set(data)) == 1
    assert os.listdir(tmp_path) == ["same.bin"]
