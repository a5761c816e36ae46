//! `cgpo report`: one self-contained HTML file of one or more runs'
//! metrics (docs/monitoring.md). Per task, the curves of every run
//! overlaid (pass rate in training and on held-out prompts, raw and
//! calibrated reward, KL, response length and truncation, entropy, each
//! judge's violation rate, the gradient's cosine to the merge), the
//! hacking monitor's alarms marked on them and listed with their evidence,
//! and sample responses at chosen steps. Charts are inline SVG and the
//! page loads nothing from the network.
//!
//! ```no_run
//! use cgpo::report::{write_report, ReportOptions};
//! let path = write_report(&["runs/cgpo".into()], "runs/cgpo/report.html".as_ref(), &ReportOptions::default())?;
//! println!("{}", path.display());
//! # Ok::<(), cgpo::Error>(())
//! ```

pub mod chart;
pub mod runs;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chart::{Chart, Series};
pub use runs::{read_run, EvalLine, RunData, SamplesLine};

use crate::error::{Error, Result};
use crate::train::monitor::Example;
use crate::train::TaskMetrics;

/// How the report is drawn.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub title: String,
    /// Steps whose sample responses are shown (the nearest logged step of
    /// each run); empty: the first, the middle and the last.
    pub sample_steps: Vec<u64>,
    /// Training curves are trailing means over this many steps (1 = raw).
    pub smooth: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            title: "cgpo report".into(),
            sample_steps: Vec::new(),
            smooth: 5,
        }
    }
}

/// Reads every run directory and writes the report to `out`.
pub fn write_report(dirs: &[PathBuf], out: &Path, opts: &ReportOptions) -> Result<PathBuf> {
    if dirs.is_empty() {
        return Err(Error::config("RUN_DIR", "give at least one run directory"));
    }
    let mut runs = dirs
        .iter()
        .map(|d| read_run(d))
        .collect::<Result<Vec<_>>>()?;
    disambiguate(&mut runs);
    let html = render(&runs, opts)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = out.with_extension("html.tmp");
    std::fs::write(&tmp, html).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    Ok(out.to_path_buf())
}

/// Two runs with the same directory name get their parent's name too.
fn disambiguate(runs: &mut [RunData]) {
    let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    for run in runs.iter_mut() {
        if names.iter().filter(|n| **n == run.name).count() > 1 {
            if let Some(parent) = run.dir.parent().and_then(|p| p.file_name()) {
                run.name = format!("{}/{}", parent.to_string_lossy(), run.name);
            }
        }
    }
}

