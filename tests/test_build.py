"""The build script's decisions (where the CUDA toolkit is, whether CUDA kernels are built, and
why), the record `fastwnll info` reports, and the set-up script's "extension is current" check."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastwnll
from fastwnll.extension import loader

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() itself only runs under __main__
    return module


@pytest.fixture(scope="module")
def setup_py():
    return _load("fastwnll_setup_script", ROOT / "setup.py")


def _toolkit(root: Path) -> str:
    (root / "include").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("")
    (root / "bin" / "nvcc").write_text("")
    return str(root)


def test_a_wrapper_nvcc_guess_falls_back_to_a_real_toolkit(setup_py, tmp_path):
    wrapper_dir = tmp_path / "usr_local"  # what torch guesses from /usr/local/bin/nvcc: no headers
    (wrapper_dir / "bin").mkdir(parents=True)
    toolkit = _toolkit(tmp_path / "cuda-13.0")
    found, looked = setup_py.find_cuda_home({"CUDA_PATH": toolkit}, str(wrapper_dir))
    assert found == toolkit
    assert looked == [toolkit]
    found, looked = setup_py.find_cuda_home({}, str(wrapper_dir))
    assert looked[0] == str(wrapper_dir) and looked[-1] == "/usr/local/cuda"
    assert found == ("/usr/local/cuda" if setup_py.is_toolkit("/usr/local/cuda") else None)


def test_cuda_home_wins_over_cuda_path_and_the_guess(setup_py, tmp_path):
    first, second = _toolkit(tmp_path / "a"), _toolkit(tmp_path / "b")
    assert setup_py.find_cuda_home({"CUDA_HOME": first, "CUDA_PATH": second}, second)[0] == first
    missing = str(tmp_path / "nothing")
    assert setup_py.find_cuda_home({"CUDA_HOME": missing}, second)[0] == second


@pytest.mark.parametrize(
    "flag, toolkit, torch_cuda, built, says",
    [
        ("auto", "/opt/cuda", "13.0", True, "built with the toolkit in /opt/cuda"),
        ("1", "/opt/cuda", "13.0", True, "built with the toolkit in /opt/cuda"),
        ("0", "/opt/cuda", "13.0", False, "not built: FASTWNLL_CUDA=0"),
        ("auto", None, "13.0", False, "not built: no CUDA toolkit"),
        ("auto", "/opt/cuda", None, False, "is a CPU-only build"),
    ],
)
def test_cuda_decision_says_why(setup_py, flag, toolkit, torch_cuda, built, says):
    decision, reason = setup_py.cuda_decision(flag, toolkit, ["/somewhere"], torch_cuda)
    assert decision is built
    assert says in reason


@pytest.mark.parametrize(
    "toolkit, torch_cuda, says", [(None, "13.0", "no CUDA toolkit"), ("/opt/cuda", None, "CPU-only build")]
)
def test_forcing_cuda_without_a_toolkit_fails_loudly(setup_py, toolkit, torch_cuda, says):
    with pytest.raises(RuntimeError, match=f"FASTWNLL_CUDA=1 but .*{says}"):
        setup_py.cuda_decision("1", toolkit, ["/somewhere"], torch_cuda)


def test_unknown_cuda_switch_is_refused(setup_py):
    with pytest.raises(RuntimeError, match="FASTWNLL_CUDA must be auto, 0 or 1, got 'maybe'"):
        setup_py.cuda_decision("maybe", None, [], "13.0")


def test_info_reports_how_the_extension_was_built():
    build = loader.build_config()
    assert build is not None, "setup.py writes fastwnll/_build_config.py when it builds the extension"
    assert build["torch"] == torch.__version__
    assert build["cuda"] == loader.cuda_compiled()
    report = fastwnll.info()
    assert report["build"] == "CUDA kernels " + build["reason"]
    assert report["built_for_torch"] == torch.__version__


def _current(env_update: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_update}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "extension_current.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_setup_skips_the_build_only_when_the_extension_is_current():
    flag = "1" if loader.cuda_compiled() else "0"
    assert _current({"FASTWNLL_CUDA": flag}).returncode == 0
    other = _current({"FASTWNLL_CUDA": "0" if flag == "1" else "1"})
    assert other.returncode == 1 and "FASTWNLL_CUDA=" in other.stdout


def test_default_architectures_carry_ptx_for_newer_gpus(setup_py, monkeypatch):
    """Without a visible GPU the CUDA kernels are built for sm_80 and sm_90 and also shipped as
    compute_90 PTX, which the driver compiles for GPUs newer than the build knew."""
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", setup_py.DEFAULT_ARCH_LIST)
    flags = cpp_extension._get_cuda_arch_flags()
    assert "-gencode=arch=compute_80,code=sm_80" in flags and "-gencode=arch=compute_90,code=sm_90" in flags
    assert "-gencode=arch=compute_90,code=compute_90" in flags
