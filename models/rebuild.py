"""Rebuild the model files from the mediapipe 0.10.21 wheel on PyPI and verify them.

    python models/rebuild.py            # download the wheel, extract, check sha256
    python models/rebuild.py --check    # only check the files already here
"""

import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    manifest = json.loads((HERE / "MANIFEST.json").read_text())
    if "--check" not in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--only-binary=:all:", "mediapipe==0.10.21", "-d", tmp], check=True)
            wheel = next(Path(tmp).glob("mediapipe-0.10.21-*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                for name, entry in manifest["files"].items():
                    (HERE / name).write_bytes(zf.read(entry["wheel_path"]))
    bad = 0
    for name, entry in manifest["files"].items():
        digest = hashlib.sha256((HERE / name).read_bytes()).hexdigest()
        ok = digest == entry["sha256"]
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {name} {digest}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
