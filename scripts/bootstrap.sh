# Shared set-up for scripts/run and scripts/test (sourced, not executed).

bootstrap_python() {
    local extra="${1:-}"
    local py="${PYTHON:-python3}"
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "mailticket needs Python 3.11 or newer (found: $($py --version 2>&1))" >&2
        exit 1
    fi
    [ -x .venv/bin/python ] || "$py" -m venv .venv
    local spec="."
    [ -n "$extra" ] && spec=".[$extra]"
    # Re-install only when the dependency list changed since the last install.
    local stamp=".venv/.mailticket-installed-$extra"
    local digest
    digest=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
        .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
        .venv/bin/python -m pip install --quiet -e "$spec"
        echo "$digest" > "$stamp"
    fi
}

bootstrap_postgres() {
    if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
        if command -v pg_ctlcluster >/dev/null; then
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
        fi
    fi
}

_apt_updated=0
apt_install() {
    # $1: a command that must exist afterwards; the rest: Debian packages providing it.
    local probe="$1"; shift
    if [ -x "$probe" ] || command -v "$probe" >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "missing $probe: run as root or install: $*" >&2
        return 1
    fi
    if [ "$_apt_updated" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

bootstrap_system_packages() {
    # Features append the Debian packages their tests need here.
    :
    # live sources: tests/live runs a private Dovecot (IMAP) on loopback
    apt_install /usr/sbin/dovecot dovecot-imapd
    # API: tests/api drives the thread view in headless Chromium
    apt_install /usr/bin/chromium chromium chromium-driver
}
