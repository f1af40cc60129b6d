#!/bin/bash
# Many flows: source addresses and source ports randomised over $SRC (a CIDR) and 1024-65535,
# destinations over $DEST_IP (a CIDR allowed) and $DST_PORT (a range allowed). As the kernel's
# pktgen_sample04_many_flows.sh; the userspace generator builds $FLOWS (default 4096) frames
# once and cycles through them.
#
#   ./pktgen_sample02_many_flows.sh -N ns-client -i eth0 -S 198.18.0.0/24 -d 198.18.0.0/24 -p 9-99 -r ns-server:eth0
basedir=$(dirname "$0")
source "${basedir}/functions.sh"
root_check_run_with_sudo
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
    pg_set "$dev" "flag UDPDST_RND"
    pg_set "$dev" "flows $FLOWS"
    pg_set "$dev" "flowlen 8"
}

backend=$(select_backend yes)
info "backend: $backend"
run_and_report "$backend" configure_dev --sport 1024-65535
