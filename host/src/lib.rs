//! # infernet-host
//!
//! The Infernet node as a library: a wasmtime plugin host ([`runtime`],
//! [`worlds`]) whose backend plugins run models through host tensor kernels
//! ([`kernels`]) over host-loaded weights ([`models`]), configured by one
//! TOML file ([`config`]). The `infernet` binary is a thin CLI over this.
//!
//! Data flows one way: `cli -> node -> worlds -> runtime -> kernels`.

pub mod config;
pub mod jobs;
pub mod kernels;
pub mod models;
pub mod node;
pub mod p2p;
pub mod payments;
pub mod runtime;
pub mod sdk;
pub mod store;
pub mod worlds;
