# Sourced by tests/run.sh and demo_notebooks/start.sh: the project's own virtual environment in .venv/.
#
# Why a venv: Debian's and Ubuntu's system Python refuse `pip install` outside one (externally-managed-environment).
# It is made with --system-site-packages, so a torch that the base Python already has (a CPU or CUDA build the
# user chose) is used as it is; only when no torch is importable is $LIVEXAI_TORCH installed (torch==2.13.0 by
# default, from whatever index pip is configured for). The venv is reused when present; delete .venv/ to start over.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# ensure_venv EXTRAS: create or reuse .venv/, put it first on the PATH, install livexai[EXTRAS] (editable) in it.
ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    if ! python3 -m venv --system-site-packages .venv >/dev/null 2>&1; then
      rm -rf .venv  # Debian without python3-venv leaves a half-made folder
      apt_install python3-venv
      python3 -m venv --system-site-packages .venv
    fi
  fi
  export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
  if ! python -c "import torch" >/dev/null 2>&1; then
    echo "No torch found: installing ${LIVEXAI_TORCH:-torch==2.13.0} into .venv/"
    python -m pip install -q "${LIVEXAI_TORCH:-torch==2.13.0}"
  fi
  python -m pip install -q -e ".[$1]"
}
