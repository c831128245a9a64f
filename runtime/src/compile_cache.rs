//! The compile cache: compiled components on disk, so a restart or a hot swap
//! does not pay Cranelift again (seconds for a Python or JavaScript component,
//! milliseconds to load it precompiled).
//!
//! An entry lives at `STATE_DIR/compiled/<content>-<engine>.cwasm`, where
//! `<content>` is the SHA-256 of the `.wasm` bytes and `<engine>` a hash of
//! everything wasmtime says makes compiled code compatible
//! ([`wasmtime::Engine::precompile_compatibility_hash`]: target, compiler
//! flags, tunables, enabled features and the wasmtime version).
//!
//! Loading compiled code is `unsafe` in wasmtime (the bytes become executable
//! code, trusted as they are), so an entry is never trusted as found. Each one is
//! framed by this daemon:
//!
//! ```text
//! MAGIC (16 bytes) | SHA-256 of the .wasm (32) | SHA-256 of the payload (32) | payload
//! ```
//!
//! and is used only when the frame is intact, names the expected `.wasm`, and the
//! payload hashes to what the frame says. A truncated, corrupt or foreign entry
//! (or one wasmtime refuses) is logged, ignored and rewritten from a fresh
//! compilation. Entries are written to a temporary file and renamed into place,
//! so a reader never sees half an entry.

use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of every entry: the format and its version.
const MAGIC: &[u8; 16] = b"sluice-cwasm-v1\n";
const HEADER: usize = MAGIC.len() + 32 + 32;

/// Where compiled components are kept, for one engine.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from a valid cache entry.
    Cached,
    /// Compiled now (and, when the cache is writable, stored).
    Compiled,
}

impl CompileCache {
    /// A cache in `dir/compiled` (created on first write) for `engine`.
    pub fn new(dir: &Path, engine: &Engine) -> Self {
        // SipHash with fixed keys: stable for a given build, which is all a key
        // needs (a different build that hashes differently just misses).
        #[allow(deprecated)]
        let mut hasher = std::hash::SipHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache {
            dir: dir.join("compiled"),
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    /// The entry file of a component whose bytes hash to `content`.
    pub fn entry_path(&self, content: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hex(content), self.engine_key))
    }

    /// The component for `wasm` (whose SHA-256 is `content`): from the cache when
    /// a valid entry exists, else compiled and stored.
    ///
    /// # Errors
    /// `wasm` does not compile. A cache that cannot be read or written is not an
    /// error: it is logged and the component compiled.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        content: &[u8; 32],
    ) -> wasmtime::Result<(Component, Origin)> {
        let path = self.entry_path(content);
        match self.load(engine, &path, content) {
            Ok(Some(component)) => return Ok((component, Origin::Cached)),
            Ok(None) => {}
            Err(reason) => tracing::warn!(
                entry = %path.display(),
                "compile cache entry ignored and rebuilt: {reason}"
            ),
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.store(&component, &path, content) {
            tracing::warn!(entry = %path.display(), "cannot write compile cache entry: {e:#}");
        }
        Ok((component, Origin::Compiled))
    }

    /// A valid entry's component; `Ok(None)` when there is no entry; `Err` with
    /// the reason when there is one that cannot be trusted or used.
    fn load(
        &self,
        engine: &Engine,
        path: &Path,
        content: &[u8; 32],
    ) -> Result<Option<Component>, String> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not an entry written by sluice (bad header)".into());
        }
        let (named, rest) = bytes[MAGIC.len()..].split_at(32);
        let (sum, payload) = rest.split_at(32);
        if named != content {
            return Err("the entry is for another .wasm".into());
        }
        if Sha256::digest(payload).as_slice() != sum {
            return Err("the entry is corrupt (checksum mismatch)".into());
        }
        // SAFETY: wasmtime requires that the bytes were produced by
        // `Component::serialize` of a compatible engine and not altered since.
        // They were written by `store` below (this daemon, same engine key), and
        // the frame's SHA-256 just showed them unaltered; wasmtime itself checks
        // its version and settings again and refuses a mismatch.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, payload) }
            .map_err(|e| format!("wasmtime refuses it: {e:#}"))?;
        Ok(Some(component))
    }

    fn store(&self, component: &Component, path: &Path, content: &[u8; 32]) -> anyhow::Result<()> {
        let payload = component.serialize()?;
        std::fs::create_dir_all(&self.dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(MAGIC)?;
        tmp.write_all(content)?;
        tmp.write_all(&Sha256::digest(&payload))?;
        tmp.write_all(&payload)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path)?;
        Ok(())
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: no imports, no exports.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn setup() -> (tempfile::TempDir, Engine, CompileCache, [u8; 32]) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).unwrap();
        let cache = CompileCache::new(dir.path(), &engine);
        let content: [u8; 32] = Sha256::digest(EMPTY_COMPONENT).into();
        (dir, engine, cache, content)
    }

    #[test]
    fn second_load_comes_from_the_cache() {
        let (_dir, engine, cache, content) = setup();
        let (_, first) = cache
            .get_or_compile(&engine, EMPTY_COMPONENT, &content)
            .unwrap();
        let (_, second) = cache
            .get_or_compile(&engine, EMPTY_COMPONENT, &content)
            .unwrap();
        assert_eq!((first, second), (Origin::Compiled, Origin::Cached));
    }

    #[test]
    fn corrupt_truncated_and_foreign_entries_are_rebuilt() {
        let (_dir, engine, cache, content) = setup();
        cache
            .get_or_compile(&engine, EMPTY_COMPONENT, &content)
            .unwrap();
        let path = cache.entry_path(&content);
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        let mut other_wasm = good.clone();
        other_wasm[MAGIC.len()] ^= 0x01;
        let unframed = good[HEADER..].to_vec(); // a bare wasmtime .cwasm
        for bad in [
            flipped,
            good[..good.len() / 2].to_vec(),
            other_wasm,
            unframed,
        ] {
            std::fs::write(&path, &bad).unwrap();
            let (_, origin) = cache
                .get_or_compile(&engine, EMPTY_COMPONENT, &content)
                .unwrap();
            assert_eq!(origin, Origin::Compiled);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                good,
                "the entry is rewritten"
            );
        }
    }

    #[test]
    fn another_engine_configuration_uses_another_entry() {
        let (dir, engine, cache, content) = setup();
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let other = Engine::new(&config).unwrap();
        let other_cache = CompileCache::new(dir.path(), &other);
        assert_ne!(cache.entry_path(&content), other_cache.entry_path(&content));
        let _ = engine;
    }
}
