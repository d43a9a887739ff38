# Shared helpers for scripts/run and scripts/test. Sourced, not executed.

# ensure_debian_packages REASON PKG... : installs the Debian packages that are missing, saying why.
# Idempotent: packages already installed are left alone and nothing touches the network.
ensure_debian_packages() {
    local reason=$1
    shift
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    echo "==> installing Debian packages: ${missing[*]}"
    echo "    why: $reason"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "error: need root (or sudo) to apt-get install ${missing[*]}" >&2
            return 1
        fi
    fi
    if [ -z "${VOXGATE_APT_UPDATED:-}" ]; then
        $sudo apt-get update -qq
        export VOXGATE_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Packages the build itself needs: the `opus` crate links the system libopus through pkg-config.
BUILD_PACKAGES=(pkg-config libopus-dev)
