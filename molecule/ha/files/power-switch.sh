#!/usr/bin/env bash
# The HA lab's power switch: podman's API (which fence_docker drives: kill, start, restart of a
# head's container) behind stunnel on the cluster network's gateway, open only to a client
# certificate that the storage heads hold. podman's API itself is root on this machine without
# authentication, so it listens on a private unix socket only.
#   power-switch.sh start <ip> <port> <head>...   (idempotent)
#   power-switch.sh stop
set -euo pipefail
dir=/var/tmp/pvesan-ha-power-switch
case ${1:-} in
start)
    ip=$2 port=$3
    shift 3
    mkdir -p "$dir" && chmod 0700 "$dir" && cd "$dir"
    if [[ ! -f client.crt ]]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=pvesan-lab-ca \
            -keyout ca.key -out ca.crt 2>/dev/null
        for who in server client; do
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=pvesan-lab-$who" \
                -keyout $who.key -out $who.csr 2>/dev/null
            openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out $who.crt \
                -extfile <(echo "subjectAltName=IP:$ip") 2>/dev/null
        done
    fi
    if ! { [[ -f podman.pid ]] && kill -0 "$(cat podman.pid)" 2>/dev/null; }; then
        setsid podman system service --time=0 "unix://$dir/podman.sock" >podman.log 2>&1 </dev/null &
        echo $! >podman.pid
    fi
    cat >stunnel.conf <<CONF
pid = $dir/stunnel.pid
output = $dir/stunnel.log
[podman-api]
accept = $ip:$port
connect = $dir/podman.sock
cert = $dir/server.crt
key = $dir/server.key
CAfile = $dir/ca.crt
requireCert = yes
verifyChain = yes
CONF
    if ! { [[ -f stunnel.pid ]] && kill -0 "$(cat stunnel.pid)" 2>/dev/null; }; then
        stunnel4 stunnel.conf
    fi
    for head in "$@"; do
        podman exec "$head" mkdir -p /etc/pvesan-lab-power-switch
        for f in ca.crt client.crt client.key; do
            podman cp "$f" "$head:/etc/pvesan-lab-power-switch/$f"
        done
        podman exec "$head" chmod 0600 /etc/pvesan-lab-power-switch/client.key
    done
    for _ in $(seq 50); do
        curl -sf --cacert ca.crt --cert client.crt --key client.key "https://$ip:$port/_ping" >/dev/null && exit 0
        sleep 0.2
    done
    echo "the power switch did not answer on https://$ip:$port" >&2
    exit 1
    ;;
stop)
    for p in stunnel podman; do
        if [[ -f $dir/$p.pid ]]; then kill "$(cat "$dir/$p.pid")" 2>/dev/null || true; fi
    done
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start <ip> <port> <head>... | stop" >&2
    exit 2
    ;;
esac
