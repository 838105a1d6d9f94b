#!/usr/bin/env bash
# A throw-away Dovecot (POP3 + POP3S on 127.0.0.1) for the pop3 plugin's tests and benchmark.
# Installs nothing: needs dovecot-core, dovecot-pop3d and openssl (CI installs them).
#
#   scripts/dovecot.sh start DIR     write config, cert, users and Maildirs under DIR; start; wait
#   scripts/dovecot.sh stop DIR      stop it (waits until the port is closed)
#   scripts/dovecot.sh restart DIR   stop, then start
#   scripts/dovecot.sh env DIR       print the `export` lines the tests read
#   scripts/dovecot.sh --dir DIR CMD the same, directory first (used by ALERTBRIDGE_TEST_DOVECOT_CTL)
#
# TLS: a test CA (ALERTBRIDGE_TEST_POP3_CA) signs the server certificate for localhost/127.0.0.1.
# Ports: POP3_PORT (default 11110, plain with STLS), POP3S_PORT (default 11995). Works as root
# (internal processes as dovecot/dovenull, mail as nobody:nogroup) and as an ordinary user.
# Users: alerts/alertpass, bench/benchpass, empty/emptypass, and for the tests each of
# $TEST_USERS with password "<user>pass", each with <root>/<user>/Maildir/{new,cur,tmp}.
set -eu

if [ "${1:-}" = "--dir" ]; then DIR=${2:?usage: $0 --dir DIR start|stop|restart|env}; CMD=${3:?}
else CMD=${1:?usage: $0 start|stop|restart|env DIR}; DIR=${2:?usage: $0 $CMD DIR}; fi
mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
D=$DIR/dovecot; MAIL=$DIR/mail; CONF=$D/dovecot.conf
P=${POP3_PORT:-11110}; PS=${POP3S_PORT:-11995}
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
TEST_USERS="tplain tstls tpop3s trefuse tkeep trestart twrongpw tdisallow tbatch tshutdown tsize tlock"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
    local IU IG LU MU MG MUID MGID u
    if [ "$(id -u)" = 0 ]; then IU=dovecot; IG=dovecot; LU=dovenull; MU=nobody; MG=nogroup
    else IU=$(id -un); IG=$(id -gn); LU=$IU; MU=$IU; MG=$IG; fi
    MUID=$(id -u "$MU"); MGID=$(getent group "$MG" | cut -d: -f3)
    mkdir -p "$D/run" "$D/state" "$D/log" "$D/tls" "$MAIL"; chmod 0755 "$D/run"
    # A test CA and a server certificate it signed (webpki refuses a CA certificate as the
    # server's own, so one self-signed certificate is not enough).
    if [ ! -s "$D/tls/ca.pem" ] || [ ! -s "$D/tls/cert.pem" ]; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=alertbridge test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout "$D/tls/ca-key.pem" -out "$D/tls/ca.pem" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
            -keyout "$D/tls/key.pem" -out "$D/tls/server.csr" 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$D/tls/server.ext"
        openssl x509 -req -in "$D/tls/server.csr" -CA "$D/tls/ca.pem" -CAkey "$D/tls/ca-key.pem" -CAcreateserial \
            -days 3650 -extfile "$D/tls/server.ext" -out "$D/tls/cert.pem" 2>/dev/null
    fi
    chmod 600 "$D/tls/ca-key.pem"
    chmod 600 "$D/tls/key.pem"
    {
        echo "alerts:{PLAIN}alertpass:$MUID:$MGID::$MAIL/alerts::"
        echo "bench:{PLAIN}benchpass:$MUID:$MGID::$MAIL/bench::"
        echo "empty:{PLAIN}emptypass:$MUID:$MGID::$MAIL/empty::"
        for u in $TEST_USERS; do echo "$u:{PLAIN}${u}pass:$MUID:$MGID::$MAIL/$u::"; done
    } > "$D/users"
    for u in alerts bench empty $TEST_USERS; do
        mkdir -p "$MAIL/$u/Maildir/new" "$MAIL/$u/Maildir/cur" "$MAIL/$u/Maildir/tmp"
    done
    # Tests (running as the caller) drop files into new/: the mail user must be able to move
    # and delete them, the caller to create them.
    chown -R "$MU:$MG" "$MAIL"; chmod -R a+rwX "$MAIL"
    cat > "$CONF" <<CONF
instance_name = alertbridge-test-dovecot
base_dir = $D/run
state_dir = $D/state
protocols = pop3
listen = 127.0.0.1
log_path = $D/log/dovecot.log
default_internal_user = $IU
default_internal_group = $IG
default_login_user = $LU
first_valid_uid = $MUID
first_valid_gid = $MGID
ssl = yes
ssl_cert = <$D/tls/cert.pem
ssl_key = <$D/tls/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $D/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $D/users
}
mail_location = maildir:~/Maildir
mail_max_userip_connections = 20
# A throw-away server on a shared CI machine: do not wait for the disk on every change.
mail_fsync = ${DOVECOT_MAIL_FSYNC:-never}
pop3_uidl_format = %08Xu%08Xv
service pop3-login {
  chroot =
  inet_listener pop3 {
    address = 127.0.0.1
    port = $P
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $PS
    ssl = yes
  }
}
service anvil {
  chroot =
}
service auth-worker {
  user = \$default_internal_user
}
CONF
    doveconf -c "$CONF" -n >/dev/null
}

running() { [ -s "$D/run/master.pid" ] && kill -0 "$(cat "$D/run/master.pid")" 2>/dev/null; }

start() {
    if running; then echo "dovecot already running (pid $(cat "$D/run/master.pid"))"; return 0; fi
    # Another server on our ports would take this one's tests (with another Maildir root).
    if port_open "$P" || port_open "$PS"; then
        echo "127.0.0.1:$P or :$PS is already in use (another Dovecot from another DIR?); stop it or set POP3_PORT/POP3S_PORT" >&2
        return 1
    fi
    write_config
    dovecot -c "$CONF"
    for _ in $(seq 100); do
        if port_open "$P" && port_open "$PS"; then echo "dovecot up on 127.0.0.1:$P and :$PS"; return 0; fi
        sleep 0.1
    done
    echo "dovecot did not open 127.0.0.1:$P within 10 s; see $D/log/dovecot.log" >&2; return 1
}

stop() {
    running || return 0
    kill "$(cat "$D/run/master.pid")"
    for _ in $(seq 100); do
        if ! running && ! port_open "$P"; then return 0; fi
        sleep 0.1
    done
    echo "dovecot did not stop within 10 s" >&2; return 1
}

case $CMD in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    env)
        echo "export ALERTBRIDGE_TEST_POP3_ADDR=127.0.0.1:$P"
        echo "export ALERTBRIDGE_TEST_POP3S_ADDR=127.0.0.1:$PS"
        echo "export ALERTBRIDGE_TEST_POP3_CA=$D/tls/ca.pem"
        echo "export ALERTBRIDGE_TEST_MAILDIR_ROOT=$MAIL"
        echo "export ALERTBRIDGE_TEST_DOVECOT_CTL=\"$SELF --dir $DIR\""
        echo "export ALERTBRIDGE_TEST_DOVECOT_CONF=$CONF"
        ;;
    *) echo "usage: $0 start|stop|restart|env DIR" >&2; exit 2 ;;
esac
