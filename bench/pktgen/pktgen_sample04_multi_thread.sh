#!/bin/bash
# Multi-threaded: one generator thread per TX queue (default: one per CPU), many flows each,
# as the kernel's pktgen_sample02_multiqueue.sh. The device needs $THREADS TX queues
# (ip link add ... numtxqueues N).
#
#   ./pktgen_sample04_multi_thread.sh -N ns-client -i eth0 -t 2 -d 198.18.0.0/24 -r ns-server:eth0
basedir=$(dirname "$0")
source "${basedir}/functions.sh"
root_check_run_with_sudo
[[ " $* " == *" -t "* ]] || set -- "$@" -t "$(nproc)"
source "${basedir}/parameters.sh"
[ -z "$FLOWS" ] && FLOWS=4096
[ "$SRC" = 198.18.0.1 ] && SRC=198.18.0.0/24

function configure_dev() {
    local dev=$1
    local udp_dst_min udp_dst_max net
    read -r udp_dst_min udp_dst_max < <(split_range "$DST_PORT")
    net=$(python3 -c 'import ipaddress, sys; n = ipaddress.ip_network(sys.argv[1], strict=False); print(n[0], n[-1])' "$SRC")
    pg_set "$dev" "dst$IP6 ${DEST_IP%/*}"
    pg_set "$dev" "src_min ${net% *}"
    pg_set "$dev" "src_max ${net#* }"
    pg_set "$dev" "udp_src_min 1024"
    pg_set "$dev" "udp_src_max 65535"
    pg_set "$dev" "udp_dst_min $udp_dst_min"
    pg_set "$dev" "udp_dst_max $udp_dst_max"
    pg_set "$dev" "flag IPSRC_RND"
    pg_set "$dev" "flag UDPSRC_RND"
    pg_set "$dev" "flag QUEUE_MAP_CPU"
}

backend=$(select_backend yes)
info "backend: $backend, $THREADS threads"
run_and_report "$backend" configure_dev --sport 1024-65535
