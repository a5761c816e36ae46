//! The main job: CGPO's ablations on the built-in suite (`cgpo_suites::ablation`).
//!
//! SFT, one Bradley-Terry reward model per task and the DPO warm-up of
//! TinyLm (cached by seed under `<out>/warmup/`), then every run from that
//! start; a table per task (test split, with n and 95% intervals),
//! `<out>/summary.json`, each run's `<out>/runs/<run>-seed<s>/metrics.jsonl`
//! SVG plots of the dev curves in `<out>/plots/` and the HTML report of
//! every run (`cgpo report`) in `<out>/report.html`. `--check` verifies
//! the documented claims (`cgpo_suites::ablation::claims`) and fails when one
//! does not hold.
//!
//! ```sh
//! cargo run --release --example ablation
//! cargo run --release --example ablation -- --seeds 3
//! cargo run --release --example ablation -- --runs cgpo-crpg,pg-unconstrained --steps 100
//! cargo run --release --example ablation -- --seeds 3 --check
//! cargo run --release --example ablation -- --quick
//! cargo run --release --example ablation -- --from-summary runs/ablation/summary.json --check
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use cgpo_suites::ablation::runs::RunName;
use cgpo_suites::ablation::{run_ablation, AblationOptions, Summary};
use clap::Parser;

mod plots;

#[derive(Parser)]
#[command(about = "CGPO ablations on the built-in multi-task suite")]
struct Args {
    /// Runs, comma-separated (default: all): cgpo-crpg, cgpo-grpo,
    /// cgpo-codpo, cgpo-crraft, crpg-no-judges, pg-unconstrained,
    /// grpo-unconstrained, crpg-global-kl, crpg-raw-reward.
    #[arg(long, value_delimiter = ',')]
    runs: Vec<String>,
    /// Number of seeds (0, 1, ...).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Training steps per run (default: 60; 3 with --quick).
    #[arg(long)]
    steps: Option<u64>,
    /// A small model and a few steps: checks that everything runs (CI).
    #[arg(long)]
    quick: bool,
    /// Output directory (default: runs/ablation, runs/ablation-quick).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Check the documented claims on the reported split; exit 1 if one
    /// fails.
    #[arg(long)]
    check: bool,
    /// The split the tables report: test (default), or dev, which never
    /// scores the test prompts (for choosing settings; docs/evaluation.md).
    #[arg(long, default_value = "test")]
    split: String,
    /// Train nothing: report (tables, plots, --check) the summary.json of
    /// an earlier invocation.
    #[arg(long)]
    from_summary: Option<PathBuf>,
}

/// The summary an earlier invocation wrote.
fn read_summary(path: &std::path::Path) -> Result<Summary, cgpo::Error> {
    let text = std::fs::read_to_string(path).map_err(|e| cgpo::Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| usage("--from-summary", &format!("{}: {e}", path.display())))
}

fn usage(key: &str, message: &str) -> cgpo::Error {
    cgpo::Error::Config {
        key: key.into(),
        message: message.into(),
    }
}

fn options(args: &Args) -> Result<AblationOptions, cgpo::Error> {
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(if args.quick {
            "runs/ablation-quick"
        } else {
            "runs/ablation"
        })
    });
    let mut opts = if args.quick {
        AblationOptions::quick(out)
    } else {
        AblationOptions::new(out)
    };
    if !args.runs.is_empty() {
        opts.runs = args
            .runs
            .iter()
            .map(|r| RunName::parse(r.trim()))
            .collect::<Result<_, _>>()?;
    }
    if args.seeds == 0 {
        return Err(usage("--seeds", "must be >= 1"));
    }
    opts.seeds = (0..args.seeds).collect();
    if let Some(steps) = args.steps {
        if steps == 0 {
            return Err(usage("--steps", "must be >= 1"));
        }
        opts.settings.steps = steps;
    }
    opts.progress = true;
    opts.report_split = cgpo::split::Split::parse_eval(&args.split)
        .ok_or_else(|| usage("--split", "must be dev or test"))?;
    Ok(opts)
}

fn report(summary: &Summary, opts: &AblationOptions, seconds: f64) {
    for w in &summary.warmups {
        println!(
            "warm-up seed {} ({:.0} s{}) in {}",
            w.seed,
            w.seconds,
            if w.cached { ", cached" } else { "" },
            w.dir.display()
        );
        for (task, r) in &w.reward_reports {
            if summary.split == "test" {
                println!(
                    "  reward model {task:<7} test accuracy {:.3} [{:.3}, {:.3}] (n = {} pairs, {}), prefers the liked response on {:.3} [{:.3}, {:.3}] of {} test prompts",
                    r.test_accuracy,
                    r.test_accuracy_ci95[0],
                    r.test_accuracy_ci95[1],
                    r.test_pairs,
                    r.verdict(),
                    r.exploit_preferred,
                    r.exploit_preferred_ci95[0],
                    r.exploit_preferred_ci95[1],
                    r.exploit_prompts
                );
            } else {
                println!(
                    "  reward model {task:<7} dev accuracy {:.3} (test figures not shown with --split dev)",
                    r.dev_accuracy
                );
            }
        }
    }
    print!("{}", summary.table());
    print!("{}", summary.monitor_table());
    for r in &summary.runs {
        println!("{} seed {}: {:.0} s", r.name, r.seed, r.seconds);
    }
    println!(
        "total {seconds:.0} s; summary: {}",
        opts.out.join("summary.json").display()
    );
}

fn main() -> ExitCode {
    let args = Args::parse();
    let opts = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let t0 = Instant::now();
    let summary = match &args.from_summary {
        Some(path) => read_summary(path),
        None => run_ablation(&opts),
    };
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match plots::write_all(&summary, &opts.out.join("plots")) {
        Ok(files) => println!("{} plots in {}", files, opts.out.join("plots").display()),
        Err(e) => {
            eprintln!("error: plots: {e}");
            return ExitCode::FAILURE;
        }
    }
    report(&summary, &opts, t0.elapsed().as_secs_f64());
    // The HTML report of every run with metrics, next to summary.json.
    let dirs: Vec<PathBuf> = summary
        .runs
        .iter()
        .filter_map(|r| {
            let run = RunName::parse(&r.name).ok()?;
            let dir = cgpo_suites::ablation::run_dir(&opts.out, run, r.seed);
            dir.join("metrics.jsonl").exists().then_some(dir)
        })
        .collect();
    if !dirs.is_empty() {
        let options = cgpo::report::ReportOptions {
            title: "cgpo ablation".into(),
            ..Default::default()
        };
        match cgpo::report::write_report(&dirs, &opts.out.join("report.html"), &options) {
            Ok(path) => println!("report: {}", path.display()),
            Err(e) => {
                eprintln!("error: report: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if args.check {
        let checks = cgpo_suites::ablation::claims::check(&summary);
        println!("\nclaims ({} split):", summary.split);
        for c in &checks {
            println!("{c}");
        }
        if checks.iter().any(|c| !c.holds) {
            eprintln!("error: a documented claim does not hold");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
