"""Make `import torchaudio` work beside a CPU-only torch.

Every torchaudio wheel on PyPI is a CUDA build; next to torch+cpu its compiled extension fails to
load and `import torchaudio` raises OSError. The pure-Python parts this project uses (kaldi fbank,
transforms, functional.resample) work without it, so we remove the `.so` files -- but only when the
import actually fails: a CUDA machine keeps them.
"""
import importlib.util
import pathlib
import subprocess
import sys


def main() -> int:
    probe = subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True, text=True)
    if probe.returncode == 0:
        print("torchaudio imports as installed; nothing to strip")
        return 0
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or spec.origin is None:
        print("torchaudio is not installed", file=sys.stderr)
        return 1
    lib = pathlib.Path(spec.origin).parent / "lib"
    removed = sorted(p.name for p in lib.glob("*.so"))
    for p in lib.glob("*.so"):
        p.unlink()
    print(f"torchaudio's CUDA extension failed to load; removed {removed} from {lib}")
    check = subprocess.run([sys.executable, "-c", "import torchaudio.compliance.kaldi"], capture_output=True, text=True)
    if check.returncode != 0:
        print(check.stderr, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
