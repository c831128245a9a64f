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
//! Loading compiled code is `unsafe` in wasmtime (the bytes become native code,
//! run outside the sandbox), so an entry is never trusted as found. Each one is
//! framed by this daemon:
//!
//! ```text
//! MAGIC (16 bytes) | SHA-256 of the .wasm (32) | HMAC-SHA256(key, .wasm hash ‖ payload) (32) | payload
//! ```
//!
//! where `key` is 32 random bytes in `STATE_DIR/compiled/.key`, made by the
//! daemon on first use (mode 0600). An entry is used only when the frame is
//! intact, names the expected `.wasm`, its MAC verifies (so an entry written by
//! anyone without the key — or another `.wasm`'s entry copied over — is
//! refused), and the entry and key files belong to the daemon's user and are not
//! writable by others. Anything else (truncated, corrupt, foreign, or refused by
//! wasmtime) is logged, ignored and rewritten from a fresh compilation. Entries
//! are written to a temporary file and renamed into place, so a reader never
//! sees half an entry. Whoever can read the key can forge entries: the state
//! folder must be as private as the daemon (systemd's `StateDirectory=` is
//! 0700).

use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of every entry: the format and its version.
const MAGIC: &[u8; 16] = b"sluice-cwasm-v2\n";
const HEADER: usize = MAGIC.len() + 32 + 32;

/// Largest file read as a cache entry (or plugin): a guard against a FIFO or
/// device at that path.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Default bound on the bytes of the entries kept (`[daemon]
/// compile_cache_max`): room for ~1,800 compiled Rust plugins (~0.55 MB each)
/// or ~25 Python ones.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// Where compiled components are kept, for one engine.
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    /// Bound on the bytes of the `.cwasm` entries kept: past it, after a
    /// store, the least recently used entries are removed (see
    /// [`CompileCache::prune`]).
    max_bytes: u64,
    /// The MAC key, once read or made.
    key: std::sync::Arc<std::sync::OnceLock<Option<[u8; 32]>>>,
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .field("engine_key", &self.engine_key)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

type Mac = hmac::Hmac<Sha256>;

