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
DEFAULT_SRC=198.18.0.0/24
source "${basedir}/parameters.sh"
[ -z "$FLOWS" ] && FLOWS=4096

function configure_dev() {
    configure_many_flows "$1"
    pg_set "$1" "flag QUEUE_MAP_CPU"
}

backend=$(select_backend yes)
info "backend: $backend, $THREADS threads"
run_and_report "$backend" configure_dev --sport 1024-65535
