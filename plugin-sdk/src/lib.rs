//! Write [sluice](https://github.com/sluice-rs/sluice) processing plugins in Rust.
//!
//! A plugin is a WebAssembly component of the `sluice:plugin/processor` world
//! (`wit/plugin.wit`). With this crate you implement one trait, [`Processor`], and
//! call one macro, [`export_processor!`]; you never see the generated bindings.
//! A user-defined aggregate of event-time windows (the `aggregator` world) is
//! the same with [`Aggregator`] and [`export_aggregator!`]; a keyed processor
//! with per-key state and timers that the host keeps (the `keyed-processor`
//! world of `wit/0.2.0/plugin.wit`) with [`KeyedProcessor`] and
//! [`export_keyed_processor!`], unit-tested with [`KeyedHarness`] (see
//! [`keyed`]).
//!
//! ```
//! use sluice_plugin_sdk::{export_processor, Batch, Config, Output, Processor};
//!
//! /// Passes every event through unchanged.
//! struct Identity;
//!
//! impl Processor for Identity {
//!     fn configure(_config: &Config) -> Result<Self, String> {
//!         Ok(Identity)
//!     }
//!     fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
//!         for event in batch {
//!             out.forward(&event);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! export_processor!(Identity);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and drop the `.wasm`
//! into the daemon's plugins folder. Off wasm (`cargo test` on the host), the macro
//! expands to nothing and [`log`] prints to stderr, so a plugin's unit tests run
//! natively: build a [`Batch`] with [`Batch::push`], call your `process`, and look at
//! the [`Output`].
#![deny(missing_docs)]

mod batch;
mod config;
mod harness;
pub mod keyed;
pub mod log;
pub mod record;
pub mod scan;
pub mod time;

pub use batch::{Batch, BatchParts, Event, Header, Iter, Output, Rejection};
pub use config::Config;
pub use harness::KeyedHarness;
pub use keyed::{KeyedContext, KeyedProcessor, TimeDomain, Timer};
pub use record::{Edit, FieldValue, ObjectWriter, Record};

/// A processing function over micro-batches (map, filter, flat-map, or any mix).
///
/// The host creates one instance per partition worker, calls [`configure`] once,
/// then [`process`] once per micro-batch, never concurrently. An instance that
/// traps (a panic, an out-of-memory) or runs past its deadline is thrown away and a
/// new one configured, so state kept in `self` across batches is a cache, not a
/// source of truth.
///
/// [`configure`]: Processor::configure
/// [`process`]: Processor::process
pub trait Processor: Sized + Send + 'static {
    /// Builds the processor from the stage's `config` table.
    ///
    /// # Errors
    /// A human-readable reason; the stage then fails to start and the daemon says
    /// why.
    fn configure(config: &Config) -> Result<Self, String>;

    /// Processes one micro-batch: push the events to pass on into `out` (with
    /// [`Output::forward`], [`Output::push`] or [`Output::push_json`]) and refuse
    /// single events with [`Output::reject`]; the host sends those to the
    /// dead-letter sink with their original bytes.
    ///
    /// # Errors
    /// Fails the whole batch; the host applies the stage's `on_error` policy to it.
    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String>;
}

