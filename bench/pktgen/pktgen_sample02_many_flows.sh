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
DEFAULT_SRC=198.18.0.0/24
source "${basedir}/parameters.sh"
[ -z "$FLOWS" ] && FLOWS=4096

function configure_dev() {
    configure_many_flows "$1"
    pg_set "$1" "flag UDPDST_RND"
    pg_set "$1" "flows $FLOWS"
    pg_set "$1" "flowlen 8"
}

backend=$(select_backend yes)
info "backend: $backend"
run_and_report "$backend" configure_dev --sport 1024-65535
