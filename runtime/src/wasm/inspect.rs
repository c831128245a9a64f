//! `sluice plugin check FILE.wasm`: what a component is, and whether this daemon
//! can run it — before it is dropped into a plugins folder.
//!
//! It reports the file's version (content hash), the world it implements (the
//! `processor` world, a WASI command, or unknown), its exports with their
//! signatures and its imports, then runs the same checks as a load: compile,
//! link against what the host provides, match the `processor` world, and call
//! `configure` with the given config under the default limits.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;
use wasmtime::component::types::{ComponentItem, Type};

use crate::wasm::compile_cache::Origin;
use crate::wasm::plugin::{Limits, LogTags, PluginHost, content_version};
use crate::wasm::reload::one_line;

/// The world a sluice processor built by this SDK implements (package 0.3.0:
/// its batches carry the members the host's decoder found).
pub const PROCESSOR_WORLD: &str = "sluice:plugin/processor@0.3.0";

/// The processor world of package 0.1.0, which components of other
/// toolchains (Python, JavaScript, C) implement; still run.
pub const PROCESSOR_WORLD_0_1: &str = "sluice:plugin/processor@0.1.0";

/// The report of [`check`], printable as it is.
#[derive(Debug)]
pub struct Report {
    /// Human-readable lines.
    pub text: String,
    /// Whether the daemon can run it as a processor with the given config.
    pub runnable: bool,
}

/// Inspects the component at `path` and checks it as the daemon would load it,
/// calling `configure(config)`.
pub fn check(host: &PluginHost, path: &Path, config: &[(String, String)]) -> Report {
    let mut text = String::new();
    let bytes = match crate::wasm::compile_cache::read_regular(path) {
        Ok(b) => b,
        Err(e) => {
            return Report {
                text: format!("{}: cannot read: {e}\n", path.display()),
                runnable: false,
            };
        }
    };
    let _ = writeln!(text, "file:     {}", path.display());
    let _ = writeln!(
        text,
        "size:     {} bytes, version {}",
        bytes.len(),
        content_version(&bytes)
    );
    let started = Instant::now();
    let component = match Component::new(host.engine(), &bytes) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(
                text,
                "verdict:  cannot run: not a valid WebAssembly component{}: {e:#}",
                crate::wasm::plugin::core_module_hint(&bytes)
            );
            return Report {
                text,
                runnable: false,
            };
        }
    };
    let _ = writeln!(
        text,
        "compile:  {:.1} ms (Cranelift)",
        ms(started.elapsed())
    );
    let ty = component.component_type();
    let engine = host.engine();
    let exports: Vec<(String, ComponentItem)> = ty
        .exports(engine)
        .map(|(name, e)| (name.to_string(), e.ty))
        .collect();
    let world = if exports.iter().any(|(n, _)| n == "configure")
        && let Some((_, process)) = exports.iter().find(|(n, _)| n == "process")
    {
        // Package 0.3.0's batch is 0.1.0's with `members` and `member-ends`.
        if item_sig(process).contains("member-ends") {
            PROCESSOR_WORLD.to_string()
        } else {
            PROCESSOR_WORLD_0_1.to_string()
        }
    } else if ["configure", "create", "accumulate", "merge", "finish"]
        .iter()
        .all(|f| exports.iter().any(|(n, _)| n == f))
    {
        crate::wasm::plugin::World::Aggregator.to_string()
    } else if exports.iter().any(|(n, _)| n == "configure")
        && exports.iter().any(|(n, _)| n == "process-keyed")
    {
        crate::wasm::plugin::World::Keyed.to_string()
    } else if exports.iter().any(|(n, _)| n.starts_with("wasi:cli/run@")) {
        "wasi:cli/command (a program, not a sluice plugin)".to_string()
    } else {
        "unknown".to_string()
    };
    let _ = writeln!(text, "world:    {world}");
    let _ = writeln!(text, "exports:");
    for (name, item) in &exports {
        let _ = writeln!(text, "  {name}{}", item_sig(item));
    }
    let _ = writeln!(text, "imports:");
    for (name, _) in ty.imports(engine) {
        let _ = writeln!(text, "  {name}");
    }

    let content: [u8; 32] = Sha256::digest(&bytes).into();
    let plugin = match host.link(path, &component, content, Origin::Compiled, Instant::now()) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(
                text,
                "verdict:  cannot run: {}",
                one_line(&format!("{e:#}"))
            );
            return Report {
                text,
                runnable: false,
            };
        }
    };
    let limits = Limits {
        memory_bytes: 64 << 20,
        timeout: Duration::from_secs(1),
    };
    let tags = LogTags::standalone("check", &plugin);
    let started = Instant::now();
    match plugin.instantiate(config, limits, tags) {
        Ok(_) => {
            let _ = writeln!(
                text,
                "configure: ok in {:.1} ms with {} setting(s)",
                ms(started.elapsed()),
                config.len()
            );
            let _ = writeln!(
                text,
                "verdict:  runs in this daemon (wasmtime {}, {})",
                crate::wasm::plugin::WASMTIME_VERSION,
                plugin.world()
            );
            Report {
                text,
                runnable: true,
            }
        }
        Err(e) => {
            let _ = writeln!(text, "verdict:  cannot run with this config: {e}");
            Report {
                text,
                runnable: false,
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn item_sig(item: &ComponentItem) -> String {
    match item {
        ComponentItem::ComponentFunc(f) => {
            let params: Vec<String> = f
                .params()
                .map(|(name, t)| format!("{name}: {}", type_name(&t)))
                .collect();
            let results: Vec<String> = f.results().map(|t| type_name(&t)).collect();
            let arrow = if results.is_empty() {
                String::new()
            } else {
                format!(" -> {}", results.join(", "))
            };
            format!(": func({}){arrow}", params.join(", "))
        }
        ComponentItem::ComponentInstance(_) => " (interface)".into(),
        ComponentItem::Component(_) => " (component)".into(),
        ComponentItem::Module(_) => " (core module)".into(),
        ComponentItem::CoreFunc(_) => " (core function)".into(),
        ComponentItem::Type(_) => " (type)".into(),
        ComponentItem::Resource(_) => " (resource)".into(),
    }
}

/// A WIT-like spelling of `t`, records by their field names.
fn type_name(t: &Type) -> String {
    match t {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", type_name(&l.ty())),
        Type::Option(o) => format!("option<{}>", type_name(&o.ty())),
        Type::Result(r) => format!(
            "result<{}, {}>",
            r.ok().map_or("_".into(), |t| type_name(&t)),
            r.err().map_or("_".into(), |t| type_name(&t))
        ),
        Type::Tuple(t) => format!(
            "tuple<{}>",
            t.types()
                .map(|t| type_name(&t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Record(r) => format!(
            "record {{ {} }}",
            r.fields()
                .map(|f| format!("{}: {}", f.name, type_name(&f.ty)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Enum(_) => "enum".into(),
        Type::Variant(_) => "variant".into(),
        Type::Flags(_) => "flags".into(),
        other => format!("{other:?}").chars().take(40).collect(),
    }
}
