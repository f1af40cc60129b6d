# Helpers for the pktgen samples, after the kernel's samples/pktgen/functions.sh: the kernel
# pktgen through /proc/net/pktgen where the kernel has it, else the project's userspace AF_XDP
# generator (`tls-inspect-bench pktgen`), which takes the same options.
# shellcheck shell=bash

function err() {
    local exitcode=$1
    shift
    echo "ERROR: $*" >&2
    exit "$exitcode"
}

function warn() {
    echo "WARN : $*" >&2
}

function info() {
    if [[ -n "$VERBOSE" ]]; then
        echo "INFO : $*" >&2
    fi
}

function root_check_run_with_sudo() {
    if [ "$EUID" -ne 0 ]; then
        err 4 "Run as root (pktgen and AF_XDP need it)"
    fi
}

## -- Backends --

# kernel, where /proc/net/pktgen exists and the sample can use it; xdp otherwise.
function select_backend() {
    local kernel_ok=$1
    case "${BACKEND:-auto}" in
        kernel) [ -d /proc/net/pktgen ] || err 3 "-B kernel: /proc/net/pktgen is missing (modprobe pktgen)"
                [ "$kernel_ok" = yes ] || err 3 "-B kernel: the kernel pktgen cannot send this sample's frames"
                echo kernel ;;
        xdp) echo xdp ;;
        auto) if [ -d /proc/net/pktgen ] && [ "$kernel_ok" = yes ] && [ -z "$NETNS" ]; then echo kernel; else echo xdp; fi ;;
        *) err 2 "-B: '$BACKEND': kernel, xdp or auto" ;;
    esac
}

# The userspace generator: $PKTGEN_BIN, or tls-inspect-bench on PATH, or the checkout's build.
function pktgen_bin() {
    if [ -n "$PKTGEN_BIN" ]; then echo "$PKTGEN_BIN"; return; fi
    if command -v tls-inspect-bench >/dev/null; then command -v tls-inspect-bench; return; fi
    local here
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    for p in "$here/../../target/release/tls-inspect-bench" "$here/../../target/debug/tls-inspect-bench"; do
        [ -x "$p" ] && { echo "$p"; return; }
    done
    err 3 "tls-inspect-bench not found (cargo build --release -p tls-inspect-bench, or set PKTGEN_BIN)"
}

# Runs a command in $NETNS when set (nsenter keeps /sys and the bpffs pins visible).
function in_ns() {
    local ns=$1
    shift
    if [ -n "$ns" ]; then nsenter --net="/run/netns/$ns" -- "$@"; else "$@"; fi
}

