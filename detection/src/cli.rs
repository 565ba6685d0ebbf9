//! Command line: run the detector (default), or evaluate it.

use crate::eval::{run_eval, run_footage, EvalArgs, FootageArgs};
use crate::run::{run, RunArgs};

#[derive(Debug, clap::Parser)]
#[command(
    name = "ads-detection",
    version,
    about = "Lane and object detection on frames from the vehicle's ring"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Cmd>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Score the cv lane detector against the simulator's ground truth (TuSimple metric).
    Eval(EvalArgs),
    /// Run the cv lane detector over every frame of the real dashcam videos (no labels).
    EvalFootage(FootageArgs),
}

/// Runs what `args` asks for.
pub fn main_with(args: Args) -> anyhow::Result<()> {
    match args.command {
        None => run(&args.run),
        Some(Cmd::Eval(a)) => run_eval(&a).map(drop),
        Some(Cmd::EvalFootage(a)) => run_footage(&a).map(drop),
    }
}
