//! Write [sluice](https://github.com/sluice-rs/sluice) processing plugins in Rust.
//!
//! A plugin is a WebAssembly component of the `sluice:plugin/processor` world
//! (`wit/plugin.wit`). With this crate you implement one trait, [`Processor`], and
//! call one macro, [`export_processor!`]; you never see the generated bindings.
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
pub mod log;

pub use batch::{Batch, BatchParts, Event, Header, Iter, Output, Rejection};
pub use config::Config;

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

            impl $crate::__private::Guest for __SluiceGuest {
                fn configure(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::configure::<$processor>(&__SLUICE_INSTANCE, config)
                }

                fn process(
                    batch: $crate::__private::EventBatch,
                ) -> ::std::result::Result<$crate::__private::Output, ::std::string::String>
                {
                    $crate::__private::process::<$processor>(&__SLUICE_INSTANCE, batch)
                }
            }

    $crate::__private::export!(__SluiceGuest with_types_in $crate::__private::bindings);
        };
    };
}

/// The generated bindings and the glue the macro expands to. Not a public API.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private {
    #[allow(missing_docs, unsafe_code, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "processor",
            pub_export_macro: true,
            default_bindings_module: "sluice_plugin_sdk::__private::bindings",
        });
    }

    pub use bindings::Guest;
    pub use bindings::export;
    pub use bindings::sluice::plugin::types::{EventBatch, Output};

    use crate::{Batch, Config, Processor};
    use std::sync::Mutex;

    /// Builds a fresh processor from the host's config pairs.
    pub fn configure<P: Processor>(
        slot: &Mutex<Option<P>>,
        config: Vec<(String, String)>,
    ) -> Result<(), String> {
        let processor = P::configure(&Config::from_pairs(config))?;
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(processor);
        Ok(())
    }

    /// Runs one batch through the configured processor.
    pub fn process<P: Processor>(
        slot: &Mutex<Option<P>>,
        batch: EventBatch,
    ) -> Result<Output, String> {
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        let processor = guard
            .as_mut()
            .ok_or_else(|| "process called before configure".to_string())?;
        let batch = Batch::from_wit(batch);
        let mut out = crate::Output::with_capacity(batch.len(), batch.values_len());
        processor.process(&batch, &mut out)?;
        Ok(out.into_wit())
    }
}
