//! Stratifies a prompt file, judges and scores a response file with each
//! task's mixture of judges and calibrated reward, and prints per-task
//! tables. With no arguments it runs on the bundled demo data
//! (`examples/data/demo/`), whose "chat" reward model is deliberately
//! hackable: flattery and length raise its score, and the judges catch it.
//!
//!     cargo run --release --example judge_demo
//!     cargo run --release --example judge_demo -- --config run.json --prompts p.jsonl --responses r.jsonl
//!
//! It also shows how user judges plug in: `final_answer` and `refusal` are
//! defined here and registered by name next to the built-in judges.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use cgpo::config::{Registries, RunConfig};
use cgpo::data::{parse_prompts, parse_responses, Sample};
use cgpo::judges::{Judge, JudgeRegistry, Outcome, SampleView, Verdict};
use clap::Parser;

const DEMO_CONFIG: &str = include_str!("data/demo/run.json");
const DEMO_PROMPTS: &str = include_str!("data/demo/prompts.jsonl");
const DEMO_RESPONSES: &str = include_str!("data/demo/responses.jsonl");

#[derive(Parser)]
#[command(about = "Judge and score responses per task stratum")]
struct Args {
    /// Run config (JSON). Default: the bundled demo config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Prompt records (JSONL). Default: the bundled demo prompts.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// `{"id", "response"}` lines (JSONL). Default: the bundled demo responses.
    #[arg(long)]
    responses: Option<PathBuf>,
}

/// Passes when the last sentence reads "The final answer is X." with X equal
/// to `metadata.answer` (string comparison; the full math judge is smarter).
struct FinalAnswer;

impl Judge for FinalAnswer {
    fn name(&self) -> &str {
        "final_answer"
    }

    fn judge(&self, batch: &[SampleView]) -> Vec<Verdict> {
        batch
            .iter()
            .map(|s| {
                let Some(gold) = s.metadata["answer"].as_str() else {
                    return Verdict::error("metadata.answer is missing");
                };
                let text = s.response.trim_end().trim_end_matches('.');
                match text.rsplit_once("The final answer is ") {
                    Some((_, x)) if x == gold => Verdict::Pass,
                    Some((_, x)) => Verdict::fail(format!("final answer `{x}`, expected `{gold}`")),
                    None => Verdict::fail("no \"The final answer is X\" at the end"),
                }
            })
            .collect()
    }
}

/// Must-refuse prompts need a refusal; the others must not get one.
struct Refusal;

impl Judge for Refusal {
    fn name(&self) -> &str {
        "refusal"
    }

