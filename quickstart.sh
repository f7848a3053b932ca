#!/usr/bin/env bash
# hpc-unet quick start on a fresh Debian/Ubuntu machine with Python 3.11.
#
#   ./quickstart.sh demo [ARGS]   install into .venv, then run `hpc-unet demo` (the whole pipeline on
#                                 synthetic data on this machine; ARGS go to `hpc-unet demo`)
#   ./quickstart.sh test [ARGS]   install into .venv (+ Debian's Slurm when root), start the local Slurm
#                                 cluster, run the whole test suite (ARGS go to pytest), stop the cluster
#   ./quickstart.sh mutate [MODULE]  mutation testing of MODULE against its quick tests (docs/testing.md);
#                                 no MODULE lists them, `all` runs each in turn (long: minutes per module)
#
# Installing is idempotent and skipped when nothing changed (a stamp of setup.cfg in .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY=${PYTHON:-python3}

install_python() {
    if [[ ! -x .venv/bin/python ]]; then
        if ! "$PY" -m venv .venv 2>/dev/null; then
            if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
                apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
                rm -rf .venv && "$PY" -m venv .venv
            else
                echo "quickstart: '$PY -m venv' failed; install python3-venv (Python 3.11) and retry" >&2
                exit 2
            fi
        fi
    fi
    local stamp
    stamp=$(sha256sum setup.cfg pyproject.toml | sha256sum | cut -c1-16)
    if [[ ! -f .venv/.installed-$stamp ]]; then
        echo "quickstart: installing hpc-unet and its dependencies into .venv (about a minute)"
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q -e ".[test]"
        rm -f .venv/.installed-* && touch ".venv/.installed-$stamp"
    fi
}

case ${1:-} in
    demo)
        shift
        install_python
        exec .venv/bin/hpc-unet demo "$@"
        ;;
    test)
        shift
        install_python
        started=""
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            bash slurm/install.sh
            # headless Chromium for the report's browser test (tests/test_analysis_report_browser.py, driven by
            # playwright from the test extra; it fails under CI=true without the browser, skips elsewhere)
            command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q chromium; } || echo "quickstart: could not install chromium; the report browser test cannot run"
            bash slurm/start.sh && started=1
            trap 'bash slurm/stop.sh' EXIT
        else
            echo "quickstart: not root or no apt-get: the Slurm integration tests will be skipped"
        fi
        HPC_UNET_SLURM_STARTED=$started .venv/bin/python -m pytest "$@"
        ;;
    mutate)
        shift
        install_python
        exec .venv/bin/python tools/mutate.py "$@"
        ;;
    *)
        sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
