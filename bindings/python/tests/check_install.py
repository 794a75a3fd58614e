#!/usr/bin/env python3
"""Install the build into a temporary DESTDIR and check that `import libsim` works from there alone."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--site-dir", required=True, help="python install dir (absolute, under the prefix)")
    parser.add_argument("--lib-dir", required=True, help="libsim's install libdir (absolute)")
    parser.add_argument("--meson", default=shutil.which("meson") or "meson")
    args = parser.parse_args()

    # `meson test` builds only the tests' dependencies: build the installed targets too (a no-op after `ninja`),
    # then install without rebuilding (a full rebuild inside a test could take long and race the other tests).
    plan = json.loads((Path(args.build_dir) / "meson-info" / "intro-install_plan.json").read_text())
    outputs = [os.path.relpath(path, args.build_dir) for path in plan.get("targets", {})]
    ninja = shutil.which("ninja") or "ninja"
    build = subprocess.run([ninja, "-C", args.build_dir, *outputs], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    if build.returncode != 0:
        print(f"building the installed targets failed:\n{build.stdout}")
        return 1

    with tempfile.TemporaryDirectory(prefix="libsim-install-") as tmp:
        destdir = Path(tmp) / "root"
        install = subprocess.run(
            [args.meson, "install", "-C", args.build_dir, "--no-rebuild", "--quiet", "--destdir", str(destdir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if install.returncode != 0:
            print(f"meson install failed ({install.returncode}):\n{install.stdout}")
            return 1
        site = destdir / args.site_dir.lstrip("/")
        libdir = destdir / args.lib_dir.lstrip("/")
        package = site / "libsim"
        expected = ["__init__.py", "_libsim.pyi", "py.typed", "channel.py", "client.py", "errors.py", "frame.py",
                    "noise.py", "pytest_plugin.py", "server.py", "session.py", "aio.py"]
        missing = [name for name in expected if not (package / name).exists()]
        extensions = list(package.glob("_libsim*.so"))
        if missing or not extensions:
            print(f"installed package incomplete in {package}: missing {missing}, extension {extensions}")
            return 1
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(site),
            "LD_LIBRARY_PATH": str(libdir),  # the installed rpath points at the real prefix, not the DESTDIR
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        code = (
            "import libsim, sys\n"
            f"assert libsim.__file__.startswith({str(site)!r}), libsim.__file__\n"
            f"assert libsim._libsim.__file__.startswith({str(site)!r}), libsim._libsim.__file__\n"
            "frame = libsim.Frame(libsim.FrameType.PROBE, source='a', destination='b')\n"
            "assert libsim.Frame.decode(frame.encode()) == frame\n"
            "try:\n"
            "    libsim.Frame.decode(b'\\x01')\n"
            "except libsim.FrameError as e:\n"
            "    assert e.code == libsim.Errc.TRUNCATED\n"
            "else:\n"
            "    sys.exit('no FrameError')\n"
            "print('installed libsim', libsim.__version__, 'imports from', libsim.__file__)\n"
        )
        result = subprocess.run([sys.executable, "-s", "-c", code], env=env, cwd=tmp)
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
