//! Devices: AF_XDP sockets on the appliance's interfaces.
pub mod xsk;
