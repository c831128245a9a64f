//! From a parsed config to what runs: check every cross-reference, resolve paths,
//! compile every plugin and configure one instance of each stage — and spawn
//! nothing. `sluice validate` stops here; `sluice run` goes on to start it.
//!
//! Every error points at the place in the file that causes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::aggregate::Op;
use crate::config::{
    self, Claim, Config, ConfigError, ConfigSource, GroupBy, LatePolicy, OnError, PipelineConfig,
    WindowKindName,
};
use crate::decode::{MAX_POINTERS, Pointer};
use crate::pipeline::batcher::BatchLimits;
use crate::pipeline::builtin::{DedupSpec, JoinSpec};
use crate::pipeline::keyed::KeyedSpec;
use crate::pipeline::processor::{StageSpec, StepSpec};
use crate::pipeline::{Chain, PipelineSpec};
use crate::sink::SinkSpec;
use crate::source::{Replay, SourceSpec};
use crate::table::{TableSlot, TableSpec};
use crate::wasm::plugin::{Limits, LogTags, PluginHost, World};
use crate::wasm::reload::{PluginSlot, StageUse};
use crate::window::WindowKind;
use crate::window::operator::{AggSpec, Grouping, UdfSpec, WindowSpec};

/// Everything a config asks for, built and checked.
#[derive(Debug)]
pub struct Topology {
    /// Sinks used by at least one pipeline, by name.
    pub sinks: BTreeMap<String, SinkSpec>,
    /// The pipelines.
    pub pipelines: Vec<PipelineSpec>,
    /// One slot per plugin file, shared by every stage that runs it.
    pub plugins: Vec<Arc<PluginSlot>>,
    /// The lookup tables (`[tables.NAME]`), loaded.
    pub tables: Vec<Arc<TableSlot>>,
    /// The stages that use each slot, handed to the slots by
    /// [`Topology::commit_uses`] once this topology is the one that runs.
    uses: Vec<(Arc<PluginSlot>, Vec<StageUse>)>,
    /// Where the daemon keeps its state (see [`config::state_dir`]).
    pub state_dir: PathBuf,
    /// The config file it was built from, absolute (`GET /about`).
    pub config_file: PathBuf,
    /// Whether plugin files are watched and swapped in when they change.
    pub hot_reload: bool,
    /// `[daemon] compile_cache_max`: the plugin host's cache is made with it
    /// at start, so a reload cannot change it.
    pub compile_cache_max: u64,
    /// Where the admin API listens, if anywhere.
    pub admin: Option<std::net::SocketAddr>,
    /// The token a client off the loopback shows to tap records
    /// (`[daemon] admin_token_file`, read when the config is built).
    pub tap_token: Option<String>,
}

/// The admin API's address when the config names none.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9464";

/// Most partitions one pipeline may have.
pub const MAX_PARTITIONS: usize = 1024;

/// Most Wasm instances (partitions × processors, over all pipelines) one daemon
/// runs: each reserves its linear memory's address space (4 GiB + guard), and
/// each partition is a thread.
pub const MAX_INSTANCES: usize = 2048;

impl Topology {
    /// Builds the topology of `config`, read from `source`. A plugin file that
    /// has a slot in `running` (a config reload) keeps it, with the version it
    /// runs; the others are loaded.
    ///
    /// # Errors
    /// A located [`ConfigError`]: an unknown source or sink name, a missing
    /// required field, a bad JSON pointer, a plugin file that is missing, is not a
    /// processor component, or whose `configure` refuses its config.
    pub fn build(
        config: &Config,
        source: &ConfigSource,
        host: &PluginHost,
        running: &[Arc<PluginSlot>],
    ) -> Result<Topology, ConfigError> {
        let base = Config::base_dir(source);
        if config.pipelines.is_empty() {
            return Err(source.unplaced("no pipeline is defined: add a [pipelines.NAME] table"));
        }
        let plugins_dir = config::resolve(&base, config.daemon.plugins_dir.get_ref());
        let mut at = PluginLoad {
            host,
            source,
            plugins_dir: &plugins_dir,
            running,
            loaded: BTreeMap::new(),
            uses: BTreeMap::new(),
        };
        let mut sinks = BTreeMap::new();
        let mut pipelines = Vec::new();
        let mut instances = 0usize;
        // What each source and sink holds alone (a file, stdin, a Kafka group,
        // a listening socket), and who holds it.
        let mut claims = Claims::default();
        check_names(config, source)?;
        let mut tables = BTreeMap::new();
        for (name, table) in &config.tables {
            let (spec, loaded) = TableSpec::build(table.get_ref(), source, &base)?;
            tables.insert(name.clone(), TableSlot::new(spec, loaded));
        }

        for (name, spanned) in &config.pipelines {
            let p = spanned.get_ref();
            let src_name = p.source.get_ref();
            let src = config.sources.get(src_name).ok_or_else(|| {
                source.error(
                    p.source.span(),
                    format!(
                        "no source named `{src_name}` (known: {})",
                        known(&config.sources)
                    ),
                )
            })?;
            let (src_spec, src_claims) = SourceSpec::build(
                src_name,
                name,
                src.get_ref(),
                source,
                &base,
                p.window.is_some(),
            )?;
            for (claim, span) in src_claims {
                claims.take(
                    claim,
                    &format!("source `{src_name}`"),
                    name,
                    source,
                    span,
                    p.source.span(),
                )?;
            }

            let partitions = *p.partitions.get_ref();
            if partitions == 0 || partitions > MAX_PARTITIONS {
                return Err(source.error(
                    p.partitions.span(),
                    format!("partitions must be between 1 and {MAX_PARTITIONS}"),
                ));
            }
            instances += partitions * p.processors.iter().filter(|s| s.plugin.is_some()).count();
            if instances > MAX_INSTANCES {
                return Err(source.error(
                    p.partitions.span(),
                    format!(
                        "too many plugin instances: partitions × processors over all pipelines comes to {instances}, more than {MAX_INSTANCES}"
                    ),
                ));
            }

            let (sink_names, dead_letter) =
                pipeline_sinks(config, source, &base, name, p, &mut sinks, &mut claims)?;

            let stages = build_stages(
                &mut at,
                p,
                name,
                dead_letter.is_some(),
                source,
                &tables,
                &src_spec,
            )?;

            let mut window = build_window(p, dead_letter.is_some(), source)?;
            instances += load_aggregators(&mut at, window.as_mut(), p, name)?;
            let window = window.map(Arc::new);
            let checkpoint = checkpoint_spec(p, src_spec.input.replay(), source)?;
            let balance = check_partition_by(p, &stages, src_spec.input.window_tasks(), source)?;
            pipelines.push(PipelineSpec {
                checkpoint,
                name: name.clone(),
                source: src_spec,
                partitions,
                balance,
                chain: Arc::new(Chain {
                    limits: BatchLimits {
                        max_records: p.batch.max_records,
                        max_bytes: usize::try_from(p.batch.max_bytes).unwrap_or(usize::MAX),
                        interval: p.batch.interval,
                    },
                    stages,
                }),
                sinks: sink_names,
                dead_letter,
                queue_records: p.queue_records,
                window,
            });
        }
        check_exactly_once(config, source, &sinks, &pipelines)?;
        check_log_level(config, source)?;
        if let Some(endpoint) = &config.daemon.telemetry.otlp_endpoint {
            crate::obs::telemetry::check_endpoint(endpoint.get_ref()).map_err(|e| {
                source.error(endpoint.span(), format!("field `otlp_endpoint`: {e}"))
            })?;
        }
        if let Some(ca_file) = &config.daemon.telemetry.ca_file {
            crate::http_client::read_certificates(&config::resolve(&base, ca_file.get_ref()))
                .map_err(|e| source.error(ca_file.span(), format!("field `ca_file`: {e:#}")))?;
        }
        Ok(Topology {
            sinks,
            pipelines,
            uses: at
                .loaded
                .iter()
                .map(|(path, slot)| (slot.clone(), at.uses.remove(path).unwrap_or_default()))
                .collect(),
            plugins: at.loaded.into_values().collect(),
            tables: tables.into_values().collect(),
            state_dir: config::state_dir(config, source),
            config_file: std::path::absolute(&source.file).unwrap_or_else(|_| source.file.clone()),
            hot_reload: config.daemon.hot_reload,
            compile_cache_max: config.daemon.compile_cache_max,
            admin: admin_address(config, source)?,
            tap_token: admin_token(config, &base, source)?,
        })
    }
}