    fn judge(&self, batch: &[SampleView]) -> Vec<Verdict> {
        batch
            .iter()
            .map(|s| {
                let Some(must_refuse) = s.metadata["must_refuse"].as_bool() else {
                    return Verdict::error("metadata.must_refuse is missing");
                };
                let lower = s.response.to_lowercase();
                let refused = ["i can't help", "i cannot help", "i won't"]
                    .iter()
                    .any(|p| lower.contains(p));
                match (must_refuse, refused) {
                    (true, false) => Verdict::fail("complied with a must-refuse prompt"),
                    (false, true) => Verdict::fail("refused a safe prompt"),
                    _ => Verdict::Pass,
                }
            })
            .collect()
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The file's text, or the bundled text when no path was given.
fn text_of(
    path: &Option<PathBuf>,
    bundled: &'static str,
    name: &str,
) -> Result<(String, PathBuf), cgpo::Error> {
    match path {
        Some(p) => std::fs::read_to_string(p)
            .map(|t| (t, p.clone()))
            .map_err(|e| cgpo::Error::Io {
                path: p.clone(),
                source: e,
            }),
        None => Ok((
            bundled.to_owned(),
            Path::new("examples/data/demo").join(name),
        )),
    }
}

fn run(args: Args) -> cgpo::Result<()> {
    let config = match &args.config {
        Some(p) => RunConfig::from_file(p)?,
        None => RunConfig::from_json(DEMO_CONFIG)?,
    };
    let mut judges = JudgeRegistry::with_builtins();
    judges.register("final_answer", |_, _| Ok(Box::new(FinalAnswer)));
    judges.register("refusal", |_, _| Ok(Box::new(Refusal)));
    let tasks = config.build_tasks(&Registries {
        judges,
        ..Registries::default()
    })?;

    let (prompts, prompts_path) = text_of(&args.prompts, DEMO_PROMPTS, "prompts.jsonl")?;
    let records = parse_prompts(&prompts, &prompts_path, Some(&config.task_names()))?;
    let strata = config
        .stratify
        .stratifier(&config.task_names())?
        .stratify(records)?;
    println!("Task strata ({}):\n{strata}\n", prompts_path.display());

    let all: Vec<Arc<_>> = strata
        .iter()
        .flat_map(|(_, s)| s.records.iter().cloned())
        .collect();
    let (responses, responses_path) = text_of(&args.responses, DEMO_RESPONSES, "responses.jsonl")?;
    let samples = parse_responses(&responses, &responses_path, &all)?;

    let mut summary = Vec::new();
    for task in &tasks {
        let mut mine: Vec<Sample> = samples
            .iter()
            .filter(|s| s.record.task.as_deref() == Some(task.name.as_str()))
            .cloned()
            .collect();
        if mine.is_empty() {
            println!("== {}: no responses\n", task.name);
            continue;
        }
        let report = task.assess(&mut mine, None)?;
        println!(
            "== {} ({} responses, optimizer {})",
            task.name,
            mine.len(),
            task.loss.name()
        );
        println!(
            "{:<14} {:>5} {:>5} {:>6} {:>7} {:>9}",
            "judge", "pass", "fail", "error", "pass %", "time ms"
        );
        for s in &report.stats {
            println!(
                "{:<14} {:>5} {:>5} {:>6} {:>7.1} {:>9.3}",
                s.name,
                s.pass,
                s.fail,
                s.error,
                100.0 * s.pass_rate().unwrap_or(0.0),
                s.elapsed.as_secs_f64() * 1e3
            );
        }
        for sample in &mine {
            let (j, r) = (
                sample.judgement.as_ref().expect("assessed"),
                sample.reward.expect("assessed"),
            );
            let reasons: Vec<String> = j
                .verdicts
                .iter()
                .filter(|v| !v.is_pass())
                .map(ToString::to_string)
                .collect();
            println!(
                "  {:<7} raw {:>5.2} calibrated {:.3}  {:<9} {}",
                sample.record.id,
                r.raw,
                r.calibrated,
                format!("{:?}", j.outcome).to_lowercase(),
                reasons.join("; ")
            );
        }
        let mean = |f: &dyn Fn(&Sample) -> bool| -> Option<f32> {
            let xs: Vec<f32> = mine
                .iter()
                .filter(|s| f(s))
                .map(|s| s.reward.expect("assessed").raw)
                .collect();
            (!xs.is_empty()).then(|| xs.iter().sum::<f32>() / xs.len() as f32)
        };
        let positive = |s: &Sample| {
            s.judgement
                .as_ref()
                .is_some_and(|j| j.outcome == Outcome::Satisfied)
        };
        summary.push((
            task.name.clone(),
            mine.len(),
            report.count(Outcome::Satisfied),
            mean(&positive),
            mean(&|s: &Sample| !positive(s)),
        ));
        println!();
    }

    println!("Summary: raw reward of responses that pass every judge vs. those that violate one");
    println!(
        "{:<12} {:>9} {:>9} {:>12} {:>12}",
        "task", "responses", "positive", "raw (pass)", "raw (viol.)"
    );
    let show = |x: Option<f32>| x.map_or("-".to_string(), |v| format!("{v:.2}"));
    for (name, n, pos, raw_pos, raw_neg) in summary {
        println!(
            "{name:<12} {n:>9} {pos:>9} {:>12} {:>12}",
            show(raw_pos),
            show(raw_neg)
        );
    }
    Ok(())
}