/// A user-defined aggregate function over event-time windows (a percentile, a
/// histogram, a top-k): the component's `aggregator` world.
///
/// The host owns every window and keeps each accumulator as the bytes
/// [`Aggregator::encode`] made; it hands them back to [`Aggregator::decode`]
/// when the window gets new events, joins another (sessions) or is emitted.
/// So a window's state survives a plugin swap (the new version decodes the old
/// version's bytes: keep the encoding compatible), an instance recycle and a
/// daemon restart (the bytes are in the checkpoints).
///
/// As for Flink's `AggregateFunction` and Spark's `Aggregator`:
/// [`merge`](Aggregator::merge) must be associative, with
/// [`create`](Aggregator::create) as its identity.
///
/// An event's [`value`](Event::value) is the JSON text of the aggregate's
/// `field` (events where it is null or absent are skipped), or the whole record
/// when the aggregate has no `field`.
pub trait Aggregator: Sized + Send + 'static {
    /// One window's accumulator.
    type State;

    /// Builds the aggregator from the aggregate's `config` table.
    ///
    /// # Errors
    /// A human-readable reason; the pipeline then fails to start.
    fn configure(config: &Config) -> Result<Self, String>;

    /// The accumulator of an empty window.
    fn create(&self) -> Self::State;

    /// Adds one event to a window's accumulator.
    ///
    /// # Errors
    /// The event cannot be aggregated: the host retries the batch's events one
    /// by one and sends those that fail alone to the dead-letter sink.
    fn add(&self, state: &mut Self::State, event: &Event<'_>) -> Result<(), String>;

    /// Folds `other` into `state` (two session windows that a record joins).
    fn merge(&self, state: &mut Self::State, other: Self::State);

    /// The window's result, as JSON text: the value of the aggregate's output
    /// field.
    ///
    /// # Errors
    /// The window gets `null` for this aggregate, and the daemon logs why.
    fn finish(&self, state: &Self::State) -> Result<String, String>;

    /// The accumulator as the bytes the host keeps.
    fn encode(&self, state: &Self::State) -> Vec<u8>;

    /// An accumulator back from its bytes (perhaps made by an older version).
    ///
    /// # Errors
    /// The bytes are not an accumulator this version reads.
    fn decode(&self, bytes: &[u8]) -> Result<Self::State, String>;
}

/// Exports an [`Aggregator`] implementation as the component's `aggregator`
/// world. Call it once, at the crate root of a `cdylib` crate; off wasm32 it
/// expands to nothing.
#[macro_export]
macro_rules! export_aggregator {
    ($aggregator:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static __SLUICE_AGGREGATOR: ::std::sync::Mutex<::std::option::Option<$aggregator>> =
                ::std::sync::Mutex::new(::std::option::Option::None);

            struct __SluiceGuest;

            impl $crate::__private::AggregatorGuest for __SluiceGuest {
                fn configure(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::configure_aggregator::<$aggregator>(&__SLUICE_AGGREGATOR, config)
                }
                fn create() -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::__private::with_aggregator::<$aggregator, _>(&__SLUICE_AGGREGATOR, |a| {
                        ::std::result::Result::Ok(a.encode(&a.create()))
                    })
                }
                fn accumulate(
                    states: ::std::vec::Vec<::std::vec::Vec<u8>>,
                    batch: $crate::__private::EventBatch,
                    groups: ::std::vec::Vec<u32>,
                ) -> ::std::result::Result<::std::vec::Vec<::std::vec::Vec<u8>>, ::std::string::String> {
                    $crate::__private::accumulate::<$aggregator>(&__SLUICE_AGGREGATOR, states, batch, groups)
                }
                fn merge(
                    a: ::std::vec::Vec<u8>,
                    b: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::__private::with_aggregator::<$aggregator, _>(&__SLUICE_AGGREGATOR, |agg| {
                        let mut state = agg.decode(&a)?;
                        agg.merge(&mut state, agg.decode(&b)?);
                        ::std::result::Result::Ok(agg.encode(&state))
                    })
                }
                fn finish(
                    states: ::std::vec::Vec<::std::vec::Vec<u8>>,
                ) -> ::std::result::Result<::std::vec::Vec<::std::string::String>, ::std::string::String> {
                    $crate::__private::with_aggregator::<$aggregator, _>(&__SLUICE_AGGREGATOR, |agg| {
                        states
                            .iter()
                            .map(|s| agg.finish(&agg.decode(s)?))
                            .collect()
                    })
                }
            }

    $crate::__private::export_aggregator_world!(__SluiceGuest with_types_in $crate::__private::aggregator_bindings);
        };
    };
}

/// Exports a [`Processor`] implementation as the component's `processor` world.
///
/// Call it once, at the crate root of a `cdylib` crate. On targets other than
/// wasm32 it expands to nothing, so the same crate builds and tests natively.
#[macro_export]
macro_rules! export_processor {
    ($processor:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static __SLUICE_INSTANCE: ::std::sync::Mutex<::std::option::Option<$processor>> =
                ::std::sync::Mutex::new(::std::option::Option::None);

            struct __SluiceGuest;

            impl $crate::__private::ProcessorGuest for __SluiceGuest {
                fn configure(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::configure::<$processor>(&__SLUICE_INSTANCE, config)
                }

                fn process(
                    batch: $crate::__private::ProcessorBatch,
                ) -> ::std::result::Result<$crate::__private::ProcessorOutput, ::std::string::String>
                {
                    $crate::__private::process::<$processor>(&__SLUICE_INSTANCE, batch)
                }
            }

    $crate::__private::export_processor_world!(__SluiceGuest with_types_in $crate::__private::processor_bindings);
        };
    };
}

