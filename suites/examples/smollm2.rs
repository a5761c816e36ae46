//! CGPO on SmolLM2-135M-Instruct, end to end on the CPU: three tasks of
//! generated prompts (IFEval-style instructions, arithmetic word problems,
//! harmless requests that must not be refused), each with its judges, the
//! model's own LLM-judge reward, evaluation on the test split (or dev) before and after.
//! See `docs/smollm2.md` and [`cgpo_suites::instruct`].
//!
//! ```text
//! cargo run --release --example smollm2 -- --model "$(scripts/fetch-smollm2.sh)"
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use cgpo_suites::instruct::{run, InstructOptions};
use clap::Parser;

#[derive(Parser)]
#[command(about = "CGPO on SmolLM2-135M-Instruct: three tasks, judges, test split before/after")]
struct Args {
    /// The GGUF file (default: where scripts/fetch-smollm2.sh caches it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "runs/smollm2")]
    out: PathBuf,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Evaluate every this many steps (default: only before and after).
    #[arg(long)]
    eval_every: Option<u64>,
    /// The split evaluated before and after: `dev` while choosing
    /// settings, `test` (the default) once per configuration; see
    /// docs/evaluation.md.
    #[arg(long, default_value = "test")]
    split: String,
    /// Two tiny steps (a smoke test).
    #[arg(long)]
    quick: bool,
    /// Each task's optimizer, in the order instruction,math,helpful
    /// (crpg, crraft or codpo).
    #[arg(long, value_delimiter = ',')]
    optimizers: Option<Vec<String>>,
    /// Each task's weight in the gradient merge, same order.
    #[arg(long, value_delimiter = ',')]
    weights: Option<Vec<f64>>,
    /// Keep freed memory in the process's heap (no page faults on the
    /// next [N, V] temporaries; the resident size stays at its peak).
    #[arg(long)]
    retain_host_memory: bool,
    /// Do not write policy.safetensors.
    #[arg(long)]
    no_save: bool,
}

fn usage(message: String) -> ExitCode {
    eprintln!("error: {message} (one per task: instruction,math,helpful)");
    ExitCode::from(2)
}

fn default_model() -> PathBuf {
    let cache = std::env::var_os("CGPO_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/cgpo")
        });
    cache.join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.retain_host_memory {
        cgpo::ops::retain_freed_host_memory();
    }
    let model = args.model.unwrap_or_else(default_model);
    let mut opts = if args.quick {
        InstructOptions::quick(model, args.out)
    } else {
        InstructOptions::new(model, args.out)
    };
    opts.progress = true;
    match cgpo_suites::instruct::prompts::Split::parse_eval(&args.split) {
        Some(split) => {
            if !args.quick {
                opts.eval_prompts = InstructOptions::eval_prompts_for(split);
            }
            opts.eval_split = split;
        }
        None => {
            eprintln!("error: --split must be dev or test, got `{}`", args.split);
            return ExitCode::from(2);
        }
    }
    opts.steps = args.steps.unwrap_or(opts.steps);
    opts.seed = args.seed.unwrap_or(opts.seed);
    opts.learning_rate = args.learning_rate.unwrap_or(opts.learning_rate);
    opts.eval_every = args.eval_every.unwrap_or(opts.steps);
    opts.save_policy &= !args.no_save;
    if let Some(o) = args.optimizers {
        match <[String; 3]>::try_from(o) {
            Ok(o) => opts.optimizers = o,
            Err(o) => return usage(format!("--optimizers needs 3 names, got {}", o.len())),
        }
    }
    if let Some(w) = args.weights {
        match <[f64; 3]>::try_from(w) {
            Ok(w) => opts.weights = w,
            Err(w) => return usage(format!("--weights needs 3 numbers, got {}", w.len())),
        }
    }
    eprintln!(
        "SmolLM2 CGPO: {} steps, model {}, output {}",
        opts.steps,
        opts.model.display(),
        opts.out.display()
    );
    match run(&opts) {
        Ok(summary) => {
            print!("{}", summary.table());
            println!("summary: {}", opts.out.join("summary.json").display());
            // The HTML report (curves, alarms, samples) next to summary.json.
            let report = cgpo::report::ReportOptions {
                title: "cgpo on SmolLM2-135M-Instruct".into(),
                ..Default::default()
            };
            match cgpo::report::write_report(
                std::slice::from_ref(&opts.out),
                &opts.out.join("report.html"),
                &report,
            ) {
                Ok(path) => println!("report: {}", path.display()),
                Err(e) => {
                    eprintln!("error: report: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
