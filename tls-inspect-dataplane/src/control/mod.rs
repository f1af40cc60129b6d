//! Control plane: configuration, scopes, the pinned maps, the loader.
pub mod benchprog;
pub mod config;
pub mod intel;
pub mod loader;
pub mod maps;
pub mod rules;
pub mod scopes;
pub mod socket;
pub mod state;
pub mod supervisor;
