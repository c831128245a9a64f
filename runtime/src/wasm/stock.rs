//! Where `plugin = "stock/NAME.wasm"` is found: the stock plugins shipped
//! with sluice (`jq`, `fields`, `parse`, `mask`, `sample`; crates
//! `plugins/stock-NAME`, reference pages in `docs/plugins/stock/`).
//!
//! A plugin path is looked up in `plugins_dir` first, so a file of your own
//! at `PLUGINS_DIR/stock/jq.wasm` (a pinned or patched version) wins. When
//! there is none and the path is `stock/NAME.wasm`, the first of these
//! folders that has `NAME.wasm` provides it:
//!
//! 1. `$SLUICE_STOCK_DIR`, when set;
//! 2. `BIN/../lib/sluice/stock`, `BIN` being the folder of the running
//!    `sluice`: where the `.deb` and the install steps put them
//!    (`/usr/bin/sluice` → `/usr/lib/sluice/stock`, `/usr/local/bin/sluice`
//!    → `/usr/local/lib/sluice/stock`);
//! 3. `BIN/../plugins/stock`: where `runtime/build.rs` puts them, so a
//!    `sluice` built from this repository (`target/debug/sluice`,
//!    `target/release/sluice`) finds them in `target/plugins/stock`.
//!
//! The file found is the slot's file: hot reload watches it where it is.

use std::path::{Component, Path, PathBuf};

/// The folder name that marks a stock plugin path.
pub const STOCK: &str = "stock";

/// The variable naming a stock folder to look in first.
pub const STOCK_DIR_VAR: &str = "SLUICE_STOCK_DIR";

/// The stock plugin `NAME.wasm` that `file` names, when it is
/// `stock/NAME.wasm` (relative, two parts).
pub fn stock_name(file: &Path) -> Option<&std::ffi::OsStr> {
    let mut parts = file.components();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Component::Normal(dir)), Some(Component::Normal(name)), None) if dir == STOCK => {
            Some(name)
        }
        _ => None,
    }
}

/// The stock folders, in the order they are searched.
pub fn folders() -> Vec<PathBuf> {
    let mut folders = Vec::new();
    if let Some(dir) = std::env::var_os(STOCK_DIR_VAR).filter(|d| !d.is_empty()) {
        folders.push(PathBuf::from(dir));
    }
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        folders.push(bin.join("../lib/sluice").join(STOCK));
        folders.push(bin.join("../plugins").join(STOCK));
    }
    folders
}

/// Where the plugin `file` of a config is: `in_plugins_dir` (the file
/// resolved in `plugins_dir`) when it exists or `file` is not a stock path;
/// else the stock folder that has it; else `in_plugins_dir` (missing: the
/// caller says so, with [`searched`]).
pub fn locate(in_plugins_dir: PathBuf, file: &Path) -> PathBuf {
    if in_plugins_dir.is_file() {
        return in_plugins_dir;
    }
    let Some(name) = stock_name(file) else {
        return in_plugins_dir;
    };
    folders()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .map(|p| normalize(&p))
        .unwrap_or(in_plugins_dir)
}

/// For a missing stock plugin: the stock folders searched, for the message.
pub fn searched(file: &Path) -> Option<String> {
    stock_name(file)?;
    Some(
        folders()
            .iter()
            .map(|d| normalize(d).display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// `path` with `..` resolved against the real folders when they exist (for
/// messages and the status: `/usr/lib/sluice/stock/jq.wasm`, not
/// `/usr/bin/../lib/…`).
fn normalize(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stock_slash_name_is_a_stock_path() {
        assert_eq!(
            stock_name(Path::new("stock/jq.wasm")),
            Some(std::ffi::OsStr::new("jq.wasm"))
        );
        for other in [
            "jq.wasm",
            "/stock/jq.wasm",
            "stock/a/jq.wasm",
            "x/stock/jq.wasm",
            "stock",
        ] {
            assert_eq!(stock_name(Path::new(other)), None, "{other}");
        }
    }

    #[test]
    fn plugins_dir_first_then_the_stock_folders() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("stock/jq.wasm");
        // Not in plugins_dir and not a stock path: as resolved.
        let plain = dir.path().join("x.wasm");
        assert_eq!(locate(plain.clone(), Path::new("x.wasm")), plain);
        // A file of one's own wins.
        std::fs::create_dir_all(mine.parent().unwrap()).unwrap();
        std::fs::write(&mine, b"mine").unwrap();
        assert_eq!(locate(mine.clone(), Path::new("stock/jq.wasm")), mine);
        // Missing everywhere: as resolved, and the folders are named.
        let missing = dir.path().join("stock/nope.wasm");
        assert_eq!(
            locate(missing.clone(), Path::new("stock/nope.wasm")),
            missing
        );
        assert!(searched(Path::new("stock/nope.wasm")).is_some());
        assert!(searched(Path::new("nope.wasm")).is_none());
    }
}
