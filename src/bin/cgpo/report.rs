//! `cgpo report RUN_DIR [RUN_DIR...] [--output FILE] [--steps 0,50,99]`:
//! one self-contained HTML file of the runs' metrics (curves per task with
//! the runs overlaid, the hacking monitor's alarms, sample responses);
//! by default `report.html` in the first run directory.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use cgpo::report::{write_report, ReportOptions};

#[derive(Args)]
pub struct ReportArgs {
    /// Run directories (each with a metrics.jsonl).
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Where to write the HTML (default: RUN_DIR/report.html of the first).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Steps whose sample responses are shown (default: first, middle, last).
    #[arg(long, value_delimiter = ',')]
    steps: Vec<u64>,
    /// Trailing mean over this many steps for training curves (1 = raw).
    #[arg(long, default_value_t = 5)]
    smooth: usize,
    /// The page's title.
    #[arg(long, default_value = "cgpo report")]
    title: String,
}

pub fn run(args: ReportArgs) -> cgpo::Result<ExitCode> {
    let out = args
        .output
        .unwrap_or_else(|| args.runs[0].join("report.html"));
    let opts = ReportOptions {
        title: args.title,
        sample_steps: args.steps,
        smooth: args.smooth.max(1),
    };
    let path = write_report(&args.runs, &out, &opts)?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
