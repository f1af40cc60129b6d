#![no_std]
// The XDP program is the `tls-inspect-xdp` binary target (src/main.rs); this empty library lets
// host tooling resolve the package.