/// `name` without a trailing `-seedN`: the seeds of one run share a colour.
fn family(name: &str) -> &str {
    match name.rfind("-seed") {
        Some(i) if name[i + 5..].chars().all(|c| c.is_ascii_digit()) && i + 5 < name.len() => {
            &name[..i]
        }
        _ => name,
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Trailing mean over `w` points.
fn smooth(points: Vec<(f64, f64)>, w: usize) -> Vec<(f64, f64)> {
    if w <= 1 {
        return points;
    }
    (0..points.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(w);
            let window = &points[from..=i];
            let mean = window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64;
            (points[i].0, mean)
        })
        .collect()
}

/// A training curve: `(what it shows, y label, fixed range, value of a line)`.
type Metric = (
    &'static str,
    &'static str,
    Option<(f64, f64)>,
    fn(&TaskMetrics) -> Option<f64>,
);

const TRAIN_METRICS: [Metric; 8] = [
    (
        "pass rate (training samples)",
        "pass rate",
        Some((0.0, 1.0)),
        |m| Some(m.pass_rate),
    ),
    ("raw reward", "reward", None, |m| Some(m.reward_raw)),
    ("calibrated reward", "reward", None, |m| {
        Some(m.reward_calibrated)
    }),
    ("KL to the reference (k3, per token)", "nats", None, |m| {
        Some(m.kl_k3)
    }),
    ("response length", "tokens", None, |m| Some(m.response_len)),
    (
        "responses cut at the limit",
        "fraction",
        Some((0.0, 1.0)),
        |m| Some(m.truncated),
    ),
    ("entropy of the sampled tokens", "nats/token", None, |m| {
        Some(m.entropy)
    }),
    (
        "gradient cosine to the merge",
        "cosine",
        Some((-1.0, 1.0)),
        |m| m.grad_cosine,
    ),
];

/// The report's HTML.
pub fn render(runs: &[RunData], opts: &ReportOptions) -> Result<String> {
    let mut tasks: Vec<String> = Vec::new();
    for r in runs {
        for t in r.tasks() {
            if !tasks.contains(&t) {
                tasks.push(t);
            }
        }
    }
    let mut families: Vec<&str> = Vec::new();
    for r in runs {
        if !families.contains(&family(&r.name)) {
            families.push(family(&r.name));
        }
    }
    let color = |r: &RunData| {
        families
            .iter()
            .position(|f| *f == family(&r.name))
            .unwrap_or(0)
    };
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}</style></head>\n<body>\n<h1>{}</h1>\n",
        escape(&opts.title),
        escape(&opts.title)
    );
    let _ = write!(
        html,
        "<p>{} run(s): {}. Training curves are trailing means over {} step(s); red vertical lines are alarms of the hacking monitor.</p>\n<nav>",
        runs.len(),
        runs.iter().map(|r| format!("<code>{}</code>", escape(&r.name))).collect::<Vec<_>>().join(", "),
        opts.smooth.max(1)
    );
    for t in &tasks {
        let _ = write!(html, "<a href=\"#task-{0}\">{0}</a> ", escape(t));
    }
    html.push_str("</nav>\n<p class=\"legend\">");
    for (i, f) in families.iter().enumerate() {
        let c = chart::PALETTE[i % chart::PALETTE.len()];
        let _ = write!(
            html,
            "<span><i style=\"background:rgb({},{},{})\"></i>{}</span> ",
            c.0,
            c.1,
            c.2,
            escape(f)
        );
    }
    html.push_str("<span><i style=\"background:rgb(220,0,0)\"></i>alarm</span></p>\n");
    alarm_table(&mut html, runs);
    for task in &tasks {
        let _ = write!(
            html,
            "<section class=\"task\" id=\"task-{0}\" data-task=\"{0}\">\n<h2>{0}</h2>\n<div class=\"grid\">\n",
            escape(task)
        );
        let alarm_steps: Vec<f64> = runs
            .iter()
            .flat_map(|r| r.alarms.iter())
            .filter(|a| &a.task == task)
            .map(|a| a.step as f64)
            .collect();
        let mut charts = Vec::new();
        for (title, y_label, range, value) in TRAIN_METRICS {
            let series = per_run(runs, &color, |r| {
                let pts: Vec<(f64, f64)> = r
                    .train
                    .iter()
                    .filter(|m| &m.task == task)
                    .filter_map(|m| value(m).map(|v| (m.step as f64, v)))
                    .collect();
                smooth(pts, opts.smooth)
            });
            if series.iter().all(|s| s.points.is_empty()) {
                continue;
            }
            charts.push((title.to_string(), y_label, range, series));
        }
        let eval = per_run(runs, &color, |r| {
            r.eval
                .iter()
                .filter(|e| &e.task == task)
                .map(|e| (e.step as f64, e.point.eval_pass_rate))
                .collect()
        });
        if eval.iter().any(|s| !s.points.is_empty()) {
            let split = runs
                .iter()
                .flat_map(|r| r.eval.iter())
                .find(|e| &e.task == task)
                .map_or(String::new(), |e| e.split.clone());
            charts.insert(
                1,
                (
                    format!("pass rate, held out ({split})"),
                    "pass rate",
                    Some((0.0, 1.0)),
                    eval,
                ),
            );
        }
        charts.push(judge_chart(runs, task, &color, opts.smooth));
        for (title, y_label, range, series) in charts {
            let svg = chart::render(&Chart {
                title: &format!("{task}: {title}"),
                y_label,
                series,
                alarms: alarm_steps.clone(),
                y_range: range,
            })
            .map_err(Error::Train)?;
            let _ = writeln!(
                html,
                "<figure class=\"chart\" data-metric=\"{}\">{svg}</figure>",
                escape(&title)
            );
        }
        html.push_str("</div>\n");
        task_alarms(&mut html, runs, task);
        task_samples(&mut html, runs, task, &opts.sample_steps);
        html.push_str("</section>\n");
    }
    let _ = write!(html, "<script>{CHECK}</script>\n</body></html>\n");
    Ok(html)
}