/// Exports a [`KeyedProcessor`] implementation as the component's
/// `keyed-processor` world (`wit/0.2.0/plugin.wit`).
///
/// Call it once, at the crate root of a `cdylib` crate. On targets other than
/// wasm32 it expands to nothing, so the same crate builds and tests natively
/// (with [`KeyedHarness`]).
#[macro_export]
macro_rules! export_keyed_processor {
    ($processor:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static __SLUICE_KEYED: ::std::sync::Mutex<::std::option::Option<$processor>> =
                ::std::sync::Mutex::new(::std::option::Option::None);

            struct __SluiceGuest;

            impl $crate::__private::KeyedGuest for __SluiceGuest {
                fn configure(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::configure_keyed::<$processor>(&__SLUICE_KEYED, config)
                }

                fn process_keyed(
                    input: $crate::__private::KeyedInput,
                ) -> ::std::result::Result<$crate::__private::KeyedOutput, ::std::string::String>
                {
                    $crate::__private::process_keyed::<$processor>(&__SLUICE_KEYED, input)
                }
            }

    $crate::__private::export_keyed_world!(__SluiceGuest with_types_in $crate::__private::keyed_bindings);
        };
    };
}

/// The generated bindings and the glue the macro expands to. Not a public API.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private {
    /// Package 0.1.0's `aggregator` world (`wit/plugin.wit`), with its own
    /// `types` and `host`. Processors are exported through
    /// [`processor_bindings`] (0.3.0); 0.1.0's `processor` world is no longer
    /// built by this SDK (the host still runs it).
    #[allow(missing_docs, unsafe_code, clippy::all)]
    pub mod aggregator_bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "aggregator",
            pub_export_macro: true,
            export_macro_name: "export_aggregator_world",
            default_bindings_module: "sluice_plugin_sdk::__private::aggregator_bindings",
        });
    }

    /// The `processor` world of package 0.3.0 (`wit/0.3.0/plugin.wit`): the
    /// batches carry the members the host's decoder found.
    #[allow(missing_docs, unsafe_code, clippy::all)]
    pub mod processor_bindings {
        wit_bindgen::generate!({
            path: "../wit/0.3.0",
            world: "processor",
            pub_export_macro: true,
            export_macro_name: "export_processor_world",
            default_bindings_module: "sluice_plugin_sdk::__private::processor_bindings",
        });
    }

    /// The `keyed-processor` world of package 0.2.0: its own `types` and
    /// `host` (a package version is self-contained).
    #[allow(missing_docs, unsafe_code, clippy::all)]
    pub mod keyed_bindings {
        wit_bindgen::generate!({
            path: "../wit/0.2.0",
            world: "keyed-processor",
            pub_export_macro: true,
            export_macro_name: "export_keyed_world",
            default_bindings_module: "sluice_plugin_sdk::__private::keyed_bindings",
        });
    }

    pub use aggregator_bindings::Guest as AggregatorGuest;
    pub use aggregator_bindings::export_aggregator_world;
    pub use aggregator_bindings::sluice::plugin::types::EventBatch;
    pub use keyed_bindings::Guest as KeyedGuest;
    pub use keyed_bindings::export_keyed_world;
    pub use keyed_bindings::sluice::plugin::types::{KeyedInput, KeyedOutput};
    pub use processor_bindings::Guest as ProcessorGuest;
    pub use processor_bindings::export_processor_world;
    pub use processor_bindings::sluice::plugin::types::{
        EventBatch as ProcessorBatch, Output as ProcessorOutput,
    };

    use crate::log::Level;
    use crate::{Aggregator, Batch, Config, KeyedProcessor, Processor};
    use std::sync::Mutex;

    /// `fn $name(level, message)`: `log` through the `host` import of the
    /// bindings module `$bindings` (one per WIT package version: the same
    /// function over its own generated `Level`).
    macro_rules! log_sink {
        ($(#[$doc:meta])* $name:ident, $bindings:ident) => {
            $(#[$doc])*
            fn $name(level: Level, message: &str) {
                use $bindings::sluice::plugin::host::{self, Level as L};
                let level = match level {
                    Level::Trace => L::Trace,
                    Level::Debug => L::Debug,
                    Level::Info => L::Info,
                    Level::Warn => L::Warn,
                    Level::Error => L::Error,
                };
                host::log(level, message);
            }
        };
    }
    log_sink!(
        /// `log` through package 0.1.0's `host` import (aggregators).
        log_v1,
        aggregator_bindings
    );
    log_sink!(
        /// `log` through package 0.2.0's `host` import (keyed processors).
        log_v2,
        keyed_bindings
    );
    log_sink!(
        /// `log` through package 0.3.0's `host` import (processors).
        log_v3,
        processor_bindings
    );

    /// Builds a fresh keyed processor from the host's config pairs.
    pub fn configure_keyed<P: KeyedProcessor>(
        slot: &Mutex<Option<P>>,
        config: Vec<(String, String)>,
    ) -> Result<(), String> {
        crate::log::set_sink(log_v2);
        let processor = P::configure(&Config::from_pairs(config))?;
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(processor);
        Ok(())
    }

    /// Runs one `process-keyed` call through the configured keyed processor.
    pub fn process_keyed<P: KeyedProcessor>(
        slot: &Mutex<Option<P>>,
        input: KeyedInput,
    ) -> Result<KeyedOutput, String> {
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        let processor = guard
            .as_mut()
            .ok_or_else(|| "process-keyed called before configure".to_string())?;
        let call = crate::keyed::KeyedCall::from_wit(input);
        crate::keyed::run(processor, call, &crate::keyed::wit::HostTables)
            .map(crate::keyed::KeyedReturn::into_wit)
    }

    /// Builds a fresh aggregator from the host's config pairs.
    pub fn configure_aggregator<A: Aggregator>(
        slot: &Mutex<Option<A>>,
        config: Vec<(String, String)>,
    ) -> Result<(), String> {
        crate::log::set_sink(log_v1);
        let aggregator = A::configure(&Config::from_pairs(config))?;
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(aggregator);
        Ok(())
    }

    /// Runs `f` on the configured aggregator.
    pub fn with_aggregator<A: Aggregator, T>(
        slot: &Mutex<Option<A>>,
        f: impl FnOnce(&A) -> Result<T, String>,
    ) -> Result<T, String> {
        let guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        let aggregator = guard
            .as_ref()
            .ok_or_else(|| "called before configure".to_string())?;
        f(aggregator)
    }

    /// Decodes the states, adds event `i` to `states[groups[i]]`, encodes them.
    pub fn accumulate<A: Aggregator>(
        slot: &Mutex<Option<A>>,
        states: Vec<Vec<u8>>,
        batch: EventBatch,
        groups: Vec<u32>,
    ) -> Result<Vec<Vec<u8>>, String> {
        with_aggregator(slot, |agg| {
            let mut decoded = states
                .iter()
                .map(|s| agg.decode(s))
                .collect::<Result<Vec<_>, _>>()?;
            let batch = Batch::from_wit(batch);
            for (event, group) in batch.iter().zip(&groups) {
                let state = decoded
                    .get_mut(*group as usize)
                    .ok_or_else(|| format!("group {group} of {} states", states.len()))?;
                agg.add(state, &event)?;
            }
            Ok(decoded.iter().map(|s| agg.encode(s)).collect())
        })
    }

    /// Builds a fresh processor from the host's config pairs.
    pub fn configure<P: Processor>(
        slot: &Mutex<Option<P>>,
        config: Vec<(String, String)>,
    ) -> Result<(), String> {
        crate::log::set_sink(log_v3);
        let processor = P::configure(&Config::from_pairs(config))?;
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(processor);
        Ok(())
    }

    /// Runs one batch through the configured processor.
    pub fn process<P: Processor>(
        slot: &Mutex<Option<P>>,
        batch: ProcessorBatch,
    ) -> Result<ProcessorOutput, String> {
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        let processor = guard
            .as_mut()
            .ok_or_else(|| "process called before configure".to_string())?;
        let batch = Batch::from_wit_indexed(batch);
        let mut out = crate::Output::with_capacity(batch.len(), batch.values_len());
        processor.process(&batch, &mut out)?;
        Ok(out.into_wit())
    }
}
