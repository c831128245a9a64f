//! The WebAssembly host: compiling and caching components ([`compile_cache`]),
//! instances with their limits and the guest's output ([`plugin`],
//! [`indexed`] for package 0.3.0's processors,
//! [`guest_output`]), Wasm aggregators ([`udaf`]), hot reload ([`reload`]),
//! the `sluice plugin check | new | run` tools ([`inspect`],
//! [`plugin_new`], [`plugin_run`]), and where the stock plugins are found
//! ([`stock`]).

pub mod udaf;

pub mod reload;

pub mod plugin_run;

pub mod plugin_new;

pub mod plugin;

pub mod keyed;

pub mod indexed;

pub mod inspect;

pub mod guest_output;

pub mod compile_cache;

pub mod stock;