/// One series per run from `points`, the first run of each family
/// labelled.
fn per_run(
    runs: &[RunData],
    color: &dyn Fn(&RunData) -> usize,
    points: impl Fn(&RunData) -> Vec<(f64, f64)>,
) -> Vec<Series> {
    runs.iter()
        .map(|r| {
            let c = color(r);
            Series {
                label: None,
                color: c,
                points: points(r),
                dashed: false,
            }
        })
        .collect()
}

/// Each judge's violation rate: one line per run and judge (the second
/// judge of a run dashed).
fn judge_chart(
    runs: &[RunData],
    task: &str,
    color: &dyn Fn(&RunData) -> usize,
    w: usize,
) -> (String, &'static str, Option<(f64, f64)>, Vec<Series>) {
    let mut series = Vec::new();
    let mut judges_seen: Vec<String> = Vec::new();
    for r in runs {
        let mut per_judge: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
        for m in r.train.iter().filter(|m| m.task == task) {
            for (j, rates) in &m.judges {
                per_judge
                    .entry(j)
                    .or_default()
                    .push((m.step as f64, rates.violation_rate));
            }
        }
        for (k, (judge, pts)) in per_judge.into_iter().enumerate() {
            if !judges_seen.iter().any(|j| j == judge) {
                judges_seen.push(judge.to_string());
            }
            series.push(Series {
                label: None,
                color: color(r),
                points: smooth(pts, w),
                dashed: k > 0,
            });
        }
    }
    let title = match judges_seen.as_slice() {
        [one] => format!("violation rate of judge {one}"),
        many => format!(
            "violation rate: {} solid, {} dashed",
            many.first().map_or("", String::as_str),
            many.get(1..).unwrap_or(&[]).join(", ")
        ),
    };
    (title, "violation rate", Some((0.0, 1.0)), series)
}