/// Reads a regular file of at most [`MAX_FILE_BYTES`] (not a FIFO, device or
/// folder, which could block or never end).
///
/// # Errors
/// It cannot be read, or is not a regular file, or is too large.
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // O_NONBLOCK: opening a FIFO does not wait for a writer.
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "{} bytes is larger than the {MAX_FILE_BYTES}-byte limit",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Whether `meta` is owned by this process's user and not writable by others.
fn private(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    meta.uid() == rustix::process::geteuid().as_raw() && meta.mode() & 0o022 == 0
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
            max_bytes: DEFAULT_MAX_BYTES,
            key: std::sync::Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// The same cache bounded to `max_bytes` of entries (default
    /// [`DEFAULT_MAX_BYTES`]).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The MAC key: read from `compiled/.key`, or made there (0600). `None` when
    /// neither works (the cache is then off).
    fn key(&self) -> Option<[u8; 32]> {
        *self.key.get_or_init(|| match self.read_or_make_key() {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "compile cache off: no usable key: {e}");
                None
            }
        })
    }

    fn read_or_make_key(&self) -> std::io::Result<[u8; 32]> {
        use std::io::Write as _;
        let path = self.dir.join(".key");
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            let bytes = read_regular(&path)?;
            if private(&meta) && meta.is_file() && bytes.len() == 32 {
                let mut key = [0; 32];
                key.copy_from_slice(&bytes);
                return Ok(key);
            }
            tracing::warn!(key = %path.display(), "compile cache key is not this user's private 32-byte file: making a new one (every entry is rebuilt)");
            std::fs::remove_file(&path)?;
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut key = [0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&key)?;
        tmp.as_file().sync_all()?;
        // NamedTempFile is 0600; a concurrent daemon may have made one first.
        match tmp.persist_noclobber(&path) {
            Ok(_) => Ok(key),
            Err(_) => {
                let bytes = read_regular(&path)?;
                bytes
                    .try_into()
                    .map_err(|_| std::io::Error::other("the key file is not 32 bytes"))
            }
        }
    }

    fn mac(key: &[u8; 32], content: &[u8; 32], payload: &[u8]) -> Mac {
        use hmac::Mac as _;
        let mut mac = Mac::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(content);
        mac.update(payload);
        mac
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
            Ok(Some(component)) => {
                // Used now: the last entry to go when the cache is pruned.
                let touched = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                if let Err(e) = touched {
                    tracing::debug!(entry = %path.display(), "cannot mark the compile cache entry used: {e}");
                }
                return Ok((component, Origin::Cached));
            }
            Ok(None) => {}
            Err(reason) => tracing::warn!(
                entry = %path.display(),
                "compile cache entry ignored and rebuilt: {reason}"
            ),
        }
        // A large component (a Python or JavaScript one) takes seconds: say so.
        if wasm.len() > 1 << 20 {
            tracing::info!(
                bytes = wasm.len(),
                "compiling a plugin not in the compile cache (seconds for a component this large; cached for next time)"
            );
        }
        let component = Component::new(engine, wasm)?;
        match self.store(&component, &path, content) {
            Ok(()) => self.prune(&path),
            Err(e) => {
                tracing::warn!(entry = %path.display(), "cannot write compile cache entry: {e:#}")
            }
        }
        Ok((component, Origin::Compiled))
    }

    /// Removes the least recently used entries (by modification time: set
    /// when an entry is written, and again each time it is loaded) until the
    /// entries left take at most `max_bytes`, never `keep` (the entry just
    /// written), as ccache and sccache bound theirs. Entries of every engine
    /// count (another sluice version's too). A removed entry costs one
    /// compilation when it is needed again; a component loaded from it is
    /// unaffected (loading copies the bytes). Errors are logged, not returned.
    fn prune(&self, keep: &Path) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = dir
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok().filter(std::fs::Metadata::is_file)?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        if total <= self.max_bytes {
            return;
        }
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    tracing::info!(
                        entry = %path.display(),
                        bytes = len,
                        max_bytes = self.max_bytes,
                        "compile cache past compile_cache_max: removed its least recently used entry"
                    );
                }
                Err(e) => {
                    tracing::warn!(entry = %path.display(), "cannot remove compile cache entry: {e}")
                }
            }
        }
    }

    /// A valid entry's component; `Ok(None)` when there is no entry; `Err` with
    /// the reason when there is one that cannot be trusted or used.
    fn load(
        &self,
        engine: &Engine,
        path: &Path,
        content: &[u8; 32],
    ) -> Result<Option<Component>, String> {
        use hmac::Mac as _;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        if !meta.is_file() || !private(&meta) {
            return Err("not a regular file of this user, writable by no one else".into());
        }
        let key = self.key().ok_or("no key")?;
        let bytes = read_regular(path).map_err(|e| format!("cannot read it: {e}"))?;
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not an entry written by sluice (bad header)".into());
        }
        let (named, rest) = bytes[MAGIC.len()..].split_at(32);
        let (sum, payload) = rest.split_at(32);
        if named != content {
            return Err("the entry is for another .wasm".into());
        }
        if Self::mac(&key, content, payload).verify_slice(sum).is_err() {
            return Err(
                "the entry is corrupt or was not written by this daemon (MAC mismatch)".into(),
            );
        }
        // SAFETY: wasmtime requires that the bytes were produced by
        // `Component::serialize` of a compatible engine and not altered since.
        // They were written by `store` below: the MAC over (the .wasm's hash,
        // the payload) under this state folder's private key verifies, which
        // nobody without the key can forge; wasmtime itself checks its version
        // and settings again and refuses a mismatch.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, payload) }
            .map_err(|e| format!("wasmtime refuses it: {e:#}"))?;
        Ok(Some(component))
    }

    fn store(&self, component: &Component, path: &Path, content: &[u8; 32]) -> anyhow::Result<()> {
        use hmac::Mac as _;
        let payload = component.serialize()?;
        std::fs::create_dir_all(&self.dir)?;
        let key = self
            .key()
            .ok_or_else(|| anyhow::anyhow!("no compile cache key"))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(MAGIC)?;
        tmp.write_all(content)?;
        tmp.write_all(&Self::mac(&key, content, &payload).finalize().into_bytes())?;
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
    use sha2::Digest as _;

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

    /// [`EMPTY_COMPONENT`] with a custom section named `name`: another
    /// `.wasm`, so another entry.
    fn another_component(name: &str) -> (Vec<u8>, [u8; 32]) {
        let mut wasm = EMPTY_COMPONENT.to_vec();
        wasm.push(0); // custom section id
        wasm.push(name.len() as u8 + 1); // its size (< 128: one LEB128 byte)
        wasm.push(name.len() as u8);
        wasm.extend_from_slice(name.as_bytes());
        let content = Sha256::digest(&wasm).into();
        (wasm, content)
    }

    /// Bounded to two and a half entries: the third entry written removes
    /// the least recently *used* one (b: a, written before it, was loaded
    /// since), not the oldest written; the one just written stays even
    /// when alone it is over the bound.
    #[test]
    fn past_its_bound_the_least_recently_used_entry_goes() {
        let (dir, engine, cache, _) = setup();
        let [a, b, c, d] = ["a", "b", "c", "d"].map(another_component);
        let pause = || std::thread::sleep(std::time::Duration::from_millis(20));
        let compile = |cache: &CompileCache, (wasm, content): &(Vec<u8>, [u8; 32])| {
            let (_, origin) = cache.get_or_compile(&engine, wasm, content).unwrap();
            pause();
            origin
        };
        assert_eq!(compile(&cache, &a), Origin::Compiled);
        let size = std::fs::metadata(cache.entry_path(&a.1)).unwrap().len();
        let cache = cache.with_max_bytes(size * 5 / 2);
        assert_eq!(compile(&cache, &b), Origin::Compiled);
        assert_eq!(compile(&cache, &a), Origin::Cached);
        assert_eq!(compile(&cache, &c), Origin::Compiled);
        let kept = |e: &(Vec<u8>, [u8; 32])| cache.entry_path(&e.1).exists();
        assert_eq!((kept(&a), kept(&b), kept(&c)), (true, false, true));
        assert_eq!(compile(&cache, &b), Origin::Compiled, "b is compiled again");
        assert_eq!((kept(&a), kept(&b), kept(&c)), (false, true, true));
        // A bound below one entry: only the entry just written is left.
        let tiny = cache.with_max_bytes(1);
        assert_eq!(compile(&tiny, &d), Origin::Compiled);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("compiled"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".cwasm"))
            .collect();
        assert_eq!(
            left,
            [tiny.entry_path(&d.1).file_name().unwrap().to_str().unwrap()]
        );
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
    fn an_entry_of_another_wasm_renamed_and_relabelled_is_refused() {
        let (dir, engine, cache, content) = setup();
        // Another component, compiled and cached.
        let other_wasm = b"\0asm\x0d\0\x01\0\0\x02\x01x".to_vec(); // + a custom section
        let other: [u8; 32] = Sha256::digest(&other_wasm).into();
        cache
            .get_or_compile(&engine, &other_wasm, &other)
            .expect("a valid component");
        let forged_from = std::fs::read(cache.entry_path(&other)).unwrap();
        // Relabel it as EMPTY_COMPONENT's entry: right name, right wasm hash.
        let mut forged = forged_from.clone();
        forged[MAGIC.len()..MAGIC.len() + 32].copy_from_slice(&content);
        std::fs::create_dir_all(dir.path().join("compiled")).unwrap();
        std::fs::write(cache.entry_path(&content), &forged).unwrap();
        let (_, origin) = cache
            .get_or_compile(&engine, EMPTY_COMPONENT, &content)
            .unwrap();
        assert_eq!(origin, Origin::Compiled, "the forged entry was not used");
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
