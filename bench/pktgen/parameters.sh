# Common parameter parsing for the pktgen samples, with the options of the kernel's
# samples/pktgen/parameters.sh, plus a few for the userspace backend and the receiver.
# shellcheck shell=bash

function usage() {
    echo ""
    echo "Usage: $0 [-vx] -i ethX"
    echo "  -i : (\$DEV)       output interface/device (required)"
    echo "  -s : (\$PKT_SIZE)  packet size without the 4-byte CRC the NIC adds (default 60: 64 on the wire)"
    echo "  -d : (\$DEST_IP)   destination IP; a CIDR (e.g. 198.18.0.0/24) spreads the flows over it"
    echo "  -m : (\$DST_MAC)   destination MAC-addr"
    echo "  -p : (\$DST_PORT)  destination PORT; a range (e.g. 433-444) is also allowed"
    echo "  -t : (\$THREADS)   threads to start (one TX queue each)"
    echo "  -f : (\$F_THREAD)  index of first thread (zero indexed CPU number)"
    echo "  -c : (\$SKB_CLONE) SKB clones send before alloc new SKB (kernel backend)"
    echo "  -n : (\$COUNT)     num messages to send per thread, 0 means indefinitely (or -D seconds)"
    echo "  -b : (\$BURST)     HW level bursting of SKBs (descriptors per wakeup in userspace)"
    echo "  -v : (\$VERBOSE)   verbose"
    echo "  -x : (\$DEBUG)     debug"
    echo "  -6 : (\$IP6)       IPv6"
    echo "  -w : (\$DELAY)     Tx Delay value (ns, kernel backend)"
    echo "  -a : (\$APPEND)    Script will not reset generator's state, but will append its config"
    echo " tls-inspect additions:"
    echo "  -B : (\$BACKEND)   kernel | xdp | auto (default: kernel where /proc/net/pktgen exists)"
    echo "  -D : (\$DURATION)  seconds to send when COUNT is 0 (default 5)"
    echo "  -F : (\$FLOWS)     distinct flows the userspace generator cycles through"
    echo "  -S : (\$SRC)       source IP or CIDR"
    echo "  -N : (\$NETNS)     network namespace the device is in"
    echo "  -r : (\$RX)        [NETNS:]DEV whose received packets are counted (the far side)"
    echo ""
}

##  --- Parse command line arguments / parameters ---
## echo "Commandline options:"
while getopts "s:i:d:m:p:f:t:c:n:b:w:B:D:F:S:N:r:vxh6a" option; do
    case $option in
        i) export DEV=$OPTARG ;;
        s) export PKT_SIZE=$OPTARG ;;
        d) export DEST_IP=$OPTARG ;;
        m) export DST_MAC=$OPTARG ;;
        p) export DST_PORT=$OPTARG ;;
        f) export F_THREAD=$OPTARG ;;
        t) export THREADS=$OPTARG ;;
        c) export CLONE_SKB=$OPTARG ;;
        n) export COUNT=$OPTARG ;;
        b) export BURST=$OPTARG ;;
        w) export DELAY=$OPTARG ;;
        v) export VERBOSE=yes ;;
        x) export DEBUG=yes ;;
        6) export IP6=6 ;;
        a) export APPEND=yes ;;
        B) export BACKEND=$OPTARG ;;
        D) export DURATION=$OPTARG ;;
        F) export FLOWS=$OPTARG ;;
        S) export SRC=$OPTARG ;;
        N) export NETNS=$OPTARG ;;
        r) export RX=$OPTARG ;;
        h | ?) usage; exit 2 ;;
    esac
done
shift $(( OPTIND - 1 ))

if [ -z "$DEV" ]; then
    usage
    err 2 "Please specify output device (-i)"
fi
# NIC adds 4 bytes CRC
[ -z "$PKT_SIZE" ] && export PKT_SIZE=60
[ -z "$F_THREAD" ] && export F_THREAD=0
[ -z "$THREADS" ] && export THREADS=1
[ -z "$COUNT" ] && export COUNT=0
[ -z "$BURST" ] && export BURST=64
[ -z "$CLONE_SKB" ] && export CLONE_SKB=0
[ -z "$DELAY" ] && export DELAY=0
[ -z "$DURATION" ] && export DURATION=5
[ -z "$DST_MAC" ] && export DST_MAC="02:00:00:00:00:02"
# A sample may set DEFAULT_SRC and DEFAULT_DST_PORT before sourcing this file.
[ -z "$DST_PORT" ] && export DST_PORT=${DEFAULT_DST_PORT:-9}
if [ -z "$DEST_IP" ]; then
    if [ -z "$IP6" ]; then export DEST_IP=198.18.0.2; else export DEST_IP=2001:2::2; fi
fi
if [ -z "$SRC" ]; then
    if [ -z "$IP6" ]; then export SRC=${DEFAULT_SRC:-198.18.0.1}; else export SRC=2001:2::1; fi
fi
