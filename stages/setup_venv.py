"""Make the project's venv with the pinned requirements: uv where it is on PATH or installable from the
registry, pip otherwise (lib/venv_setup.py). `make venv` runs it; the same installed set either way.

    make venv                       # uv when it can be had, else pip
    make venv INSTALLER=pip         # pip, as without uv
    python -m stages.setup_venv --plan --installer uv   # what uv would install now, one name==version a line

Its options are read with argparse, not click: it runs with the system Python, before the venv that
holds click exists.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from lib.venv_setup import SetupError, choose_installer, make_venv, planned_set


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.setup_venv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=".venv", help="the venv folder (default .venv)")
    parser.add_argument("--installer", choices=("auto", "uv", "pip"), default="auto",
                        help="auto: uv when on PATH or installable, else pip")
    parser.add_argument("--venv-args", default="", help="options for `python -m venv` (they make auto use pip)")
    parser.add_argument("--plan", action="store_true", help="print the set that would be installed; install nothing")
    options = parser.parse_args(argv)
    venv_args = shlex.split(options.venv_args)
    started = time.monotonic()
    try:
        installer = choose_installer(options.installer, sys.executable, venv_args)
        if options.plan:
            print("\n".join(sorted(planned_set(installer, sys.executable))))
            return 0
        print(f"venv: installing with {installer.name} ({installer.why}) into {options.venv}", flush=True)
        make_venv(installer, sys.executable, options.venv, venv_args)
    except SetupError as error:
        print(f"venv: {error}", file=sys.stderr)
        return 1
    print(f"venv: ready in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