/// One row per run and task with alarms: how many, the first step and
/// rule, every step; each alarm's evidence is in its task's section.
fn alarm_table(html: &mut String, runs: &[RunData]) {
    let total: usize = runs.iter().map(|r| r.alarms.len()).sum();
    let _ = writeln!(html, "<section class=\"alarms\"><h2>Alarms ({total})</h2>");
    if total == 0 {
        html.push_str("<p>The hacking monitor raised no alarm.</p></section>\n");
        return;
    }
    html.push_str(
        "<table><tr><th>run</th><th>task</th><th>alarms</th><th>first</th><th>steps</th></tr>\n",
    );
    for r in runs {
        let mut per_task: Vec<(&str, Vec<&crate::train::monitor::Alarm>)> = Vec::new();
        for a in &r.alarms {
            match per_task.iter_mut().find(|(t, _)| *t == a.task) {
                Some((_, v)) => v.push(a),
                None => per_task.push((&a.task, vec![a])),
            }
        }
        for (task, alarms) in per_task {
            let first = alarms[0];
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td><a href=\"#task-{}\">{}</a></td><td>{}</td><td title=\"{}\">step {}: {}</td><td>{}</td></tr>",
                escape(&r.name),
                escape(task),
                escape(task),
                alarms.len(),
                escape(&first.message),
                first.step,
                first.rule.as_str(),
                alarms.iter().map(|a| a.step.to_string()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    html.push_str("</table></section>\n");
}

fn examples_table(html: &mut String, examples: &[Example]) {
    if examples.is_empty() {
        html.push_str("<p class=\"muted\">no responses logged</p>\n");
        return;
    }
    html.push_str("<table class=\"samples\"><tr><th>step</th><th>passed</th><th>raw reward</th><th>prompt</th><th>response</th></tr>\n");
    for e in examples {
        let _ = writeln!(
            html,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            if e.passed { "pass" } else { "fail" },
            e.step,
            if e.passed { "yes" } else { "no" },
            e.reward_raw,
            escape(&e.prompt),
            escape(&e.response)
        );
    }
    html.push_str("</table>\n");
}

fn task_alarms(html: &mut String, runs: &[RunData], task: &str) {
    for r in runs {
        for a in r.alarms.iter().filter(|a| a.task == task) {
            let _ = write!(
                html,
                "<details class=\"alarm\"><summary>{}: alarm at step {} ({})</summary>\n<p>{}</p>\n<p>Windows: steps {}-{} vs {}-{}; action: {:?}.</p>\n<table><tr><th>trend</th><th>before</th><th>after</th><th>slope per step</th><th>statistic</th></tr>\n",
                escape(&r.name),
                a.step,
                a.rule.as_str(),
                escape(&a.message),
                a.before[0],
                a.before[1],
                a.after[0],
                a.after[1],
                a.action
            );
            for t in &a.trends {
                let _ = writeln!(
                    html,
                    "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.5}</td><td>{:.2}</td></tr>",
                    escape(&t.name),
                    t.before,
                    t.after,
                    t.slope,
                    t.statistic
                );
            }
            html.push_str("</table>\n<h4>Before</h4>\n");
            examples_table(html, &a.examples_before);
            html.push_str("<h4>After</h4>\n");
            examples_table(html, &a.examples_after);
            html.push_str("</details>\n");
        }
    }
}

/// The logged training samples of `task` nearest each chosen step.
fn task_samples(html: &mut String, runs: &[RunData], task: &str, chosen: &[u64]) {
    html.push_str("<h3>Sample responses</h3>\n");
    for r in runs {
        let lines: Vec<&SamplesLine> = r
            .samples
            .iter()
            .filter(|s| s.task == task && s.split == "train")
            .collect();
        if lines.is_empty() {
            continue;
        }
        let steps: Vec<u64> = if chosen.is_empty() {
            let last = lines[lines.len() - 1].step;
            let mut v = vec![lines[0].step, lines[lines.len() / 2].step, last];
            v.dedup();
            v
        } else {
            chosen.to_vec()
        };
        let mut shown: Vec<u64> = Vec::new();
        let mut examples = Vec::new();
        for want in steps {
            let Some(line) = lines.iter().min_by_key(|l| l.step.abs_diff(want)) else {
                continue;
            };
            if !shown.contains(&line.step) {
                shown.push(line.step);
                examples.extend(line.samples.iter().cloned());
            }
        }
        let _ = writeln!(
            html,
            "<details><summary>{} (steps {})</summary>",
            escape(&r.name),
            shown
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        examples_table(html, &examples);
        html.push_str("</details>\n");
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1500px}\
h2{border-bottom:1px solid #ccc;padding-bottom:.2em}\
nav a{margin-right:1em}\
.grid{display:flex;flex-wrap:wrap;gap:8px}\
figure.chart{margin:0;border:1px solid #eee}\
table{border-collapse:collapse;font-size:13px;margin:.5em 0}\
td,th{border:1px solid #ddd;padding:3px 6px;vertical-align:top;text-align:left}\
tr.fail td{background:#fff3f3}tr.pass td{background:#f3fff3}\
pre{white-space:pre-wrap;margin:0;max-width:700px}\
details{margin:.4em 0}details.alarm summary{color:#b00;font-weight:bold}\
.muted{color:#888}\
.legend span{margin-right:1.2em;white-space:nowrap}.legend i{display:inline-block;width:14px;height:4px;margin-right:4px;vertical-align:middle}";

/// Marks every task section whose charts all rendered with a visible box,
/// and the page with how many did (`data-tasks-rendered="k/n"`), so a
/// headless browser can check the page as a person would see it.
const CHECK: &str = "(function(){var s=document.querySelectorAll('section.task'),ok=0;\
s.forEach(function(sec){var c=sec.querySelectorAll('figure.chart svg'),v=0;\
c.forEach(function(g){var b=g.getBoundingClientRect();if(b.width>0&&b.height>0){v++;}});\
if(c.length>0&&v===c.length){ok++;sec.setAttribute('data-rendered','yes');}});\
document.body.setAttribute('data-tasks-rendered',ok+'/'+s.length);})();";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::monitor::{Alarm, AlarmAction, AlarmRule, Trend};
    use crate::train::JudgeRates;

    fn run(name: &str, drop: bool) -> RunData {
        let train = (0..12u64)
            .flat_map(|step| {
                ["chat", "math"].map(|task| TaskMetrics {
                    kind: "train".into(),
                    step,
                    task: task.into(),
                    pass_rate: if drop && step > 6 { 0.1 } else { 0.6 },
                    reward_raw: step as f64,
                    judges: [(
                        "rule".to_string(),
                        JudgeRates {
                            violation_rate: 0.4,
                            error_rate: 0.0,
                        },
                    )]
                    .into(),
                    grad_cosine: Some(0.5),
                    ..TaskMetrics::default()
                })
            })
            .collect();
        let example = Example {
            step: 11,
            prompt: "<b>hi</b>".into(),
            response: "a & b".into(),
            passed: false,
            reward_raw: 2.0,
        };
        RunData {
            name: name.into(),
            dir: PathBuf::from(name),
            train,
            eval: Vec::new(),
            alarms: drop
                .then(|| Alarm {
                    step: 9,
                    task: "chat".into(),
                    rule: AlarmRule::RewardUpPassDown,
                    message: "reward up <while> pass down".into(),
                    before: [0, 3],
                    after: [6, 9],
                    trends: vec![Trend {
                        name: "pass_rate".into(),
                        before: 0.6,
                        after: 0.1,
                        slope: -0.1,
                        statistic: -4.0,
                    }],
                    examples_before: vec![],
                    examples_after: vec![example.clone()],
                    action: AlarmAction::Log,
                })
                .into_iter()
                .collect(),
            samples: vec![SamplesLine {
                step: 11,
                task: "chat".into(),
                split: "train".into(),
                samples: vec![example],
            }],
        }
    }

    #[test]
    fn every_task_gets_its_charts_alarms_and_samples_escaped() {
        let html = render(
            &[run("pg-seed0", true), run("cgpo-seed0", false)],
            &ReportOptions::default(),
        )
        .unwrap();
        for task in ["chat", "math"] {
            assert!(
                html.contains(&format!("<section class=\"task\" id=\"task-{task}\"")),
                "{task}"
            );
        }
        // 8 training curves (cosine included) + the judges', per task.
        assert_eq!(html.matches("<figure class=\"chart\"").count(), 2 * 9);
        assert!(html.contains("<h2>Alarms (1)</h2>"));
        assert!(html.contains("reward up &lt;while&gt; pass down"));
        assert!(html.contains("a &amp; b") && html.contains("&lt;b&gt;hi&lt;/b&gt;"));
        assert!(!html.contains("<while>"));
        for external in ["<script src", "<link", "<img", "url(", "@import"] {
            assert!(!html.contains(external), "loads something: {external}");
        }
    }

    #[test]
    fn seeds_share_a_family_and_names_are_disambiguated() {
        assert_eq!(family("cgpo-crpg-seed2"), "cgpo-crpg");
        assert_eq!(family("cgpo-crpg"), "cgpo-crpg");
        assert_eq!(family("x-seed"), "x-seed");
        let mut runs = vec![run("a", false), run("a", false)];
        runs[0].dir = PathBuf::from("one/a");
        runs[1].dir = PathBuf::from("two/a");
        disambiguate(&mut runs);
        assert_eq!(
            (runs[0].name.as_str(), runs[1].name.as_str()),
            ("one/a", "two/a")
        );
        assert_eq!(
            smooth(vec![(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)], 2),
            [(0.0, 1.0), (1.0, 2.0), (2.0, 4.0)]
        );
    }
}
