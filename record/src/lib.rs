//! ads-record: every topic of a vehicle into MCAP files that Foxglove, Lichtblick and any MCAP
//! reader open; the recovery of a file whose recorder was killed.
//!
//! Network code lives only in [`subscribe`]; [`channels`] maps messages to MCAP channels,
//! [`sink`] writes and rotates files, [`recorder`] runs the loop, [`recover`] rewrites the
//! index of a truncated file.

pub mod channels;
pub mod recorder;
pub mod recover;
pub mod sink;
pub mod subscribe;

use anyhow::Context as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Parser)]
#[command(name = "ads-record", version, about = "Record an ads vehicle's stream to MCAP")]
pub struct Args {
    /// The vehicle's PUB endpoint.
    #[arg(long, env = "ADS_RECORD_VEHICLE", default_value = "tcp://127.0.0.1:5557")]
    pub vehicle: String,
    /// Output file (with rotation, the pattern: drive.mcap → drive-0000.mcap, …).
    #[arg(short, long, default_value = "drive.mcap")]
    pub output: PathBuf,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Start a new file after this many MB.
    #[arg(long)]
    pub rotate_mb: Option<f64>,
    /// Start a new file after this many seconds.
    #[arg(long)]
    pub rotate_secs: Option<f64>,
    /// End the current chunk at least this often (ms): what a crash can lose.
    #[arg(long, default_value_t = 1000)]
    pub flush_ms: u64,
    /// Rewrite the index of a recording whose recorder was killed (or whose disk filled),
    /// reading it up to its last whole chunk, into --output.
    #[arg(long, value_name = "FILE")]
    pub recover: Option<PathBuf>,
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn seconds(what: &str, value: Option<f64>) -> anyhow::Result<Option<Duration>> {
    value
        .map(|s| {
            anyhow::ensure!(
                s.is_finite() && s > 0.0,
                "--{what} must be a positive number of seconds, got {s}"
            );
            Ok(Duration::from_secs_f64(s))
        })
        .transpose()
}

/// Prints one JSON line per progress report on stdout (the tests and scripts read them).
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(input) = &args.recover {
        anyhow::ensure!(input != &args.output, "--recover writes a new file: give a different --output");
        let report = recover::recover(input, &args.output)
            .with_context(|| format!("recovering {}", input.display()))?;
        println!("{}", serde_json::json!({ "event": "recovered", "report": report }));
        return Ok(());
    }
    let rotate_bytes = args
        .rotate_mb
        .map(|mb| {
            anyhow::ensure!(mb.is_finite() && mb > 0.0, "--rotate-mb must be positive, got {mb}");
            Ok((mb * 1e6) as u64)
        })
        .transpose()?;
    anyhow::ensure!(args.flush_ms > 0, "--flush-ms must be positive");
    let options = recorder::RecordOptions {
        vehicle: args.vehicle.clone(),
        sink: sink::SinkOptions {
            path: args.output.clone(),
            rotate_bytes,
            rotate_every: seconds("rotate-secs", args.rotate_secs)?,
            flush_every: Duration::from_millis(args.flush_ms),
        },
        duration: seconds("duration", args.duration)?,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing the signal handler")?;
    }
    tracing::info!(vehicle = %options.vehicle, "recording");
    let report = recorder::record(&options, &stop, |progress| {
        println!("{}", serde_json::json!({ "event": "progress", "progress": progress }));
    })?;
    println!("{}", serde_json::json!({ "event": "stopped", "report": report }));
    Ok(())
}
