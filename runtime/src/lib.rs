//! sluice: a stream-processing daemon that runs its processing functions as
//! sandboxed WebAssembly components.
//!
//! The data flow, one module per stage:
//!
//! ```text
//! source ──► router ──► bounded channel ──► worker (one per partition)
//!                                            batcher → processor chain (Wasm) → sinks
//!                                                             └─► dead_letter
//! ```
//!
//! - [`config`]: the TOML file; [`topology`]: config → checked, built specs;
//! - [`source`]: one file per kind behind [`source::Source`]; [`decode`]
//!   extracts key and event time; [`source::router`] picks the partition;
//! - [`pipeline`]: a pipeline's threads; [`pipeline::worker`] runs a
//!   partition: [`pipeline::batcher`] cuts micro-batches,
//!   [`pipeline::processor`] runs the chain of [`wasm::plugin`] instances
//!   (bisecting failed batches);
//! - [`window`]: event-time windows ([`window::operator`]) and [`aggregate`]s;
//! - [`sink`]: one file per kind behind [`sink::Sink`], and the dead-letter sink;
//! - [`checkpoint`]: checkpoints, local and in a Kafka changelog;
//! - [`wasm`]: the Wasm host, compile cache and hot reload;
//! - [`obs`]: admin API, metrics, telemetry, systemd;
//! - [`daemon`] runs every pipeline of a topology.
//!
//! Small shared types live in leaf modules ([`stats`], [`time`], [`kafka`]),
//! so that no module cycle remains (`scripts/check_module_cycles.py`).

pub mod aggregate;
pub mod checkpoint;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod format;
pub mod http_client;
pub mod http_serve;
pub mod kafka;
pub mod obs;
pub mod pipeline;
pub mod sink;
pub mod source;
pub mod state_lock;
pub mod stats;
pub mod table;
pub mod time;
pub mod topology;
pub mod wasm;
pub mod window;

#[cfg(test)]
mod testkit;
