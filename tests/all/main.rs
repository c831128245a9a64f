//! sluice's integration tests: one binary (as wasmtime's `tests/all`), real
//! `sluice` daemon processes, real plugin components built by `runtime/build.rs`,
//! real files.

mod support;

mod admin;
mod admin_guard;
mod aggregator;
mod checkpoints;
mod config_errors;
mod config_reload;
mod console;
mod dead_letter;
mod directory;
mod docs;
mod failures;
mod flights;
mod formats;
mod generator;
mod http;
mod http_sink;
mod kafka;
mod kafka_keyed;
mod keyed;
mod keyed_guest;
mod languages;
mod logging;
mod otlp;
mod packaging;
mod parquet;
mod partitions;
mod plugin_check;
mod plugin_run_pipes;
mod postgres;
mod prometheus;
mod reload;
mod sandbox;
mod sdk;
mod service;
mod shutdown;
mod sink_faults;
mod skips;
mod sources;
mod state;
mod state_lock;
mod stock;
mod systemd;
mod tap;
mod tcp;
mod top;
mod windows;
