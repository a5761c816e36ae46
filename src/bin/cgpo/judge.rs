//! `cgpo judge --judge NAME [--judge NAME ...] --input samples.jsonl [--output out.jsonl]`
//!
//! Each input line is `{"id", "prompt", "response", "metadata"}`; each output
//! line is `{"id", "passed", "verdicts": [{"judge", "verdict", "reason"}]}`,
//! in input order. A per-judge summary goes to stderr, with a progress bar
//! on a terminal. `--config judges.json` (`{"judges": [{"name", "label"?,
//! "params"?}], "judge_errors"?: "violation" | "drop"}`) replaces the flags
//! when judges need parameters. The output file is written through a
//! temporary file and renamed at the end, so it is never half-written.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cgpo::data::{parse_samples, Sample};
use cgpo::judges::{
    ErrorPolicy, JudgeRegistry, JudgeSpec, JudgeStats, MixtureOfJudges, Outcome, Verdict,
};
use cgpo::Error;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::{json, Value};

/// Samples judged per call, so the progress bar moves on large inputs.
const CHUNK: usize = 256;

#[derive(Args)]
pub struct JudgeArgs {
    /// A built-in judge with default parameters (repeatable): math, ifeval, code, refusal, regex, length, llm.
    #[arg(long = "judge", value_name = "NAME")]
    judges: Vec<String>,
    /// A judge config file (JSON) instead of --judge flags.
    #[arg(long, conflicts_with = "judges")]
    config: Option<PathBuf>,
    /// Samples: one `{"id", "prompt", "response", "metadata"}` object per line.
    #[arg(long)]
    input: PathBuf,
    /// Where to write verdicts (default: standard output).
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JudgeConfig {
    judges: Vec<JudgeSpec>,
    #[serde(default)]
    judge_errors: ErrorPolicy,
}

fn load_config(args: &JudgeArgs) -> cgpo::Result<JudgeConfig> {
    match &args.config {
        Some(path) => cgpo::config::read_config_file(path, cgpo::config::parse_json),
        None if args.judges.is_empty() => Err(Error::Config {
            key: "--judge".into(),
            message: "give at least one --judge NAME, or --config FILE".into(),
        }),
        None => Ok(JudgeConfig {
            judges: args
                .judges
                .iter()
                .map(|n| JudgeSpec::new(n.clone(), json!({})))
                .collect(),
            judge_errors: ErrorPolicy::default(),
        }),
    }
}

pub fn run(args: JudgeArgs) -> cgpo::Result<ExitCode> {
    let config = load_config(&args)?;
    let registry = JudgeRegistry::with_builtins();
    let judges = config
        .judges
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            registry.build(spec).map_err(|e| Error::Config {
                key: format!("judges[{i}]"),
                message: e.to_string(),
            })
        })
        .collect::<cgpo::Result<Vec<_>>>()?;
    let mixture = MixtureOfJudges::new(judges)?.with_error_policy(config.judge_errors);

    let text = std::fs::read_to_string(&args.input).map_err(|e| Error::Io {
        path: args.input.clone(),
        source: e,
    })?;
    let samples = parse_samples(&text, &args.input)?;

    let mut out = Output::open(args.output.as_deref())?;
    let progress = ProgressBar::new(samples.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} samples, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut totals: Vec<JudgeStats> = Vec::new();
    let mut passed = 0;
    for chunk in samples.chunks(CHUNK) {
        let views: Vec<_> = chunk.iter().map(Sample::view).collect();
        let report = mixture.judge(&views);
        if totals.is_empty() {
            totals = report.stats.clone();
        } else {
            totals
                .iter_mut()
                .zip(&report.stats)
                .for_each(|(t, s)| t.merge(s));
        }
        for (sample, judgement) in chunk.iter().zip(&report.samples) {
            let ok = judgement.outcome == Outcome::Satisfied;
            passed += usize::from(ok);
            let verdicts: Vec<Value> = mixture
                .names()
                .zip(&judgement.verdicts)
                .map(|(name, v)| {
                    let (verdict, reason) = match v {
                        Verdict::Pass => ("pass", None),
                        Verdict::Fail(r) => ("fail", Some(r)),
                        Verdict::Error(m) => ("error", Some(m)),
                    };
                    json!({"judge": name, "verdict": verdict, "reason": reason})
                })
                .collect();
            out.line(&json!({"id": sample.record.id, "passed": ok, "verdicts": verdicts}))?;
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    out.finish()?;

    eprintln!(
        "{:<16} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "judge", "pass", "fail", "error", "pass %", "seconds"
    );
    for s in &totals {
        eprintln!(
            "{:<16} {:>8} {:>8} {:>8} {:>8.1} {:>10.3}",
            s.name,
            s.pass,
            s.fail,
            s.error,
            100.0 * s.pass_rate().unwrap_or(0.0),
            s.elapsed.as_secs_f64()
        );
    }
    eprintln!("{passed} of {} samples passed every judge", samples.len());
    Ok(ExitCode::SUCCESS)
}

/// Standard output, or a file written through `<file>.partial` + rename.
enum Output {
    Stdout(std::io::StdoutLock<'static>),
    File {
        tmp: PathBuf,
        path: PathBuf,
        writer: BufWriter<File>,
    },
}

impl Output {
    fn open(path: Option<&Path>) -> cgpo::Result<Self> {
        Ok(match path {
            None => Output::Stdout(std::io::stdout().lock()),
            Some(path) => {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(".partial");
                let tmp = path.with_file_name(name);
                let file = File::create(&tmp).map_err(|e| Error::Io {
                    path: tmp.clone(),
                    source: e,
                })?;
                Output::File {
                    tmp,
                    path: path.to_path_buf(),
                    writer: BufWriter::new(file),
                }
            }
        })
    }

    fn line(&mut self, value: &Value) -> cgpo::Result<()> {
        match self {
            Output::Stdout(s) => writeln!(s, "{value}").map_err(|e| Error::Io {
                path: "<stdout>".into(),
                source: e,
            }),
            Output::File { tmp, writer, .. } => {
                writeln!(writer, "{value}").map_err(|e| Error::Io {
                    path: tmp.clone(),
                    source: e,
                })
            }
        }
    }

    fn finish(self) -> cgpo::Result<()> {
        match self {
            Output::Stdout(mut s) => s.flush().map_err(|e| Error::Io {
                path: "<stdout>".into(),
                source: e,
            }),
            Output::File { tmp, path, writer } => {
                let file = writer.into_inner().map_err(|e| Error::Io {
                    path: tmp.clone(),
                    source: e.into_error(),
                })?;
                file.sync_all().map_err(|e| Error::Io {
                    path: tmp.clone(),
                    source: e,
                })?;
                std::fs::rename(&tmp, &path).map_err(|e| Error::Io { path, source: e })
            }
        }
    }
}
