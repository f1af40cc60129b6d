#!/bin/bash
# SYN flood towards a scope: TCP SYNs from randomised source addresses and ports to
# $DEST_IP:$DST_PORT, each a new flow for the XDP classifier (the new-flow rate). The kernel
# pktgen sends only UDP, so this sample always uses the userspace generator.
#
#   ./pktgen_sample03_syn_flood.sh -N ns-client -i eth0 -S 198.18.0.0/24 -d 198.18.0.2 -p 443 -r ns-server:eth0
basedir=$(dirname "$0")
source "${basedir}/functions.sh"
root_check_run_with_sudo
DEFAULT_SRC=198.18.0.0/24
DEFAULT_DST_PORT=443
source "${basedir}/parameters.sh"
[ -z "$FLOWS" ] && FLOWS=65536

backend=$(select_backend no)
info "backend: $backend"
run_and_report "$backend" none --sport 1024-65535 --syn