# Received packets of the far side's device ("[NETNS:]DEV").
function rx_packets() {
    local spec=$1 ns="" dev=$1
    if [[ "$spec" == *:* ]]; then ns=${spec%%:*}; dev=${spec#*:}; fi
    local args=(-s -j link show dev "$dev")
    [ -n "$ns" ] && args=(-n "$ns" "${args[@]}")
    ip "${args[@]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'
}

# Userspace generator with the sample's options; extra arguments pass through (--syn, ...).
function run_xdp_generator() {
    local bin
    bin=$(pktgen_bin)
    local args=(pktgen -i "$DEV" -s "$PKT_SIZE" -d "$DEST_IP" -m "$DST_MAC" -p "$DST_PORT" --src "$SRC"
        -t "$THREADS" -n "$COUNT" -b "$BURST" -f "${FLOWS:-1}" -D "$DURATION" "$@")
    [ "$CLONE_SKB" != 0 ] && info "-c (clone_skb) has no meaning here: frames are built once and replayed"
    [ "$DELAY" != 0 ] && warn "-w (delay) is not supported by the userspace generator; sending at full rate"
    info "running: $bin ${args[*]}"
    in_ns "$NETNS" "$bin" "${args[@]}"
}

## -- Kernel pktgen (/proc/net/pktgen), as in the kernel's samples --

function proc_cmd() {
    local result proc_file=$1
    local status=0
    shift
    local proc_ctrl=/proc/net/pktgen/$proc_file
    [ -e "$proc_ctrl" ] || err 3 "proc file:$proc_ctrl does not exists (dev added to thread?)"
    [ -n "$DEBUG" ] && echo "cmd: $* > $proc_ctrl"
    echo "$@" > "$proc_ctrl" || status=$?
    if [[ "$proc_file" != "pgctrl" ]]; then
        result=$(grep "Result: OK:" "$proc_ctrl") || true
        if [[ "$result" == "" ]]; then
            grep "Result:" "$proc_ctrl" >&2
        fi
    fi
    if (( status != 0 )); then
        err 5 "Write error($status) occurred cmd: \"$* > $proc_ctrl\""
    fi
}

function pg_thread() { local thread=$1; shift; proc_cmd "kpktgend_${thread}" "$@"; }
function pg_set() { local dev=$1; shift; proc_cmd "$dev" "$@"; }
function pg_ctrl() { proc_cmd pgctrl "$@"; }

# Sent packets of every device the kernel pktgen ran, summed.
function kernel_sent() {
    local total=0 f n
    for f in /proc/net/pktgen/"$DEV"@*; do
        [ -e "$f" ] || continue
        n=$(sed -n 's/.*pkts-sofar: \([0-9]*\).*/\1/p' "$f" | head -1)
        total=$(( total + ${n:-0} ))
    done
    echo "$total"
}

function elapsed() {
    python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$1" "$2"
}

# Splits "A-B" into MIN/MAX, a single value into MIN=MAX.
function split_range() {
    local r=$1
    if [[ "$r" == *-* ]]; then echo "${r%-*} ${r#*-}"; else echo "$r $r"; fi
}

# Kernel pktgen device settings shared by the many-flows samples: source addresses over $SRC,
# source ports over 1024-65535, destination ports over $DST_PORT, randomised.
function configure_many_flows() {
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
}

# Kernel pktgen: one device per thread ($DEV@N), configured by the caller's `configure_dev`.
function run_kernel_generator() {
    local configure=$1
    [ -z "$APPEND" ] && pg_ctrl "reset"
    local thread
    for ((thread = F_THREAD; thread < F_THREAD + THREADS; thread++)); do
        local dev=${DEV}@${thread}
        [ -z "$APPEND" ] && pg_thread "$thread" "rem_device_all"
        pg_thread "$thread" "add_device" "$dev"
        pg_set "$dev" "count $COUNT"
        pg_set "$dev" "clone_skb $CLONE_SKB"
        pg_set "$dev" "pkt_size $PKT_SIZE"
        pg_set "$dev" "delay $DELAY"
        pg_set "$dev" "burst $BURST"
        pg_set "$dev" "flag NO_TIMESTAMP"
        pg_set "$dev" "dst_mac $DST_MAC"
        "$configure" "$dev" "$thread"
    done
    local start end
    start=$(date +%s.%N)
    if [ "$COUNT" = 0 ]; then
        ( sleep "$DURATION"; pg_ctrl "stop" ) &
    fi
    pg_ctrl "start"
    end=$(date +%s.%N)
    local sent
    sent=$(kernel_sent)
    python3 -c "import sys; s, t = int(sys.argv[1]), float(sys.argv[2]); print(f'pktgen: {s} packets in {t:.2f} s: {s / t:.0f} pps')" "$sent" "$(elapsed "$start" "$end")"
}

# Runs the generator ($1: kernel or xdp; $2: the kernel configure function; the rest: options
# for the userspace generator), with the receiver's count around it when -r was given.
function run_and_report() {
    local backend=$1 configure=$2
    shift 2
    local before=0 out
    [ -n "$RX" ] && before=$(rx_packets "$RX")
    local start end
    start=$(date +%s.%N)
    if [ "$backend" = kernel ]; then
        out=$(run_kernel_generator "$configure")
    else
        out=$(run_xdp_generator "$@") || err 1 "the generator failed: $out"
    fi
    end=$(date +%s.%N)
    echo "$out"
    if [ -n "$RX" ]; then
        sleep 0.2
        local after secs
        after=$(rx_packets "$RX")
        secs=$(echo "$out" | sed -n 's/.* in \([0-9.]*\) s.*/\1/p')
        [ -z "$secs" ] && secs=$(elapsed "$start" "$end")
        python3 -c "import sys; n, t = int(sys.argv[1]), float(sys.argv[2]); print(f'received: {n} packets on {sys.argv[3]}: {n / t:.0f} pps')" \
            "$(( after - before ))" "$secs" "$RX"
    fi
}
