//! Plays an ads-record recording back as a vehicle (see `ads_record::replay`).

use anyhow::Context as _;
use clap::Parser as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Debug, clap::Parser)]
#[command(name = "ads-replay", version, about = "Play an ads recording back as a vehicle, for viewers")]
struct Args {
    /// The recording (ads-record's MCAP).
    recording: PathBuf,
    /// Where to publish, like the vehicle's PUB socket.
    #[arg(long, default_value = "tcp://127.0.0.1:5557")]
    broadcast: String,
    /// Where viewers take frames, like the vehicle's video socket.
    #[arg(long, default_value = "tcp://127.0.0.1:5559")]
    video_endpoint: String,
    /// Where to take actions (pause, resume, respawn = seek), like the vehicle's.
    #[arg(long, default_value = "tcp://127.0.0.1:5558")]
    actions: String,
    /// Vehicle id in every envelope.
    #[arg(long, default_value = "replay")]
    vehicle_id: String,
    /// Playback speed: 1 = as recorded, 2 = twice as fast.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Start again at the end.
    #[arg(long = "loop")]
    looping: bool,
    /// Key file actions must be signed with (as the vehicle's); without one, actions are taken
    /// from this machine only.
    #[arg(long)]
    action_key: Option<PathBuf>,
}

fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.speed.is_finite() && args.speed > 0.0 && args.speed <= 100.0,
        "--speed must be in (0, 100], got {}",
        args.speed
    );
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing the signal handler")?;
    }
    let options = ads_record::replay::ReplayOptions {
        broadcast: args.broadcast,
        video: args.video_endpoint,
        actions: args.actions,
        vehicle_id: args.vehicle_id,
        speed: args.speed,
        looping: args.looping,
        key: args.action_key.as_deref().map(ads_protocol::ActionKey::load).transpose()?,
    };
    ads_record::replay::replay(&args.recording, &options, &stop)
        .with_context(|| format!("replaying {}", args.recording.display()))?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    ads_service::init_tracing();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ads-replay: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