/// Names of sources, sinks and pipelines: non-empty, no control characters.
fn check_names(config: &Config, source: &ConfigSource) -> Result<(), ConfigError> {
    for (kind, name, spanned) in config
        .sources
        .iter()
        .map(|(n, s)| ("source", n, s.span()))
        .chain(config.sinks.iter().map(|(n, s)| ("sink", n, s.span())))
        .chain(
            config
                .pipelines
                .iter()
                .map(|(n, s)| ("pipeline", n, s.span())),
        )
    {
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(source.error(
                spanned,
                format!("{kind} name {name:?} must be non-empty, without control characters"),
            ));
        }
    }
    Ok(())
}

/// The output sinks and the dead-letter sink of pipeline `name`: each built
/// once (into `sinks`) with its claims, none listed twice.
fn pipeline_sinks(
    config: &Config,
    source: &ConfigSource,
    base: &Path,
    name: &str,
    p: &PipelineConfig,
    sinks: &mut BTreeMap<String, SinkSpec>,
    claims: &mut Claims,
) -> Result<(Vec<String>, Option<String>), ConfigError> {
    let mut sink_names = Vec::new();
    let mut use_sink = |n: &toml::Spanned<String>| -> Result<String, ConfigError> {
        let sink_name = n.get_ref();
        let s = config.sinks.get(sink_name).ok_or_else(|| {
            source.error(
                n.span(),
                format!(
                    "no sink named `{sink_name}` (known: {})",
                    known(&config.sinks)
                ),
            )
        })?;
        if !sinks.contains_key(sink_name) {
            let cx = crate::config::BuildContext {
                name: sink_name,
                pipeline: "",
                table: s.get_ref(),
                config: source,
                base,
            };
            let built = crate::sink::parse(s.get_ref(), source)?.build(&cx)?;
            for (claim, span) in built.claims {
                claims.take(
                    claim,
                    &format!("sink `{sink_name}`"),
                    name,
                    source,
                    span,
                    s.span(),
                )?;
            }
            sinks.insert(sink_name.clone(), built.spec);
        }
        Ok(sink_name.clone())
    };
    if p.sinks.get_ref().is_empty() {
        return Err(source.error(p.sinks.span(), "a pipeline needs at least one sink"));
    }
    for n in p.sinks.get_ref() {
        let sink_name = use_sink(n)?;
        if sink_names.contains(&sink_name) {
            return Err(source.error(
                n.span(),
                format!("sink `{sink_name}` is listed twice: every record would be written twice"),
            ));
        }
        sink_names.push(sink_name);
    }
    let dead_letter = p.dead_letter.as_ref().map(&mut use_sink).transpose()?;
    if let (Some(dl), Some(span)) = (&dead_letter, p.dead_letter.as_ref().map(|d| d.span()))
        && sink_names.contains(dl)
    {
        return Err(source.error(
            span,
            format!(
                "sink `{dl}` is both an output and the dead-letter sink: use a sink of its own"
            ),
        ));
    }
    Ok((sink_names, dead_letter))
}

