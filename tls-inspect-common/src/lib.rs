//! Types shared by the XDP program (`tls-inspect-ebpf`) and userspace (`tls-inspect-dataplane`),
//! and the pure helpers both sides run: the frame parser and the scope classifier.
//!
//! Everything here is `no_std`, allocation-free and integer-only, so that it compiles for the
//! BPF target and is unit-tested on the host with byte-array fixtures.
#![no_std]
#![deny(unsafe_code)]

pub mod classify;
pub mod maps;
pub mod parse;

pub use classify::{first_common_bit, ScopeBitmap, BITMAP_WORDS, MAX_SCOPES};
pub use maps::*;
pub use parse::{parse_frame, Frame, L4, Packet, ParseError, TcpSegment};
