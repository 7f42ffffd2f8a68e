"""The GPTQ and AWQ packers from PyPI, imported without their heavy package __init__.

AutoGPTQ 0.7.1 (`auto_gptq.nn_modules.qlinear.qlinear_cuda.QuantLinear.pack` and its
torch dequantizing forward, used when its CUDA extension is absent) and AutoAWQ 0.2.9
(`awq.modules.linear.gemm.WQLinear_GEMM.from_linear`, `awq.utils.packing_utils.
dequantize_gemm`) only need torch/numpy/transformers (+accelerate) for these modules, so
the packages are downloaded with `pip download --no-deps` into a cache outside the repo
and the two modules are loaded straight from the files.
"""
import importlib.util
import os
import subprocess
import sys
import tarfile
import types
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("SMELT_PACKER_CACHE",
                            Path.home() / ".cache" / "smelt-test-models" / "packers"))
AUTO_GPTQ = "auto-gptq==0.7.1"
AUTO_AWQ = "autoawq==0.2.9"


def _fetch(requirement, marker):
    """Unpacks the wheel/sdist of `requirement` under CACHE; returns the dir holding `marker`."""
    dest = CACHE / requirement.replace("==", "-")
    if not (dest / "ok").exists():
        dl = CACHE / "downloads"
        dl.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        requirement, "-d", str(dl)], check=True)
        name = requirement.split("==")[0].replace("-", "_").lower()
        version = requirement.split("==")[1]
        archive = next(p for p in dl.iterdir()
                       if p.name.lower().replace("-", "_").startswith(f"{name}_{version}"))
        dest.mkdir(parents=True, exist_ok=True)
        if archive.suffix == ".whl":
            zipfile.ZipFile(archive).extractall(dest)
        else:
            tarfile.open(archive).extractall(dest)
        (dest / "ok").write_text(archive.name)
    for root, dirs, _ in os.walk(dest):
        if marker in dirs:
            return root
    raise FileNotFoundError(f"{marker} not found in {dest}")


def _load(pkg_root, modname):
    """Imports `modname` from `pkg_root` with bare parent packages (their __init__ skipped)."""
    parts = modname.split(".")
    for i in range(1, len(parts)):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            m = types.ModuleType(name)
            m.__path__ = [os.path.join(pkg_root, *parts[:i])]
            sys.modules[name] = m
    spec = importlib.util.spec_from_file_location(
        modname, os.path.join(pkg_root, *parts) + ".py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    return mod


def gptq_quant_linear():
    """AutoGPTQ's QuantLinear (the `cuda` kind, whose forward dequantizes in torch)."""
    root = _fetch(AUTO_GPTQ, "auto_gptq")
    return _load(root, "auto_gptq.nn_modules.qlinear.qlinear_cuda").QuantLinear


def awq_gemm():
    """(WQLinear_GEMM, dequantize_gemm) from AutoAWQ."""
    root = _fetch(AUTO_AWQ, "awq")
    gemm = _load(root, "awq.modules.linear.gemm")
    utils = _load(root, "awq.utils.packing_utils")
    return gemm.WQLinear_GEMM, utils.dequantize_gemm
