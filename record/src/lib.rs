//! ads-record: every topic of a vehicle into MCAP files that Foxglove, Lichtblick and any MCAP
//! reader open; the recovery of a file whose recorder was killed.
//!
//! Network code lives only in [`subscribe`]; [`channels`] maps messages to MCAP channels,
//! [`sink`] writes and rotates files, [`recorder`] runs the loop, [`recover`] rewrites the
//! index of a truncated file, [`export`] turns a drive into training data (a Donkey tub, CSV).

pub mod channels;
pub mod compare;
pub mod export;
pub mod frames;
pub mod recorder;
pub mod recover;
pub mod replay;
pub mod sink;
pub mod subscribe;

use anyhow::Context as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Parser)]
#[command(
    name = "ads-record",
    version,
    about = "Record an ads vehicle's stream to MCAP",
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Subcommand>,
    /// The vehicle's PUB endpoint.
    #[arg(long, env = "ADS_RECORD_VEHICLE", default_value = "tcp://127.0.0.1:5557")]
    pub vehicle: String,
    /// The vehicle's video socket [default: the one its states advertise, on the host of
    /// --vehicle].
    #[arg(long, env = "ADS_RECORD_VIDEO")]
    pub video: Option<String>,
    /// Output file (with rotation, the pattern: drive.mcap → drive-0000.mcap, …) [default:
    /// drive.mcap; with --recover: the recovered file itself, rewritten in place].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
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
    /// reading it up to its last whole chunk, into --output (without it: in place, replacing
    /// FILE only once the complete copy is on disk).
    #[arg(long, value_name = "FILE")]
    pub recover: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Compare the detections of a replay through the detector with those recorded live;
    /// prints the figures and a verdict, exits 1 on FAIL.
    Compare {
        /// The recording of the live drive.
        baseline: PathBuf,
        /// A recording of `ads-vehicle --source recording --path BASELINE` with a detector.
        candidate: PathBuf,
        /// Largest 95th-percentile lane offset difference, m.
        #[arg(long, default_value_t = 0.10)]
        offset_tolerance_m: f64,
        /// Largest share of frames that may differ in lines found or object count.
        #[arg(long, default_value_t = 0.05)]
        mismatch_share: f64,
        /// Fewest frames with detections in both.
        #[arg(long, default_value_t = 20)]
        min_frames: usize,
    },
    /// Write a recorded drive as training data: each frame's JPEG with its label (the
    /// `/controls` record of its frame id), as a Donkey Car tub or as CSV; prints a JSON report.
    Export {
        /// donkey: a Donkey Car tub (v2) that `donkey train` reads; csv: labels.csv + images/.
        #[arg(long, value_enum)]
        format: export::Format,
        /// The directory to write (created; if it exists it must be empty).
        #[arg(long)]
        out: PathBuf,
        /// operator: the operator's command where the car drove on it (manual, assist's
        /// throttle), else what the loop commanded; commanded: what went to the car, always.
        #[arg(long, value_enum, default_value_t = export::LabelChoice::Operator)]
        label: export::LabelChoice,
        /// Leave out frames not labelled by the operator (autopilot, holds, lapsed leases).
        #[arg(long)]
        operator_only: bool,
        /// The recording (.mcap).
        input: PathBuf,
    },
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
    if let Some(Subcommand::Compare { baseline, candidate, offset_tolerance_m, mismatch_share, min_frames }) =
        &args.command
    {
        let read = |path: &PathBuf| {
            let drive = frames::read_drive(path).with_context(|| format!("reading {}", path.display()))?;
            if let Some(why) = &drive.truncated {
                tracing::warn!("{} is truncated ({why}); comparing what it holds", path.display());
            }
            anyhow::Ok(drive)
        };
        let tolerances = compare::Tolerances {
            offset_p95_m: *offset_tolerance_m,
            mismatch_share: *mismatch_share,
            min_frames: *min_frames,
        };
        let result = compare::compare(&read(baseline)?, &read(candidate)?, &tolerances);
        println!("{}", serde_json::json!({ "event": "comparison", "comparison": result }));
        println!(
            "{}: {} frames compared; lane offset difference mean {:.3} m, p95 {:.3} m, max {:.3} m; \
             lines found differ in {}, object count in {}",
            if result.pass { "PASS" } else { "FAIL" },
            result.frames_compared,
            result.offset_diff_mean_m,
            result.offset_diff_p95_m,
            result.offset_diff_max_m,
            result.lines_found_mismatches,
            result.object_count_mismatches,
        );
        anyhow::ensure!(result.pass, "the detections differ: {}", result.failures.join("; "));
        return Ok(());
    }
    if let Some(Subcommand::Export { format, out, label, operator_only, input }) = &args.command {
        let options = export::ExportOptions {
            format: *format,
            out: out.clone(),
            label: *label,
            operator_only: *operator_only,
        };
        let report = export::export(input, &options)
            .with_context(|| format!("exporting {} to {}", input.display(), out.display()))?;
        if let Some(why) = &report.truncated {
            tracing::warn!("{} is truncated ({why}); exported what it holds", input.display());
        }
        println!("{}", serde_json::json!({ "event": "exported", "report": report }));
        return Ok(());
    }
    if let Some(input) = &args.recover {
        let report = match &args.output {
            Some(output) => {
                anyhow::ensure!(
                    input != output,
                    "--recover -o writes a new file: give a different --output, or none to recover in place"
                );
                recover::recover(input, output)
            }
            None => recover::recover_in_place(input),
        }
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
        video: args.video.clone(),
        sink: sink::SinkOptions {
            path: args.output.clone().unwrap_or_else(|| PathBuf::from("drive.mcap")),
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
