# Shared set-up for scripts/run and scripts/test (sourced, not executed).

bootstrap_python() {
    local extra="${1:-}"
    local py="${PYTHON:-python3}"
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "mailticket needs Python 3.11 or newer (found: $($py --version 2>&1))" >&2
        exit 1
    fi
    if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
        apt_install_packages python3-venv || exit 1
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

_apt_updated=0
apt_install_packages() {
    # Debian packages, installed with apt (needs root); says what to do otherwise.
    if [ "$(id -u)" != 0 ]; then
        echo "missing system packages; as root run: apt-get install $*" >&2
        return 1
    fi
    if [ "$_apt_updated" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        _apt_updated=1
    fi
    echo "installing system packages: $*" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The files the tests run, each with the Debian package that provides it. A package is
# installed when its file is missing, whatever else of the same software is there (Chromium
# without chromium-driver, dovecot-core without dovecot-imapd).
SYSTEM_FILES=(
    "/usr/sbin/dovecot dovecot-core"          # tests/live/dovecot.py: the private IMAP server
    "/usr/lib/dovecot/imap dovecot-imapd"     # ... and its IMAP protocol process
    "/usr/lib/dovecot/lmtp dovecot-lmtpd"     # ... and LMTP delivery (tests/live/test_push.py)
    "/usr/bin/openssl openssl"                # test certificates (IMAP and SMTP TLS)
    "/usr/bin/chromium chromium"              # tests/api/test_browser.py: the thread view
    "/usr/bin/chromedriver chromium-driver"   # ... driven by selenium through chromedriver
)

bootstrap_system_packages() {
    local missing=() entry file package
    for entry in "${SYSTEM_FILES[@]}"; do
        read -r file package <<<"$entry"
        [ -x "$file" ] || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install_packages "${missing[@]}" || return 1
    fi
    for entry in "${SYSTEM_FILES[@]}"; do
        read -r file package <<<"$entry"
        if [ ! -x "$file" ]; then
            echo "$file is still missing after installing $package" >&2
            return 1
        fi
    done
}

_pg_ready() {
    .venv/bin/python - <<'EOF' 2>/dev/null
import os, psycopg2
psycopg2.connect(os.environ.get("MAILTICKET_TEST_PG",
                 "host=127.0.0.1 port=5432 user=postgres dbname=postgres"), connect_timeout=3).close()
EOF
}

bootstrap_postgres() {
    # The tests need PostgreSQL on 127.0.0.1:5432, user postgres without a password, and a
    # database `test` (tests/dbutil.py). MAILTICKET_TEST_PG / _URL point elsewhere.
    if [ -n "${MAILTICKET_TEST_PG:-}" ]; then
        return 0
    fi
    local fresh=0
    if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        if ! _pg_ready; then
            apt_install_packages postgresql || return 1
            fresh=1
        fi
    fi
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1 || true)
    if [ -n "$version" ] && ! _pg_ready; then
        if [ "$fresh" = 1 ]; then
            # Only a cluster installed just now is opened up: trust on loopback, for tests.
            sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' \
                "/etc/postgresql/$version/main/pg_hba.conf"
        fi
        pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
            || pg_ctlcluster "$version" main restart || true
    fi
    if ! _pg_ready; then
        echo "PostgreSQL is not reachable on 127.0.0.1:5432 as user postgres without a" \
             "password; the tests need it (or set MAILTICKET_TEST_PG)" >&2
        return 1
    fi
    .venv/bin/python - <<'EOF'
import psycopg2
conn = psycopg2.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres")
conn.autocommit = True
with conn.cursor() as cur:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = 'test'")
    if cur.fetchone() is None:
        cur.execute("CREATE DATABASE test")
conn.close()
EOF
}

# tests/pgcluster.py: the private cluster the restart tests stop and start under a worker
# (the shared server on 5432 is never stopped). It needs the server binaries here even when
# the tests' database is elsewhere (MAILTICKET_TEST_PG) or was there already.
PG_SERVER_GLOB="${PG_SERVER_GLOB:-/usr/lib/postgresql/*/bin/initdb}"

bootstrap_postgres_binaries() {
    # After bootstrap_postgres: on a fresh machine that one installs the package itself and
    # opens its new cluster to the tests; installing it here first would skip that.
    local found
    found=$(compgen -G "$PG_SERVER_GLOB" || true)
    [ -n "$found" ] && return 0
    apt_install_packages postgresql || return 1
    if [ -z "$(compgen -G "$PG_SERVER_GLOB" || true)" ]; then
        echo "no $PG_SERVER_GLOB after installing postgresql" >&2
        return 1
    fi
}
