//! # infernet-host
//!
//! The Infernet node as a library: a wasmtime plugin host ([`runtime`],
//! [`worlds`]) whose backend plugins run models through host tensor kernels
//! ([`kernels`]) over host-loaded weights ([`models`]), configured by one
//! TOML file ([`config`]). The `infernet` binary is a thin CLI over this.
//!
//! Data flows one way (DESIGN §1): `cli -> api -> sdk -> jobs -> (node | payments)
//! -> config -> worlds -> runtime -> (kernels | models | store | p2p)`; a
//! module names only modules below it, which a test checks on the source
//! (`layering.rs`).

pub mod api;
pub mod config;
pub mod jobs;
pub mod kernels;
pub mod metrics;
pub mod models;
pub mod node;
pub mod p2p;
pub mod payments;
pub mod private;
pub mod registry;
pub mod runtime;
pub mod sdk;
pub mod store;
pub mod verify;
pub mod worlds;

#[cfg(test)]
mod layering;
