//! Devices: AF_XDP sockets on the appliance's interfaces.
pub mod worker;
pub mod xsk;
