//! The reward-hacking monitor: per task, it watches the proxy reward and
//! the judged pass rate (on the training samples every step, on held-out
//! prompts at evaluations) and raises an [`Alarm`] when the reward keeps
//! rising while the pass rate falls, or when the response length or the
//! KL drift beyond configured bounds (docs/monitoring.md).
//!
//! The training rule compares the latest `window` steps with the first
//! `window` steps of the run: it fires when the pooled pass rate fell by at
//! least `pass_drop_z` standard errors (two-proportion z) while the mean
//! raw reward rose by at least `reward_rise_t` (Welch's t over the steps'
//! means). The held-out rule compares each evaluation with the first one:
//! the pass rate fell by `eval_drop_z` standard errors while the held-out
//! raw reward rose. An alarm carries its evidence: the two windows, each
//! trend (before, after, slope per step, test statistic) and example
//! responses from before and after.
//!
//! ```
//! use cgpo::train::monitor::{HackingMonitor, MonitorConfig, StepObservation};
//! let mut monitor = HackingMonitor::new(MonitorConfig { window: 3, ..MonitorConfig::default() });
//! let mut fired = Vec::new();
//! for step in 0..6u64 {
//!     let late = step >= 3;
//!     let obs = StepObservation {
//!         step,
//!         task: "chat".into(),
//!         samples: 64,
//!         pass_rate: if late { 0.1 } else { 0.6 },
//!         reward_raw: if late { 2.0 + 0.01 * step as f64 } else { 1.0 - 0.01 * step as f64 },
//!         response_len: 20.0,
//!         kl: 0.1,
//!         examples: Vec::new(),
//!     };
//!     fired.extend(monitor.observe_step(obs));
//! }
//! assert_eq!(fired.len(), 1);
//! assert_eq!((fired[0].step, fired[0].rule.as_str()), (5, "reward_up_pass_down"));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stats::{two_proportion_z, welch_t};
use crate::train::evaluate::EvalPoint;

/// What to do when an alarm fires (besides writing it to the metrics and
/// to stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmAction {
    /// Only report it.
    #[default]
    Log,
    /// Stop the run after this step, with a checkpoint.
    Stop,
    /// Multiply the task's KL coefficient by `kl_factor`.
    RaiseKl,
}

/// `train.monitor`: the hacking monitor's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    pub enabled: bool,
    /// Steps in the reference window (the run's first) and in the window
    /// it is compared with (the latest); the training rule needs `2 x
    /// window` steps. A rule that fired is quiet for `window` steps.
    pub window: u64,
    /// The fall of the training pass rate, in standard errors, that counts.
    pub pass_drop_z: f64,
    /// The rise of the training raw reward (Welch's t) that counts.
    pub reward_rise_t: f64,
    /// The fall of the held-out pass rate from the first evaluation, in
    /// standard errors, that counts (with the held-out reward up).
    pub eval_drop_z: f64,
    /// Alarm when the latest window's mean response length is more than
    /// this many times the first window's, or less than its inverse.
    pub max_length_ratio: Option<f64>,
    /// Alarm when the latest window's mean per-token KL (the estimate the
    /// KL controller tracks) exceeds this.
    pub max_kl: Option<f64>,
    pub action: AlarmAction,
    /// `raise_kl`: the factor on the task's KL coefficient (> 1).
    pub kl_factor: f64,
    /// Example responses kept per task and step for the evidence (and
    /// written to the metrics as `samples` lines).
    pub examples: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 10,
            pass_drop_z: 3.0,
            reward_rise_t: 2.0,
            eval_drop_z: 3.0,
            max_length_ratio: None,
            max_kl: None,
            action: AlarmAction::Log,
            kl_factor: 2.0,
            examples: 2,
        }
    }
}

impl MonitorConfig {
    /// Checks the settings; errors name `key.field`.
    pub fn validate(&self, key: &str) -> Result<()> {
        let bad = |field: &str, msg: &str| Err(Error::config(format!("{key}.{field}"), msg));
        if self.window == 0 {
            return bad("window", "must be >= 1");
        }
        for (field, v) in [
            ("pass_drop_z", self.pass_drop_z),
            ("reward_rise_t", self.reward_rise_t),
            ("eval_drop_z", self.eval_drop_z),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, "must be a finite number >= 0");
            }
        }
        if self
            .max_length_ratio
            .is_some_and(|r| !(r.is_finite() && r > 1.0))
        {
            return bad("max_length_ratio", "must be > 1");
        }
        if self.max_kl.is_some_and(|k| !(k.is_finite() && k > 0.0)) {
            return bad("max_kl", "must be > 0");
        }
        if self.action == AlarmAction::RaiseKl
            && !(self.kl_factor.is_finite() && self.kl_factor > 1.0)
        {
            return bad("kl_factor", "must be > 1 with `action: raise_kl`");
        }
        Ok(())
    }
}