/// The processor chain of pipeline `name`: each plugin loaded (or reused) and
/// configured once; each built-in stage checked against its table or the
/// partitioning.
fn build_stages(
    at: &mut PluginLoad<'_>,
    p: &PipelineConfig,
    name: &str,
    has_dead_letter: bool,
    source: &ConfigSource,
    tables: &BTreeMap<String, Arc<TableSlot>>,
    src: &SourceSpec,
) -> Result<Vec<StepSpec>, ConfigError> {
    let source_key = src.decoder.key_pointer();
    let kafka = src.input.window_tasks();
    let default_policy = p.on_error.unwrap_or(if has_dead_letter {
        OnError::DeadLetter
    } else {
        OnError::Skip
    });
    let mut stages = Vec::new();
    for (index, proc_cfg) in p.processors.iter().enumerate() {
        let on_error = proc_cfg.on_error.unwrap_or(default_policy);
        let place = match (&proc_cfg.plugin, &proc_cfg.join, &proc_cfg.dedup) {
            (Some(plugin), None, None) => plugin.span(),
            (None, Some(join), None) => join.span(),
            (None, None, Some(dedup)) => dedup.span(),
            (None, None, None) => {
                return Err(source.error(
                    p.processors_span(index),
                    "a processor needs one of `plugin`, `join` or `dedup`",
                ));
            }
            _ => {
                return Err(source.error(
                    p.processors_span(index),
                    "a processor is one of `plugin`, `join` or `dedup`, not several: give each its own entry of `processors`",
                ));
            }
        };
        if on_error == OnError::DeadLetter && !has_dead_letter {
            return Err(source.error(
                place,
                "on_error = \"dead-letter\" needs the pipeline's `dead_letter` sink",
            ));
        }
        if proc_cfg.plugin.is_none() && !proc_cfg.config.is_empty() {
            return Err(source.error(
                place,
                "`config` is for plugin stages; a built-in stage takes its settings in its own table",
            ));
        }
        if proc_cfg.plugin.is_none() {
            let given = keyed_settings_given(proc_cfg);
            if !given.is_empty() {
                return Err(source.error(
                    place,
                    format!(
                        "`{}` is for keyed processors (sluice:plugin/keyed-processor plugins), not a built-in stage",
                        given.join("`, `")
                    ),
                ));
            }
        }
        if let Some(join) = &proc_cfg.join {
            stages.push(StepSpec::Join(Arc::new(build_join(
                join.get_ref(),
                index,
                on_error,
                tables,
                source,
            )?)));
            continue;
        }
        if let Some(dedup) = &proc_cfg.dedup {
            stages.push(StepSpec::Dedup(Arc::new(build_dedup(
                dedup, index, on_error, p, source_key, source,
            )?)));
            continue;
        }
        let plugin = proc_cfg.plugin.as_ref().expect("checked above");
        let limits = Limits {
            memory_bytes: proc_cfg.memory_limit,
            timeout: proc_cfg.timeout,
        };
        let pairs = config::plugin_config_pairs(&proc_cfg.config);
        let (slot, label) = at.load(
            plugin,
            World::Processor,
            |plugin| format!("{index}:{}", plugin.name),
            name,
            &pairs,
            limits,
        )?;
        let mut keyed = keyed_spec(
            proc_cfg,
            &slot,
            plugin,
            source_key,
            kafka,
            src.input.keyed_refusal(),
            source,
        )?;
        if let Some(k) = &mut keyed {
            // The keyed stages of this plugin before it: each its own state.
            k.instance = stages
                .iter()
                .filter(|s| matches!(s, StepSpec::Plugin(s) if s.keyed.is_some() && Arc::ptr_eq(&s.slot, &slot)))
                .count();
        }
        stages.push(StepSpec::Plugin(Arc::new(StageSpec {
            label,
            slot,
            config: pairs,
            limits,
            on_error,
            breaker: proc_cfg.circuit_breaker,
            tables: keyed.map(|_| Arc::new(tables.clone())),
            keyed,
        })));
    }
    Ok(stages)
}

/// Whether the pipeline's `partition_by` is `balance`, which no stage that
/// keeps state per key allows (a key's records must reach the worker that
/// holds its state), nor a Kafka source (whose records are spread by Kafka
/// partition: its `partition_by`).
fn check_partition_by(
    p: &PipelineConfig,
    stages: &[StepSpec],
    kafka: bool,
    source: &ConfigSource,
) -> Result<bool, ConfigError> {
    let Some(mode) = &p.partition_by else {
        return Ok(false);
    };
    if *mode.get_ref() != config::PartitionMode::Balance {
        return Ok(false);
    }
    if kafka {
        return Err(source.error(
            mode.span(),
            "partition_by = \"balance\" is for other sources: a Kafka source spreads its records by Kafka partition (or key), set with its own `partition_by`",
        ));
    }
    let keyed = stages.iter().find_map(|s| match s {
        StepSpec::Dedup(d) => Some(d.label.clone()),
        StepSpec::Plugin(s) if s.keyed.is_some() => Some(s.label.clone()),
        _ => None,
    });
    if let Some(label) = keyed {
        return Err(source.error(
            mode.span(),
            format!(
                "partition_by = \"balance\" spreads a key's records over every partition, but stage {label} keeps state per key: use partition_by = \"key\" (the default)"
            ),
        ));
    }
    Ok(true)
}

/// A keyed processor's settings, or `None` for a plain processor (which may
/// not have them). A keyed processor's state is per partition and per record
/// key: with more than one partition, the source must route by a key (its
/// `key`), so that a key's records all reach the partition that holds its
/// state (Flink's `keyBy`, Kafka Streams' co-partitioning). On a Kafka source
/// the state is kept per Kafka partition (and moves with it through the
/// changelog): a record without a `key` pointer is keyed by its message key,
/// and the source must keep `partition_by = "source"` (`kafka_refusal`).
fn keyed_spec(
    proc_cfg: &config::ProcessorConfig,
    slot: &Arc<PluginSlot>,
    plugin: &toml::Spanned<String>,
    source_key: Option<&Pointer>,
    kafka: bool,
    kafka_refusal: Option<String>,
    source: &ConfigSource,
) -> Result<Option<KeyedSpec>, ConfigError> {
    let keyed = slot.current().world() == World::Keyed;
    if !keyed {
        let given = keyed_settings_given(proc_cfg);
        if !given.is_empty() {
            return Err(source.error(
                plugin.span(),
                format!(
                    "`{}` is for keyed processors (sluice:plugin/keyed-processor components); this plugin is a {}",
                    given.join("`, `"),
                    slot.current().world()
                ),
            ));
        }
        return Ok(None);
    }
    // A Kafka source: the state is kept per Kafka partition and moves with
    // it through the changelog, which needs each partition's records on one
    // worker (as windows do).
    if let Some(refusal) = kafka_refusal {
        return Err(source.error(plugin.span(), refusal));
    }
    // A Kafka record without a `key` pointer is keyed by its message key.
    if source_key.is_none() && !kafka {
        return Err(source.error(
            plugin.span(),
            "a keyed processor keeps state per record key: the source needs a `key` (the JSON pointer records are keyed and routed by); without one every record would be refused",
        ));
    }
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Ok(Some(KeyedSpec {
        ttl_ms: proc_cfg.state_ttl.map(ms),
        watermark_ms: proc_cfg.watermark.map_or(0, ms),
        memory_bytes: proc_cfg
            .state_memory
            .unwrap_or(KeyedSpec::default().memory_bytes),
        spill: proc_cfg.state_spill.unwrap_or(true),
        instance: 0,
    }))
}

