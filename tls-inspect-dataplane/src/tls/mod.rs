//! TLS: reading the ClientHello, the operator's CA, forged certificates, and the interceptor
//! that terminates the client's TLS and re-originates it to the server. Sans-IO like the relay
//! it plugs into: TLS bytes in, TLS bytes out; `tls` never names smoltcp types.
pub mod ca;
pub mod clienthello;
pub mod forge;
pub mod grade;
pub mod intercept;
pub mod keylog;
pub mod policy;
pub mod sessions;