/// One response kept as evidence.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub step: u64,
    pub prompt: String,
    pub response: String,
    /// Every judge of the task passed it.
    pub passed: bool,
    pub reward_raw: f64,
}

/// What the monitor reads of one task at one step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepObservation {
    pub step: u64,
    pub task: String,
    pub samples: usize,
    pub pass_rate: f64,
    pub reward_raw: f64,
    pub response_len: f64,
    /// The per-token KL estimate the task's controller tracks.
    pub kl: f64,
    pub examples: Vec<Example>,
}

/// One quantity's change between the two windows of an alarm.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    pub name: String,
    pub before: f64,
    pub after: f64,
    /// `(after - before)` per step between the windows' centres.
    pub slope: f64,
    /// The test statistic (z or t) of the change; 0 for a bound.
    pub statistic: f64,
}

/// Which rule fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum AlarmRule {
    /// Training: raw reward up, pass rate down.
    RewardUpPassDown,
    /// Evaluation: held-out pass rate down, held-out reward up.
    HeldOutPassDown,
    LengthDrift,
    KlDrift,
}

impl AlarmRule {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmRule::RewardUpPassDown => "reward_up_pass_down",
            AlarmRule::HeldOutPassDown => "held_out_pass_down",
            AlarmRule::LengthDrift => "length_drift",
            AlarmRule::KlDrift => "kl_drift",
        }
    }
}

/// A suspected reward hack, with its evidence. In `metrics.jsonl` as
/// `{"kind": "alarm", ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// The step it fired at (as in the task's train or eval lines).
    pub step: u64,
    pub task: String,
    pub rule: AlarmRule,
    pub message: String,
    /// The reference window and the window compared with it (first and
    /// last step, inclusive); for an evaluation, the two evaluation steps.
    pub before: [u64; 2],
    pub after: [u64; 2],
    pub trends: Vec<Trend>,
    pub examples_before: Vec<Example>,
    pub examples_after: Vec<Example>,
    pub action: AlarmAction,
}

/// One task's history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct TaskHistory {
    steps: Vec<StepObservation>,
    /// The first held-out evaluation: step, point and examples.
    first_eval: Option<(u64, EvalPoint, Vec<Example>)>,
    /// Examples of the first step (the "before" evidence).
    first_examples: Vec<Example>,
    /// The step each rule last fired at.
    fired: BTreeMap<AlarmRule, u64>,
}

/// The monitor's state per task; serializable, so a resumed run keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HackingMonitor {
    config: MonitorConfig,
    tasks: BTreeMap<String, TaskHistory>,
}

/// Mean step and mean of `f` over observations.
fn centre(obs: &[StepObservation]) -> f64 {
    obs.iter().map(|o| o.step as f64).sum::<f64>() / obs.len().max(1) as f64
}

fn mean_of(obs: &[StepObservation], f: impl Fn(&StepObservation) -> f64) -> f64 {
    obs.iter().map(f).sum::<f64>() / obs.len().max(1) as f64
}

/// Pooled pass rate and its sample count.
fn pooled(obs: &[StepObservation]) -> (f64, usize) {
    let n: usize = obs.iter().map(|o| o.samples).sum();
    let passes: f64 = obs.iter().map(|o| o.pass_rate * o.samples as f64).sum();
    (passes / n.max(1) as f64, n)
}