/// The keyed-processor settings a processor entry gives (in the order of
/// the docs), for the errors of an entry that is not a keyed processor.
fn keyed_settings_given(proc_cfg: &config::ProcessorConfig) -> Vec<&'static str> {
    [
        ("state_ttl", proc_cfg.state_ttl.is_some()),
        ("watermark", proc_cfg.watermark.is_some()),
        ("state_memory", proc_cfg.state_memory.is_some()),
        ("state_spill", proc_cfg.state_spill.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

fn pointer(text: &toml::Spanned<String>, source: &ConfigSource) -> Result<Pointer, ConfigError> {
    Pointer::parse(text.get_ref()).map_err(|e| source.error(text.span(), e))
}

/// A `join` stage: its table must be a `[tables.NAME]` of the config.
fn build_join(
    join: &config::JoinConfig,
    index: usize,
    on_error: OnError,
    tables: &BTreeMap<String, Arc<TableSlot>>,
    source: &ConfigSource,
) -> Result<JoinSpec, ConfigError> {
    let table = tables.get(join.table.get_ref()).ok_or_else(|| {
        source.error(
            join.table.span(),
            format!(
                "no table named `{}` (known: {})",
                join.table.get_ref(),
                known(tables)
            ),
        )
    })?;
    Ok(JoinSpec {
        label: format!("{index}:join:{}", join.table.get_ref()),
        table: table.clone(),
        on: pointer(&join.on, source)?,
        target: pointer(&join.target, source)?,
        kind: join.kind,
        on_error,
    })
}

/// A `dedup` stage. Its state is per partition, so the records of one dedup
/// key must all come to one partition: with more than one, the source's
/// `key` (what routes records) must be one of the dedup key's pointers (as
/// Spark shuffles by the deduplication columns).
fn build_dedup(
    dedup: &toml::Spanned<config::DedupConfig>,
    index: usize,
    on_error: OnError,
    p: &PipelineConfig,
    source_key: Option<&Pointer>,
    source: &ConfigSource,
) -> Result<DedupSpec, ConfigError> {
    let config = dedup.get_ref();
    let keys = config
        .key
        .get_ref()
        .iter()
        .map(|k| pointer(k, source))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() || keys.len() > MAX_POINTERS {
        return Err(source.error(
            config.key.span(),
            format!("a dedup key is 1 to {MAX_POINTERS} JSON pointers"),
        ));
    }
    if *p.partitions.get_ref() > 1 && !source_key.is_some_and(|k| keys.contains(k)) {
        return Err(source.error(
            config.key.span(),
            format!(
                "dedup state is kept per partition, so duplicates must reach the same one: with {} partitions the source's `key` (now {}) must be one of the dedup key's pointers, or use partitions = 1",
                p.partitions.get_ref(),
                source_key.map_or("none".to_string(), |k| format!("`{k}`"))
            ),
        ));
    }
    Ok(DedupSpec {
        label: format!("{index}:dedup"),
        keys,
        within_ms: i64::try_from(config.within.as_millis()).unwrap_or(i64::MAX),
        max_keys: config.max_keys,
        on_error,
    })
}

/// Loads the Wasm aggregators (`op = "wasm"`) of a window; returns how many
/// instances they add.
fn load_aggregators(
    at: &mut PluginLoad<'_>,
    window: Option<&mut WindowSpec>,
    p: &PipelineConfig,
    name: &str,
) -> Result<usize, ConfigError> {
    let mut instances = 0;
    if let (Some(w), Some(aggregate)) = (window, &p.aggregate) {
        for (agg, a) in w.aggregates.iter_mut().zip(aggregate.get_ref()) {
            let Some(plugin) = &a.plugin else { continue };
            let limits = Limits {
                memory_bytes: a.memory_limit,
                timeout: a.timeout,
            };
            let pairs = config::plugin_config_pairs(&a.config);
            let (slot, label) = at.load(
                plugin,
                World::Aggregator,
                |_| format!("aggregate:{}", agg.name),
                name,
                &pairs,
                limits,
            )?;
            instances += 1;
            agg.udf = Some(Arc::new(UdfSpec {
                label,
                slot,
                config: pairs,
                limits,
            }));
        }
    }
    Ok(instances)
}

/// A sink that commits at checkpoints (`exactly_once`) needs a checkpointed
/// pipeline, and only one: its transactions follow that pipeline's
/// checkpoints.
fn check_exactly_once(
    config: &Config,
    source: &ConfigSource,
    sinks: &BTreeMap<String, SinkSpec>,
    pipelines: &[PipelineSpec],
) -> Result<(), ConfigError> {
    for (name, _) in sinks.iter().filter(|(_, s)| s.0.exactly_once()) {
        let users: Vec<&PipelineSpec> = pipelines
            .iter()
            .filter(|p| p.sinks.contains(name) || p.dead_letter.as_ref() == Some(name))
            .collect();
        let span = config
            .sinks
            .get(name)
            .map(toml::Spanned::span)
            .unwrap_or_default();
        if users.len() > 1 {
            let names: Vec<&str> = users.iter().map(|p| p.name.as_str()).collect();
            return Err(source.error(
                span,
                format!(
                    "sink `{name}` has exactly_once: it commits at one pipeline's checkpoints, and {} pipelines use it ({})",
                    users.len(),
                    names.join(", ")
                ),
            ));
        }
        if let Some(p) = users.first()
            && p.checkpoint.is_none()
        {
            return Err(source.error(
                span,
                format!(
                    "sink `{name}` has exactly_once: it commits at checkpoints, and pipeline `{}` has none (add `checkpoint = {{ interval = \"1s\" }}`)",
                    p.name
                ),
            ));
        }
    }
    Ok(())
}

/// The checkpoint settings of a pipeline whose source replays as `replay`.
fn checkpoint_spec(
    p: &PipelineConfig,
    replay: Replay,
    source: &ConfigSource,
) -> Result<Option<crate::checkpoint::CheckpointSpec>, ConfigError> {
    Ok(match (&p.checkpoint, replay) {
        // A Kafka source commits its offsets at checkpoints: every
        // second unless configured (Spark commits every micro-batch,
        // Kafka's auto-commit every 5 s).
        (None, Replay::Committed) => Some(crate::checkpoint::CheckpointSpec {
            interval: std::time::Duration::from_secs(1),
            batches: None,
        }),
        (None, _) => None,
        (Some(c), Replay::No(why)) => return Err(source.error(c.span(), why)),
        (Some(c), _) => Some(crate::checkpoint::CheckpointSpec {
            interval: c.get_ref().interval,
            batches: c.get_ref().batches,
        }),
    })
}

/// `[daemon] log_level`, checked as `tracing` filter directives. A directive
/// without `=` must be a level: a bare word would be a target name, and a typo
/// such as `"inof"` would silently log nothing.
fn check_log_level(config: &Config, source: &ConfigSource) -> Result<(), ConfigError> {
    let Some(level) = &config.daemon.log_level else {
        return Ok(());
    };
    let text = level.get_ref();
    let bare_word = text
        .split(',')
        .map(str::trim)
        .find(|d| !d.contains('=') && d.parse::<tracing::level_filters::LevelFilter>().is_err());
    let problem = match bare_word {
        Some(word) => Some(format!("`{word}` is not a level")),
        None => tracing_subscriber::EnvFilter::builder()
            .parse(text)
            .err()
            .map(|e| e.to_string()),
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(source.error(
            level.span(),
            format!(
                "field `log_level`: {text:?} is not a log level (off, error, warn, info, debug, trace) or filter directives such as \"warn,sluice=debug\": {problem}"
            ),
        )),
    }
}

/// `[daemon] admin_token_file`: its first line, which must not be empty.
fn admin_token(
    config: &Config,
    base: &std::path::Path,
    source: &ConfigSource,
) -> Result<Option<String>, ConfigError> {
    let Some(file) = &config.daemon.admin_token_file else {
        return Ok(None);
    };
    let path = config::resolve(base, file.get_ref());
    let text = std::fs::read_to_string(&path).map_err(|e| {
        source.error(
            file.span(),
            format!(
                "field `admin_token_file`: cannot read {}: {e}",
                path.display()
            ),
        )
    })?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.len() < 16 {
        return Err(source.error(
            file.span(),
            format!(
                "field `admin_token_file`: the token in {} is shorter than 16 characters",
                path.display()
            ),
        ));
    }
    Ok(Some(token))
}

/// `[daemon] admin`: an address, loopback unless `admin_allow_remote`.
fn admin_address(
    config: &Config,
    source: &ConfigSource,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let (text, span) = match &config.daemon.admin {
        Some(a) => (a.get_ref().as_str(), Some(a.span())),
        None => (DEFAULT_ADMIN, None),
    };
    if text == "off" {
        return Ok(None);
    }
    let error = |message: String| match &span {
        Some(span) => source.error(span.clone(), message),
        None => source.unplaced(message),
    };
    let addr: std::net::SocketAddr = text.parse().map_err(|e| {
        error(format!(
            "field `admin`: {text:?} is not an address such as \"127.0.0.1:9464\" (or \"off\"): {e}"
        ))
    })?;
    if !addr.ip().is_loopback() && !config.daemon.admin_allow_remote {
        return Err(error(format!(
            "field `admin`: {addr} is not a loopback address; set `admin_allow_remote = true` to serve the admin API beyond this machine"
        )));
    }
    Ok(Some(addr))
}

/// The kind of a `window = { … }` and its lengths, in ms.
fn window_kind(
    w: &config::WindowConfig,
    span: std::ops::Range<usize>,
    source: &ConfigSource,
) -> Result<WindowKind, ConfigError> {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let need = |what: Option<std::time::Duration>, name: &str| {
        what.map(ms).ok_or_else(|| {
            source.error(
                span.clone(),
                format!("a {:?} window needs `{name}`", w.kind).to_lowercase(),
            )
        })
    };
    let stray = match w.kind {
        WindowKindName::Tumbling => [("slide", w.slide.is_some()), ("gap", w.gap.is_some())],
        WindowKindName::Sliding => [("gap", w.gap.is_some()), ("", false)],
        WindowKindName::Session => [("size", w.size.is_some()), ("slide", w.slide.is_some())],
    };
    if let Some((field, _)) = stray.iter().find(|(_, set)| *set) {
        return Err(source.error(
            span,
            format!(
                "`{field}` does not apply to a {} window",
                format!("{:?}", w.kind).to_lowercase()
            ),
        ));
    }
    Ok(match w.kind {
        WindowKindName::Tumbling => WindowKind::Tumbling {
            size: need(w.size, "size")?,
        },
        WindowKindName::Sliding => {
            let (size, slide) = (need(w.size, "size")?, need(w.slide, "slide")?);
            if slide > size || size / slide > 1000 {
                return Err(source.error(
                    span,
                    "a sliding window needs slide ≤ size and at most 1000 windows per record (size / slide)",
                ));
            }
            WindowKind::Sliding { size, slide }
        }
        WindowKindName::Session => WindowKind::Session {
            gap: need(w.gap, "gap")?,
        },
    })
}

/// Reserves an output field name in a list of names taken (an error if taken).
type ClaimName<'a> = dyn Fn(String, &mut Vec<String>) -> Result<String, ConfigError> + 'a;

/// Numbers a JSON pointer (its text, and its place in the file if it has its
/// own) among a window's pointers.
type IndexOf<'a> =
    dyn FnMut(&str, Option<std::ops::Range<usize>>) -> Result<usize, ConfigError> + 'a;

/// The aggregates of a window: `index_of` numbers their JSON pointers,
/// `claim` reserves their output names in `names`.
fn aggregate_specs(
    aggregate: &toml::Spanned<Vec<config::AggregateConfig>>,
    source: &ConfigSource,
    index_of: &mut IndexOf<'_>,
    names: &mut Vec<String>,
    claim: &ClaimName<'_>,
) -> Result<Vec<AggSpec>, ConfigError> {
    let mut aggregates = Vec::new();
    for a in aggregate.get_ref() {
        match (&a.plugin, a.op) {
            (None, Op::Wasm) => {
                return Err(source.error(
                    aggregate.span(),
                    "aggregate `wasm` needs `plugin = \"NAME.wasm\"`: a sluice:plugin/aggregator component",
                ));
            }
            (Some(p), op) if op != Op::Wasm => {
                return Err(source.error(
                    p.span(),
                    format!(
                        "`plugin` is for `op = \"wasm\"`; `{}` is built in",
                        op.name()
                    ),
                ));
            }
            _ => {}
        }
        if a.op != Op::Wasm && !a.config.is_empty() {
            return Err(source.error(
                aggregate.span(),
                format!(
                    "`config` is for `op = \"wasm\"`; `{}` takes none",
                    a.op.name()
                ),
            ));
        }
        let field = match (&a.field, a.op) {
            (Some(f), _) => Some(index_of(f.get_ref(), Some(f.span()))?),
            (None, Op::Count | Op::Wasm) => None,
            (None, op) => {
                return Err(source.error(
                    aggregate.span(),
                    format!("aggregate `{}` needs a `field` (a JSON pointer)", op.name()),
                ));
            }
        };
        let stem = a.plugin.as_ref().map(|p| {
            Path::new(p.get_ref())
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let op_name = stem.as_deref().unwrap_or(a.op.name());
        let default = match &a.field {
            Some(f) => format!(
                "{}_{}",
                op_name,
                Pointer::parse(f.get_ref())
                    .ok()
                    .and_then(|p| p.last().map(str::to_string))
                    .unwrap_or_default()
            ),
            None => op_name.to_string(),
        };
        let name = claim(a.name.clone().unwrap_or(default), names)?;
        aggregates.push(AggSpec {
            op: a.op,
            field,
            name,
            udf: None,
        });
    }
    Ok(aggregates)
}

/// The window operator of pipeline `p`, if it has `window` and `aggregate`.
fn build_window(
    p: &PipelineConfig,
    has_dead_letter: bool,
    source: &ConfigSource,
) -> Result<Option<WindowSpec>, ConfigError> {
    let (window, aggregate) = match (&p.window, &p.aggregate) {
        (None, None) => return Ok(None),
        (Some(w), None) => {
            return Err(source.error(
                w.span(),
                "a window needs `aggregate = [ … ]`: what to compute per window",
            ));
        }
        (None, Some(a)) => {
            return Err(source.error(
                a.span(),
                "`aggregate` needs a `window = { … }` to aggregate over",
            ));
        }
        (Some(w), Some(a)) => (w, a),
    };
    let span = window.span();
    let w = window.get_ref();
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let kind = window_kind(w, span.clone(), source)?;
    let mut pointers: Vec<Pointer> = Vec::new();
    // A pointer is located at its own field when it has a place (an
    // aggregate's `field`), else at the window.
    let mut index_of =
        |text: &str, at: Option<std::ops::Range<usize>>| -> Result<usize, ConfigError> {
            let ptr = Pointer::parse(text)
                .map_err(|e| source.error(at.unwrap_or_else(|| span.clone()), e))?;
            Ok(match pointers.iter().position(|q| *q == ptr) {
                Some(i) => i,
                None => {
                    pointers.push(ptr);
                    pointers.len() - 1
                }
            })
        };
    let mut names: Vec<String> = vec!["window_start".into(), "window_end".into()];
    let claim = |name: String, names: &mut Vec<String>| -> Result<String, ConfigError> {
        if names.contains(&name) {
            return Err(source.error(
                span.clone(),
                format!("two output fields are named `{name}`: rename one with `as`"),
            ));
        }
        names.push(name.clone());
        Ok(name)
    };
    let grouping = match &w.group_by {
        GroupBy::Key(k) if k == "key" => {
            claim("key".into(), &mut names)?;
            Grouping::Key
        }
        GroupBy::Key(other) => {
            return Err(source.error(
                span,
                format!("group_by = {other:?}: use \"key\" or a list of JSON pointers"),
            ));
        }
        GroupBy::Fields(list) => {
            let mut fields = Vec::new();
            for text in list {
                let i = index_of(text, None)?;
                // The last token names the field (`/a/x` → `x`); when two end
                // alike, the whole path does (`a_x`, `b_x`).
                let name = Pointer::parse(text)
                    .ok()
                    .and_then(|p| p.last().map(str::to_string))
                    .filter(|n| !n.is_empty() && !names.contains(n))
                    .unwrap_or_else(|| {
                        let path = text.trim_start_matches('/').replace('/', "_");
                        if path.is_empty() {
                            "value".into()
                        } else {
                            path
                        }
                    });
                fields.push((claim(name, &mut names)?, i));
            }
            Grouping::Fields(fields)
        }
    };
    let aggregates = aggregate_specs(aggregate, source, &mut index_of, &mut names, &claim)?;
    if aggregates.is_empty() {
        return Err(source.error(aggregate.span(), "`aggregate` is empty"));
    }
    if pointers.len() > MAX_POINTERS {
        return Err(source.error(
            span,
            format!(
                "at most {MAX_POINTERS} distinct JSON pointers in group_by and aggregate fields"
            ),
        ));
    }
    let late = match w.late {
        Some(LatePolicy::DeadLetter) if !has_dead_letter => {
            return Err(source.error(
                span,
                "late = \"dead-letter\" needs the pipeline's `dead_letter` sink",
            ));
        }
        Some(policy) => policy,
        None if has_dead_letter => LatePolicy::DeadLetter,
        None => LatePolicy::Drop,
    };
    Ok(Some(WindowSpec {
        kind,
        delay_ms: ms(w.watermark),
        lateness_ms: ms(w.allowed_lateness),
        idle_timeout: w.idle_timeout,
        mode: w.output_mode,
        grouping,
        aggregates,
        pointers,
        late,
    }))
}

impl Topology {
    /// Tells each plugin slot which stages now use it (with which config), so
    /// that a new version of the file is checked against exactly those.
    pub fn commit_uses(&self) {
        for (slot, uses) in &self.uses {
            slot.set_uses(uses.clone());
        }
    }
}

/// What the sources and sinks of a config hold alone (see [`Claim`]), and
/// who holds each.
#[derive(Debug, Default)]
struct Claims {
    /// Files, by identity (see [`file_identity`]).
    files: BTreeMap<PathBuf, String>,
    /// Directories read, by identity: the file-name glob and who reads.
    dirs: BTreeMap<PathBuf, (Option<String>, String)>,
    /// Directories sinks write files into, by identity: who writes.
    out_dirs: BTreeMap<PathBuf, String>,
    /// Other claims: the pipeline (sources) or sink that holds each.
    held: BTreeMap<Claim, (String, String)>,
}

/// Whether `file` (an identity) is one a directory source over `dir` (an
/// identity) with `pattern` would read.
fn read_by_dir(file: &Path, dir: &Path, pattern: Option<&str>) -> bool {
    let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    file.parent() == Some(dir)
        && !name.starts_with('.')
        && pattern.is_none_or(|p| crate::source::dir::glob_match(p, name))
}

impl Claims {
    /// Records that `who` (of pipeline `pipeline`) holds `claim`, found at
    /// `span`; refuses a second holder, at `user_span` (where the pipeline
    /// or sink names the component).
    fn take(
        &mut self,
        claim: Claim,
        who: &str,
        pipeline: &str,
        source: &ConfigSource,
        span: std::ops::Range<usize>,
        user_span: std::ops::Range<usize>,
    ) -> Result<(), ConfigError> {
        if let Claim::Directory { path, pattern } = &claim {
            let key = file_identity(path);
            if let Some((_, other)) = self.dirs.get(&key).filter(|(_, o)| o != who) {
                return Err(source.error(
                    span,
                    format!(
                        "{who} reads directory {}, which {other} reads too",
                        path.display()
                    ),
                ));
            }
            if let Some((out, other)) = self.out_dirs.iter().find(|(d, _)| key.starts_with(d)) {
                return Err(source.error(
                    span,
                    format!(
                        "{who} reads the files of {}, and {other} writes its files into {}: they would be read as input",
                        path.display(),
                        out.display()
                    ),
                ));
            }
            if let Some((file, other)) = self
                .files
                .iter()
                .find(|(f, _)| read_by_dir(f, &key, pattern.as_deref()))
            {
                return Err(source.error(
                    span,
                    format!(
                        "{who} reads the files of {}, and {other} uses {} in it: it would be read as input",
                        path.display(),
                        file.display()
                    ),
                ));
            }
            self.dirs.insert(key, (pattern.clone(), who.to_string()));
            return Ok(());
        }
        if let Claim::OutputDirectory(path) = &claim {
            let key = file_identity(path);
            if let Some((dir, (_, other))) = self.dirs.iter().find(|(d, _)| d.starts_with(&key)) {
                return Err(source.error(
                    span,
                    format!(
                        "{who} writes its files into {}, and {other} reads the files of {}: they would be read as input",
                        path.display(),
                        dir.display()
                    ),
                ));
            }
            if let Some((other_dir, other)) = self
                .out_dirs
                .iter()
                .find(|(d, o)| *o != who && (key.starts_with(d) || d.starts_with(&key)))
            {
                return Err(source.error(
                    span,
                    format!(
                        "{who} writes its files into {}, and {other} into {}: give each its own directory",
                        path.display(),
                        other_dir.display()
                    ),
                ));
            }
            if let Some((file, other)) = self.files.iter().find(|(f, _)| f.starts_with(&key)) {
                return Err(source.error(
                    span,
                    format!(
                        "{who} writes its files into {}, and {other} uses {} in it",
                        path.display(),
                        file.display()
                    ),
                ));
            }
            self.out_dirs.insert(key, who.to_string());
            return Ok(());
        }
        if let Claim::File(path) = &claim {
            let key = file_identity(path);
            if let Some((dir, other)) = self.out_dirs.iter().find(|(d, _)| key.starts_with(d)) {
                return Err(source.error(
                    span,
                    format!(
                        "{who} uses {}, in {}, which {other} writes its files into",
                        path.display(),
                        dir.display()
                    ),
                ));
            }
            if let Some((dir, (_, other))) = self
                .dirs
                .iter()
                .find(|(d, (p, _))| read_by_dir(&key, d, p.as_deref()))
            {
                return Err(source.error(
                    span,
                    format!(
                        "{who} uses {}, a file of {} whose files {other} reads: it would be read as input",
                        path.display(),
                        dir.display()
                    ),
                ));
            }
            return claim_file(&mut self.files, path, who, source, span);
        }
        let holder = (pipeline.to_string(), who.to_string());
        let Some((other_pipeline, other)) = self.held.get(&claim).cloned() else {
            self.held.insert(claim, holder);
            return Ok(());
        };
        let message = match &claim {
            Claim::Stdin if other_pipeline != pipeline => format!(
                "stdin is already read by pipeline `{other_pipeline}`; it can feed only one"
            ),
            Claim::KafkaGroup { group, .. } if other_pipeline != pipeline => format!(
                "pipeline `{other_pipeline}` already consumes as Kafka group `{group}`: two pipelines in one group would split the partitions between them, each seeing part of the topic; give each pipeline its own source with its own `group_id`"
            ),
            Claim::Stdout if other != who => {
                let (a, b) = (
                    other.trim_start_matches("sink "),
                    who.trim_start_matches("sink "),
                );
                format!("sinks {a} and {b} both write to stdout: use one")
            }
            Claim::Listen { proto, address } if other == who && other_pipeline != pipeline => {
                format!(
                    "{who} is read by pipelines `{other_pipeline}` and `{pipeline}`: each pipeline runs its own copy of its source, and two copies cannot both listen on {proto} {address}; give each pipeline a source of its own (on its own address)"
                )
            }
            Claim::Listen { proto, address }
                if (other_pipeline.as_str(), other.as_str()) != (pipeline, who) =>
            {
                format!(
                    "{who} listens on {proto} {address}, which {other} (pipeline `{other_pipeline}`) listens on too"
                )
            }
            _ => return Ok(()),
        };
        Err(source.error(user_span, message))
    }
}

/// Records that `who` uses the file at `path`; refuses a second user.
fn claim_file(
    files: &mut BTreeMap<PathBuf, String>,
    path: &Path,
    who: &str,
    source: &ConfigSource,
    span: std::ops::Range<usize>,
) -> Result<(), ConfigError> {
    // The same file by another name (`./x`, `d/../x`, a symlink) is the same key.
    let key = file_identity(path);
    if key.is_dir() {
        return Err(source.error(span, format!("{} is a directory", path.display())));
    }
    // The nearest folder that exists must be a folder (sinks create the rest).
    if let Some(blocker) = key
        .ancestors()
        .skip(1)
        .find(|a| a.exists())
        .filter(|a| !a.is_dir())
    {
        return Err(source.error(
            span,
            format!(
                "cannot create {}: {} is not a directory",
                path.display(),
                blocker.display()
            ),
        ));
    }
    if let Some(other) = files.get(&key).filter(|other| *other != who) {
        return Err(source.error(
            span,
            format!("{who} uses {}, which {other} uses too", path.display()),
        ));
    }
    files.insert(key, who.to_string());
    Ok(())
}

/// What a path names, for telling whether two paths are one file: the path with
/// symlinks, `.` and `..` resolved as far as it exists, the rest appended.
fn file_identity(path: &Path) -> PathBuf {
    let mut base = path.to_path_buf();
    let mut tail: Vec<std::ffi::OsString> = Vec::new();
    loop {
        let probe = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base.as_path()
        };
        if let Ok(mut real) = std::fs::canonicalize(probe) {
            for part in tail.iter().rev() {
                if part == ".." {
                    real.pop();
                } else if part != "." {
                    real.push(part);
                }
            }
            return real;
        }
        match base.file_name() {
            Some(name) => tail.push(name.to_owned()),
            None if base.ends_with("..") => tail.push("..".into()),
            None => return path.to_path_buf(),
        }
        base.pop();
    }
}

fn known<T>(map: &BTreeMap<String, T>) -> String {
    if map.is_empty() {
        "none".into()
    } else {
        map.keys()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The plugin files of a topology being built: each loaded once, with the
/// stages (processors and user-defined aggregates) that use it.
struct PluginLoad<'a> {
    host: &'a PluginHost,
    source: &'a ConfigSource,
    plugins_dir: &'a Path,
    /// Slots of the running topology (a config reload) to reuse.
    running: &'a [Arc<PluginSlot>],
    loaded: BTreeMap<PathBuf, Arc<PluginSlot>>,
    uses: BTreeMap<PathBuf, Vec<StageUse>>,
}

impl PluginLoad<'_> {
    /// Finds (or loads) the slot of the plugin file `file` names, checks it is a
    /// `world` component, configures one instance with `pairs` now (so that a
    /// config the plugin refuses is a config error, reported before anything
    /// starts) and records the use. Returns the slot and the stage label `label`
    /// makes.
    fn load(
        &mut self,
        file: &toml::Spanned<String>,
        world: World,
        label: impl FnOnce(&crate::wasm::plugin::Plugin) -> String,
        pipeline: &str,
        pairs: &[(String, String)],
        limits: Limits,
    ) -> Result<(Arc<PluginSlot>, String), ConfigError> {
        let at = self;
        let source = at.source;
        let written = Path::new(file.get_ref());
        let path = crate::wasm::stock::locate(config::resolve(at.plugins_dir, written), written);
        if !path.is_file() {
            let also = crate::wasm::stock::searched(written)
                .map(|folders| format!(" (nor in the stock plugin folders: {folders})"))
                .unwrap_or_default();
            return Err(source.error(
                file.span(),
                format!(
                    "plugin file not found: {}{also}; {}",
                    path.display(),
                    plugins_present(path.parent().unwrap_or(at.plugins_dir))
                ),
            ));
        }
        let slot = match at
            .loaded
            .get(&path)
            .or_else(|| at.running.iter().find(|s| s.path == path))
        {
            Some(slot) => slot.clone(),
            None => {
                let plugin = at
                    .host
                    .load(&path)
                    .map_err(|e| source.error(file.span(), format!("{e:#}")))?;
                PluginSlot::new(plugin)
            }
        };
        at.loaded.insert(path.clone(), slot.clone());
        let plugin = slot.current();
        // A keyed processor is a processor stage too.
        if plugin.world() != world && !(world == World::Processor && plugin.world() == World::Keyed)
        {
            let hint = match world {
                World::Processor => {
                    "processors = [ … ] takes sluice:plugin/processor components; use an aggregator in `aggregate = [{ op = \"wasm\", plugin = \"…\" }]`"
                }
                World::Aggregator => {
                    "`op = \"wasm\"` takes a sluice:plugin/aggregator component; use a processor in `processors = [ … ]`"
                }
                World::Keyed => "a keyed processor goes in `processors = [ … ]`",
            };
            return Err(source.error(
                file.span(),
                format!(
                    "{} is a {} component: {hint}",
                    path.display(),
                    plugin.world()
                ),
            ));
        }
        let label = label(&plugin);
        let fails = |e: crate::wasm::plugin::CallError| {
            source.error(
                file.span(),
                format!(
                    "plugin {} ({}) fails to start: {e}",
                    plugin.name, plugin.version
                ),
            )
        };
        let mut instance = plugin
            .instantiate(
                pairs,
                limits,
                LogTags {
                    pipeline: pipeline.to_string(),
                    stage: label.clone(),
                    plugin: plugin.name.clone(),
                    version: plugin.version.clone(),
                    partition: 0,
                },
            )
            .map_err(fails)?;
        if world == World::Aggregator {
            // The window operator calls `create` first thing: fail here, at
            // the config's line, rather than when the pipeline starts.
            instance.create().map_err(fails)?;
        }
        at.uses.entry(path).or_default().push(StageUse {
            pipeline: pipeline.to_string(),
            stage: label.clone(),
            config: pairs.to_vec(),
            limits,
        });
        Ok((slot, label))
    }
}

/// What a plugin folder holds, for a "plugin file not found" message: its
/// `.wasm` files (at most 20, by name), or that it is empty or missing.
fn plugins_present(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return format!(
            "the folder {} does not exist (set [daemon] plugins_dir, relative to the config file; a `${{NAME}}` in it is the environment variable's value)",
            dir.display()
        );
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wasm"))
        .collect();
    names.sort();
    match names.len() {
        0 => format!("{} holds no .wasm file", dir.display()),
        n if n > 20 => format!(
            "{} holds {n} .wasm files: {}, …",
            dir.display(),
            names[..20].join(", ")
        ),
        _ => format!("{} holds: {}", dir.display(), names.join(", ")),
    }
}
