//! `sluice tap`: prints a sample of the records passing a point of a running
//! daemon's pipeline, from its admin API (`GET /tap`), one JSON line each.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

/// The options of `sluice tap`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline (may be left out when the daemon runs one).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Where: `source`, `N` or `N:PLUGIN` (what stage N, from 0, output),
    /// `window`, `sink:NAME`, `dead_letter`.
    #[arg(long, default_value = "source")]
    pub at: String,
    /// Only this partition's records.
    #[arg(long)]
    pub partition: Option<usize>,
    /// Every N-th record: `N` or `1/N`.
    #[arg(long)]
    pub sample: Option<String>,
    /// Stop after this many records.
    #[arg(long)]
    pub limit: Option<u64>,
    /// At most this many records a second (default 100, at most 10000).
    #[arg(long)]
    pub max_records: Option<u64>,
    /// Stop after this long, e.g. `30s` (default 10m, at most 24h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// The admin API's address (`HOST:PORT`); default: the config's
    /// `[daemon] admin` with `--config`, else 127.0.0.1:9464.
    #[arg(long)]
    pub admin: Option<String>,
    /// Read the admin address from this config file.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// A file holding the token for a daemon on another machine
    /// (`[daemon] admin_token_file` there).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// Prints the tapped lines until the limit, the duration, or the daemon ends
/// the stream; exit 1 when the daemon cannot be reached or refuses the tap.
pub fn main(args: Args) -> ExitCode {
    let addr = match super::top::top_address(args.admin.clone(), args.config.as_deref()) {
        Ok((addr, _)) => addr,
        Err(code) => return code,
    };
    match run(&addr, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn run(addr: &str, args: &Args) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut query = vec![format!("at={}", encode(&args.at))];
    if let Some(p) = &args.pipeline {
        query.push(format!("pipeline={}", encode(p)));
    }
    if let Some(p) = args.partition {
        query.push(format!("partition={p}"));
    }
    if let Some(s) = &args.sample {
        query.push(format!("sample={}", encode(s)));
    }
    if let Some(l) = args.limit {
        query.push(format!("limit={l}"));
    }
    if let Some(m) = args.max_records {
        query.push(format!("max_records={m}"));
    }
    if let Some(d) = args.duration {
        query.push(format!("seconds={}", d.as_secs().max(1)));
    }
    let url = format!("http://{addr}/tap?{}", query.join("&"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(std::time::Duration::from_secs(5)))
        .build()
        .into();
    let mut request = agent.get(&url);
    if let Some(file) = &args.token_file {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        request = request.header(
            "Authorization",
            format!("Bearer {}", token.lines().next().unwrap_or_default().trim()),
        );
    }
    let mut response = request
        .call()
        .with_context(|| format!("cannot reach the admin API at {addr}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.body_mut().read_to_string().unwrap_or_default();
        anyhow::bail!("GET /tap: {status}: {}", text.trim());
    }
    let reader = std::io::BufReader::new(response.into_body().into_reader());
    let mut stdout = std::io::stdout().lock();
    for line in reader.lines() {
        let line = line.context("the tap's stream broke")?;
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The reader went away (`| head`): done.
            return Ok(());
        }
    }
    Ok(())
}
