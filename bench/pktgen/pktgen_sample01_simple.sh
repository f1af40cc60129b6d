#!/bin/bash
# Single flow: one UDP flow (one source, one destination, one port pair) at full rate.
# As the kernel's pktgen_sample01_simple.sh; the userspace AF_XDP generator where
# /proc/net/pktgen is missing.
#
#   ./pktgen_sample01_simple.sh -i eth0 -d 198.18.0.2 -m 02:00:00:00:00:02 -n 1000000
#   ./pktgen_sample01_simple.sh -N ns-client -i eth0 -d 198.18.0.2 -D 5 -r ns-server:eth0
basedir=$(dirname "$0")
source "${basedir}/functions.sh"
root_check_run_with_sudo
source "${basedir}/parameters.sh"

function configure_dev() {
    local dev=$1
    local udp_dst_min udp_dst_max
    read -r udp_dst_min udp_dst_max < <(split_range "$DST_PORT")
    pg_set "$dev" "dst$IP6 $DEST_IP"
    pg_set "$dev" "src_min ${SRC%/*}"
    pg_set "$dev" "src_max ${SRC%/*}"
    pg_set "$dev" "udp_dst_min $udp_dst_min"
    pg_set "$dev" "udp_dst_max $udp_dst_min"
}

THREADS=1
backend=$(select_backend yes)
info "backend: $backend"
FLOWS=1
run_and_report "$backend" configure_dev
