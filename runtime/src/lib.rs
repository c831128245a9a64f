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
//! - [`source`] reads lines, [`decode`] extracts key and event time, [`router`]
//!   picks the partition;
//! - [`worker`] runs a partition: [`batcher`] cuts micro-batches, [`processor`]
//!   runs the chain of [`plugin`] instances (bisecting failed batches);
//! - [`reload`] swaps a changed plugin file in at batch boundaries;
//!   [`compile_cache`] keeps compiled plugins on disk;
//! - [`sink`] writes output, [`dead_letter`] what failed;
//! - [`pipeline`] wires one pipeline's threads; [`daemon`] runs them all.

pub mod admin;
pub mod aggregate;
pub mod batcher;
pub mod checkpoint;
pub mod compile_cache;
pub mod config;
pub mod daemon;
pub mod dead_letter;
pub mod decode;
pub mod guest_output;
pub mod inspect;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod plugin_new;
pub mod plugin_run;
pub mod processor;
pub mod reload;
pub mod router;
pub mod sink;
pub mod source;
pub mod state_lock;
pub mod systemd;
pub mod telemetry;
pub mod top;
pub mod topology;
pub mod udaf;
pub mod watermark;
pub mod window;
pub mod window_operator;
pub mod worker;
