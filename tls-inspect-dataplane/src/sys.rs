//! The operating system below everything else: signals, privileges, interfaces, ethtool, CPU
//! pinning, file locks and `poll`. Each call is wrapped in a safe function here, so that the
//! rest of the crate needs no `unsafe` (the other exceptions, each named at its module: the
//! AF_XDP rings in `phy::xsk`, the leg buffer pool in `net::buffers`, the mmapped port tables
//! in `control::maps`, Hyperscan's stream close in `inspect::ips`).
#![allow(unsafe_code, reason = "the libc calls of the appliance, each with its SAFETY line")]

use std::ffi::CString;
use std::fs;
use std::os::fd::AsRawFd;

use anyhow::{anyhow, bail, Context, Result};

/// Errors unless the process runs as root (BPF programs and maps need it).
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("this command loads and changes BPF programs and maps: run it as root");
    }
    Ok(())
}

/// Mounts bpffs at `target` if nothing is mounted there yet.
pub fn ensure_bpffs(target: &str) -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(target) && l.contains(" bpf ")) {
        return Ok(());
    }
    fs::create_dir_all(target)?;
    let c = |s: &str| CString::new(s).map_err(|e| anyhow!("{e}"));
    let (src, target_c, fstype) = (c("bpf")?, c(target)?, c("bpf")?);
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), target_c.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("mounting bpffs at {target}"));
    }
    Ok(())
}

/// The index of interface `name`; `field` names the setting in the error.
pub fn ifindex(field: &str, name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| anyhow!("{field}: '{name}': not an interface name"))?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("{field}: '{name}': no such interface in this network namespace");
    }
    Ok(index)
}

/// What `run` waits for: SIGINT, SIGTERM (stop) and SIGHUP (reopen the log files), blocked for
/// the calling thread (and the threads it starts later), to be taken with [`Signals::wait`].
pub struct Signals(libc::sigset_t);

/// A signal [`Signals`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT or SIGTERM (its number).
    Stop(i32),
    /// SIGHUP: logrotate moved the log files away.
    Reopen,
}

impl Signals {
    pub fn block() -> Result<Self> {
        // SAFETY: plain signal-set manipulation on a zeroed sigset_t.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                bail!("blocking signals failed");
            }
            Ok(Self(set))
        }
    }

    /// Waits up to `timeout` for one of the blocked signals; `None` when none came.
    pub fn wait(&self, timeout: std::time::Duration) -> Result<Option<Signal>> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: the set was initialised by `block`; a null siginfo is allowed.
        let sig = unsafe { libc::sigtimedwait(&self.0, std::ptr::null_mut(), &ts) };
        if sig < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(err).context("sigtimedwait"),
            };
        }
        Ok(Some(if sig == libc::SIGHUP { Signal::Reopen } else { Signal::Stop(sig) }))
    }

    /// Waits for SIGINT or SIGTERM (a SIGHUP is taken and ignored); returns its number.
    pub fn wait_stop(&self) -> Result<i32> {
        loop {
            if let Some(Signal::Stop(sig)) = self.wait(std::time::Duration::from_secs(3600))? {
                return Ok(sig);
            }
        }
    }
}

/// An exclusive `flock` on `file`: `Ok(false)` when `wait` is off and another holder has it.
pub fn flock_exclusive(file: &fs::File, wait: bool) -> std::io::Result<bool> {
    let op = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    // SAFETY: flock on an fd the caller owns for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(false);
        }
        return Err(err);
    }
    Ok(true)
}

/// Sleeps until one of `fds` is readable or `timeout_ms` has passed.
pub fn wait_readable(fds: &[i32], timeout_ms: i32) {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: a valid array of pollfd of the given length.
    unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Reads and removes one element of a BPF hash map in one call
/// (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`, which aya does not offer for hash maps): `Ok(None)` if the
/// key has none; an error if the kernel refuses the call (hash maps take it from Linux 5.14).
pub fn bpf_take<K: aya::Pod, V: aya::Pod>(map: &aya::maps::HashMap<aya::maps::MapData, K, V>, key: &K) -> std::io::Result<Option<V>> {
    use aya::maps::IterableMap;
    /// The element member of `union bpf_attr`.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
    let mut value = std::mem::MaybeUninit::<V>::zeroed();
    let mut attr = ElemAttr {
        map_fd: std::os::fd::AsFd::as_fd(map.map().fd()).as_raw_fd() as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: a valid bpf_attr for the command, whose key and value pointers outlive the call;
    // the kernel reads the map's key size from `key` and writes its value size into `value`,
    // which are K's and V's (aya checked both sizes when the typed map was made).
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr as *mut ElemAttr, std::mem::size_of::<ElemAttr>())
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) { Ok(None) } else { Err(e) };
    }
    // SAFETY: the kernel filled the value; V is Pod (any bit pattern is valid).
    Ok(Some(unsafe { value.assume_init() }))
}

/// Receive queues of an interface (ETHTOOL_GCHANNELS), 1 when the driver does not say.
pub fn queue_count(iface: &str) -> u32 {
    #[repr(C)]
    struct Channels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut Channels,
        _pad: [u8; 16],
    }
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut ch = Channels {
        cmd: ETHTOOL_GCHANNELS,
        max_rx: 0,
        max_tx: 0,
        max_other: 0,
        max_combined: 0,
        rx_count: 0,
        tx_count: 0,
        other_count: 0,
        combined_count: 0,
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &mut ch,
        _pad: [0; 16],
    };
    let n = iface.len().min(15);
    req.name[..n].copy_from_slice(&iface.as_bytes()[..n]);
    // SAFETY: an ioctl on a socket we own, with a properly sized and initialised request.
    let ok = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return 1;
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL, &mut req);
        libc::close(fd);
        rc == 0
    };
    if !ok {
        return 1;
    }
    ch.rx_count.max(ch.combined_count).max(1)
}
