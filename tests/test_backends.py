"""fastwnll.info() / `python -m fastwnll info`, and that the extension's CPU kernels really run threaded."""

import json
import subprocess
import sys

import pytest
import torch

import fastwnll
from fastwnll.extension import loader


def test_info_reports_the_live_backends():
    report = fastwnll.info()
    json.dumps(report)  # plain values only
    assert report["torch"] == torch.__version__
    assert report["extension"] is True and report["extension_error"] is None
    assert report["cuda_kernels"] == loader.cuda_compiled()
    assert report["cuda_kernels_live"] == (report["cuda_kernels"] and torch.cuda.is_available())
    assert report["device"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("threads", [1, 2])
def test_extension_kernels_use_torch_threads(threads):
    """at::parallel_for is inline OpenMP code: built without -fopenmp it silently runs on one thread."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        assert loader.load().parallel_threads() == threads
        assert fastwnll.info()["cpu_threads"] == threads
    finally:
        torch.set_num_threads(before)


def test_info_command_prints_a_table():
    out = subprocess.run([sys.executable, "-m", "fastwnll", "info"], capture_output=True, text=True, check=True).stdout
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert lines["extension"] == "True"
    assert int(lines["cpu_threads"]) >= 1