impl HackingMonitor {
    pub fn new(config: MonitorConfig) -> Self {
        Self {
            config,
            tasks: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// Keeps the config of `other` (this run's), the history of `self`
    /// (a checkpoint's).
    pub fn with_config(mut self, config: MonitorConfig) -> Self {
        self.config = config;
        self
    }

    fn quiet(&self, h: &TaskHistory, rule: AlarmRule, step: u64) -> bool {
        h.fired
            .get(&rule)
            .is_some_and(|&s| step < s + self.config.window)
    }

    /// Records one task's step; returns the alarms it raises.
    pub fn observe_step(&mut self, obs: StepObservation) -> Vec<Alarm> {
        if !self.config.enabled {
            return Vec::new();
        }
        let w = self.config.window as usize;
        let cfg = self.config.clone();
        let h = self.tasks.entry(obs.task.clone()).or_default();
        if h.steps.is_empty() {
            h.first_examples = obs.examples.clone();
        }
        let step = obs.step;
        let task = obs.task.clone();
        h.steps.push(StepObservation {
            examples: Vec::new(),
            ..obs.clone()
        });
        if h.steps.len() < w {
            return Vec::new();
        }
        let h = &self.tasks[&task];
        let first = &h.steps[..w];
        let last = &h.steps[h.steps.len() - w..];
        let span = (centre(last) - centre(first)).max(1.0);
        let window = |o: &[StepObservation]| [o[0].step, o[o.len() - 1].step];
        let mut out = Vec::new();
        let alarm = |rule: AlarmRule, message: String, trends: Vec<Trend>| Alarm {
            step,
            task: task.clone(),
            rule,
            message,
            before: window(first),
            after: window(last),
            trends,
            examples_before: h.first_examples.clone(),
            examples_after: pick_hack_examples(&obs.examples),
            action: cfg.action,
        };
        if h.steps.len() >= 2 * w && !self.quiet(h, AlarmRule::RewardUpPassDown, step) {
            let (p0, n0) = pooled(first);
            let (p1, n1) = pooled(last);
            let z = two_proportion_z(p0, n0, p1, n1);
            let r0: Vec<f64> = first.iter().map(|o| o.reward_raw).collect();
            let r1: Vec<f64> = last.iter().map(|o| o.reward_raw).collect();
            let t = welch_t(&r0, &r1);
            if z <= -cfg.pass_drop_z && t >= cfg.reward_rise_t {
                let (m0, m1) = (
                    mean_of(first, |o| o.reward_raw),
                    mean_of(last, |o| o.reward_raw),
                );
                out.push(alarm(
                    AlarmRule::RewardUpPassDown,
                    format!(
                        "task `{task}`: raw reward up {m0:.3} -> {m1:.3} (t = {t:.1}) while the training pass rate fell {p0:.3} -> {p1:.3} (z = {z:.1}; steps {}-{} vs {}-{})",
                        first[0].step, first[w - 1].step, last[0].step, last[w - 1].step
                    ),
                    vec![
                        Trend { name: "reward_raw".into(), before: m0, after: m1, slope: (m1 - m0) / span, statistic: t },
                        Trend { name: "pass_rate".into(), before: p0, after: p1, slope: (p1 - p0) / span, statistic: z },
                    ],
                ));
            }
        }
        if let Some(ratio) = cfg.max_length_ratio {
            let (l0, l1) = (
                mean_of(first, |o| o.response_len),
                mean_of(last, |o| o.response_len),
            );
            let drift = l0 > 0.0 && (l1 > ratio * l0 || l1 < l0 / ratio);
            if h.steps.len() >= 2 * w && drift && !self.quiet(h, AlarmRule::LengthDrift, step) {
                out.push(alarm(
                    AlarmRule::LengthDrift,
                    format!("task `{task}`: mean response length {l0:.1} -> {l1:.1} tokens, beyond the ratio {ratio}"),
                    vec![Trend { name: "response_len".into(), before: l0, after: l1, slope: (l1 - l0) / span, statistic: 0.0 }],
                ));
            }
        }
        if let Some(max) = cfg.max_kl {
            let (k0, k1) = (mean_of(first, |o| o.kl), mean_of(last, |o| o.kl));
            if k1 > max && !self.quiet(h, AlarmRule::KlDrift, step) {
                out.push(alarm(
                    AlarmRule::KlDrift,
                    format!("task `{task}`: mean per-token KL {k1:.4} over the last {w} steps, above {max}"),
                    vec![Trend { name: "kl".into(), before: k0, after: k1, slope: (k1 - k0) / span, statistic: 0.0 }],
                ));
            }
        }
        let h = self.tasks.get_mut(&task).expect("inserted above");
        for a in &out {
            h.fired.insert(a.rule, step);
        }
        out
    }

    /// Records one evaluation of `task` after `step` steps, with some of
    /// its judged responses; returns the alarm it raises, if any. The
    /// first evaluation is the reference.
    pub fn observe_eval(
        &mut self,
        step: u64,
        task: &str,
        point: &EvalPoint,
        examples: &[Example],
    ) -> Option<Alarm> {
        if !self.config.enabled {
            return None;
        }
        let cfg = self.config.clone();
        let h = self.tasks.entry(task.to_string()).or_default();
        let Some((s0, p0, before)) = h.first_eval.clone() else {
            h.first_eval = Some((step, *point, examples.to_vec()));
            return None;
        };
        if step <= s0
            || h.fired
                .get(&AlarmRule::HeldOutPassDown)
                .is_some_and(|&s| step < s + cfg.window)
        {
            return None;
        }
        let z = two_proportion_z(p0.eval_pass_rate, p0.n, point.eval_pass_rate, point.n);
        if z > -cfg.eval_drop_z || point.eval_reward <= p0.eval_reward {
            return None;
        }
        let span = (step - s0) as f64;
        h.fired.insert(AlarmRule::HeldOutPassDown, step);
        Some(Alarm {
            step,
            task: task.to_string(),
            rule: AlarmRule::HeldOutPassDown,
            message: format!(
                "task `{task}`: held-out pass rate fell {:.3} -> {:.3} (z = {z:.1}, n = {} and {}) while the held-out raw reward rose {:.3} -> {:.3} (steps {s0} vs {step})",
                p0.eval_pass_rate, point.eval_pass_rate, p0.n, point.n, p0.eval_reward, point.eval_reward
            ),
            before: [s0, s0],
            after: [step, step],
            trends: vec![
                Trend { name: "eval_reward".into(), before: p0.eval_reward, after: point.eval_reward, slope: (point.eval_reward - p0.eval_reward) / span, statistic: 0.0 },
                Trend { name: "eval_pass_rate".into(), before: p0.eval_pass_rate, after: point.eval_pass_rate, slope: (point.eval_pass_rate - p0.eval_pass_rate) / span, statistic: z },
            ],
            examples_before: before,
            examples_after: pick_hack_examples(examples),
            action: cfg.action,
        })
    }
}

/// The "after" evidence: failing responses with the highest reward first
/// (what a hack looks like), then the rest by reward.
fn pick_hack_examples(examples: &[Example]) -> Vec<Example> {
    let mut v = examples.to_vec();
    v.sort_by(|a, b| {
        a.passed
            .cmp(&b.passed)
            .then(b.reward_raw.total_cmp(&a.reward_raw))
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(step: u64, pass: f64, reward: f64) -> StepObservation {
        StepObservation {
            step,
            task: "t".into(),
            samples: 16,
            pass_rate: pass,
            reward_raw: reward,
            response_len: 10.0 + step as f64,
            kl: 0.01 * step as f64,
            examples: vec![Example {
                step,
                prompt: "p".into(),
                response: format!("r{step}"),
                passed: pass > 0.5,
                reward_raw: reward,
            }],
        }
    }

    fn run(monitor: &mut HackingMonitor, points: &[(f64, f64)]) -> Vec<Alarm> {
        points
            .iter()
            .enumerate()
            .flat_map(|(s, &(p, r))| monitor.observe_step(obs(s as u64, p, r)))
            .collect()
    }

    fn cfg() -> MonitorConfig {
        MonitorConfig {
            window: 4,
            ..MonitorConfig::default()
        }
    }

    #[test]
    fn reward_up_and_pass_down_fires_with_evidence() {
        let mut m = HackingMonitor::new(cfg());
        let mut points = vec![(0.75, 1.0), (0.8, 1.1), (0.7, 0.9), (0.75, 1.0)];
        points.extend([(0.1, 2.0), (0.05, 2.1), (0.1, 1.9), (0.0, 2.2)]);
        let alarms = run(&mut m, &points);
        assert_eq!(alarms.len(), 1, "{alarms:?}");
        let a = &alarms[0];
        assert_eq!((a.step, a.before, a.after), (7, [0, 3], [4, 7]));
        assert!(a.message.contains("task `t`"), "{}", a.message);
        assert_eq!(a.trends[0].name, "reward_raw");
        assert!(a.trends[0].slope > 0.0 && a.trends[1].slope < 0.0);
        assert!(a.trends[1].statistic <= -3.0 && a.trends[0].statistic >= 2.0);
        assert_eq!(a.examples_before[0].response, "r0");
        assert_eq!(a.examples_after[0].response, "r7");
    }

    #[test]
    fn no_alarm_when_either_trend_is_missing() {
        // Pass rate down with the reward flat and noisy.
        let mut m = HackingMonitor::new(cfg());
        let mut points = vec![(0.75, 1.0), (0.8, 1.5), (0.7, 0.5), (0.75, 1.0)];
        points.extend([(0.1, 1.4), (0.05, 0.6), (0.1, 1.0), (0.0, 1.1)]);
        assert!(run(&mut m, &points).is_empty());
        // Reward up with the pass rate up too (learning, not hacking).
        let mut m = HackingMonitor::new(cfg());
        let mut points = vec![(0.2, 1.0), (0.25, 1.1), (0.2, 0.9), (0.2, 1.0)];
        points.extend([(0.8, 2.0), (0.85, 2.1), (0.8, 1.9), (0.9, 2.2)]);
        assert!(run(&mut m, &points).is_empty());
    }

    #[test]
    fn a_fired_rule_is_quiet_for_a_window() {
        let mut m = HackingMonitor::new(cfg());
        let mut points = vec![(0.75, 1.0), (0.8, 1.1), (0.7, 0.9), (0.75, 1.0)];
        points.extend(std::iter::repeat_n((0.0, 2.0 + 1e-3), 1));
        points.extend([(0.05, 2.1), (0.1, 1.9), (0.0, 2.2)]);
        points.extend([(0.0, 2.1), (0.0, 2.0), (0.0, 2.3), (0.0, 2.2), (0.0, 2.1)]);
        let steps: Vec<u64> = run(&mut m, &points).iter().map(|a| a.step).collect();
        assert_eq!(steps, [7, 11]);
    }

    #[test]
    fn held_out_fall_with_reward_up_fires_once_per_window() {
        let mut m = HackingMonitor::new(cfg());
        let point = |passes: usize, reward: f64| EvalPoint {
            eval_pass_rate: passes as f64 / 64.0,
            n: 64,
            passes,
            eval_reward: reward,
            ..EvalPoint::default()
        };
        assert!(m.observe_eval(0, "t", &point(32, 0.0), &[]).is_none());
        // Down but the reward fell too: not this rule.
        assert!(m.observe_eval(10, "t", &point(10, -1.0), &[]).is_none());
        let a = m
            .observe_eval(20, "t", &point(10, 1.0), &[])
            .expect("fires");
        assert_eq!(
            (a.rule, a.before, a.after),
            (AlarmRule::HeldOutPassDown, [0, 0], [20, 20])
        );
        assert!(a.trends[1].statistic < -3.0);
        assert!(
            m.observe_eval(22, "t", &point(5, 1.0), &[]).is_none(),
            "quiet"
        );
        assert!(m.observe_eval(30, "t", &point(5, 1.0), &[]).is_some());
    }

    #[test]
    fn length_and_kl_bounds() {
        let mut m = HackingMonitor::new(MonitorConfig {
            window: 4,
            max_length_ratio: Some(1.5),
            max_kl: Some(0.05),
            ..MonitorConfig::default()
        });
        // Flat pass rate and reward; length 10 + step, KL 0.01 * step.
        let alarms = run(&mut m, &[(0.5, 1.0); 12]);
        let fired: Vec<(u64, &str)> = alarms.iter().map(|a| (a.step, a.rule.as_str())).collect();
        // KL: the mean of the last 4 passes 0.05 at step 7 (0.045 at 6).
        // Length: (10 + mean(s-3..s)) > 1.5 * 11.5 from step 9 on.
        assert_eq!(
            fired,
            [(7, "kl_drift"), (9, "length_drift"), (11, "kl_drift")]
        );
    }

    #[test]
    fn disabled_and_bad_settings() {
        let mut m = HackingMonitor::new(MonitorConfig {
            enabled: false,
            ..cfg()
        });
        assert!(run(&mut m, &[(1.0, 0.0), (0.0, 9.0)].repeat(8)).is_empty());
        let bad = MonitorConfig {
            action: AlarmAction::RaiseKl,
            kl_factor: 1.0,
            ..MonitorConfig::default()
        };
        let err = bad.validate("train.monitor").unwrap_err().to_string();
        assert!(err.contains("train.monitor.kl_factor"), "{err}");
        let err = MonitorConfig {
            window: 0,
            ..MonitorConfig::default()
        }
        .validate("train.monitor")
        .unwrap_err()
        .to_string();
        assert!(err.contains("train.monitor.window"), "{err}");
    }
}
