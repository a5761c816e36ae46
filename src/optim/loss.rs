//! The loss seam: [`TaskLoss`] is what a task's optimizer is to the
//! trainer, and [`LossRegistry`] builds one by name from its parameters, as
//! configs write it (`{"name": "crpg", "kl_max": 20}`), like judges and
//! reward models. The six built-ins are registered by
//! [`LossRegistry::with_builtins`]; a new loss is one type that implements
//! [`TaskLoss`] and one [`LossRegistry::register`] call.
//!
//! ```
//! use std::sync::Arc;
//! use cgpo::optim::{LossInputs, LossOutput, LossRegistry, LossSpec, TaskLoss};
//!
//! /// Behaviour cloning of the samples that pass every judge.
//! #[derive(Debug)]
//! struct PositiveNll;
//! impl TaskLoss for PositiveNll {
//!     fn name(&self) -> &str { "positive_nll" }
//!     fn loss(&self, x: &LossInputs) -> cgpo::Result<LossOutput> {
//!         let w: Vec<f32> = x.positive.iter().map(|&p| if p { 1.0 } else { 0.0 }).collect();
//!         let w = candle_core::Tensor::new(w.as_slice(), x.seq_logp.device())?;
//!         let loss = (x.seq_logp.mul(&w)?.sum_all()?.neg()? / x.positive.len().max(1) as f64)?;
//!         Ok(LossOutput { loss, stats: vec![] })
//!     }
//! }
//!
//! let mut losses = LossRegistry::with_builtins();
//! losses.register("positive_nll", |_params| Ok(Arc::new(PositiveNll)));
//! let spec: LossSpec = serde_json::from_str(r#"{"name": "positive_nll"}"#).unwrap();
//! assert_eq!(losses.build(&spec, "tasks[0].optimizer").unwrap().name(), "positive_nll");
//! let bad: LossSpec = serde_json::from_str(r#"{"name": "crpg", "kl_mx": 1}"#).unwrap();
//! let err = losses.build(&bad, "tasks[0].optimizer").unwrap_err().to_string();
//! assert!(err.contains("tasks[0].optimizer") && err.contains("unknown field `kl_mx`"), "{err}");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Codpo, Crpg, Crraft, LossInputs, LossOutput, OnlineDpo, Pg, Raft};
use crate::error::{Error, Result};

/// A per-task loss: the task's optimizer as the trainer sees it.
pub trait TaskLoss: Send + Sync + fmt::Debug {
    /// The registered name: in metrics and errors.
    fn name(&self) -> &str;

    /// The loss of one task's minibatch (differentiable w.r.t. the policy)
    /// and what to log about it.
    fn loss(&self, inputs: &LossInputs) -> Result<LossOutput>;

    /// Gradient passes over the same rollouts (1: on-policy).
    fn epochs(&self) -> usize {
        1
    }

    /// Whether [`LossInputs::baseline_seq_logp`] is needed: the log-prob of
    /// each prompt's baseline response when it passes every judge (CRRAFT's
    /// fallback). Otherwise it is all `None` and costs nothing.
    fn needs_baselines(&self) -> bool {
        false
    }

    /// Whether [`LossInputs::logits`] is needed: the policy's full logits
    /// over the response tokens, `[N, R, V]` with gradient.
    fn needs_logits(&self) -> bool {
        false
    }

    /// The fewest responses per prompt the loss can learn from (2 for the
    /// pairwise losses).
    fn min_generations(&self) -> usize {
        1
    }
}

/// A loss as configs write it: `name`, and its parameters beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossSpec {
    pub name: String,
    #[serde(flatten)]
    pub params: Map<String, Value>,
}

impl LossSpec {
    /// `name` with parameters `params` (a JSON object; anything else is
    /// taken as no parameters).
    pub fn new(name: impl Into<String>, params: Value) -> Self {
        let params = match params {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Self {
            name: name.into(),
            params,
        }
    }
}

impl Default for LossSpec {
    /// CRPG with its defaults.
    fn default() -> Self {
        Self::new("crpg", Value::Null)
    }
}

/// Builds a loss from its parameters (the spec without `name`).
pub type LossFactory = Arc<dyn Fn(&Value) -> Result<Arc<dyn TaskLoss>> + Send + Sync>;

/// Loss name -> factory.
#[derive(Clone, Default)]
pub struct LossRegistry {
    factories: BTreeMap<String, LossFactory>,
}

impl LossRegistry {
    pub fn empty() -> Self {
        Self::default()
    }

    /// CGPO's constrained optimizers (`crpg`, `codpo`, `crraft`), the
    /// ablations' baselines (`pg`, `online_dpo`, `raft`) and the field's
    /// recipes as presets of `pg` (`grpo`, `dr_grpo`, `dapo`, `gspo`,
    /// `rloo`, `reinforce_pp`: [`Pg::preset`]), whose keys a config may
    /// override.
    pub fn with_builtins() -> Self {
        let mut r = Self::empty();
        r.register("crpg", builtin::<Crpg>);
        r.register("codpo", builtin::<Codpo>);
        r.register("crraft", builtin::<Crraft>);
        r.register("pg", builtin::<Pg>);
        r.register("online_dpo", builtin::<OnlineDpo>);
        r.register("raft", builtin::<Raft>);
        for name in Pg::PRESETS {
            r.register(name, move |params| preset(name, params));
        }
        r
    }

    /// Adds (or replaces) the factory for `name`.
    pub fn register<F>(&mut self, name: impl Into<String>, factory: F) -> &mut Self
    where
        F: Fn(&Value) -> Result<Arc<dyn TaskLoss>> + Send + Sync + 'static,
    {
        self.factories.insert(name.into(), Arc::new(factory));
        self
    }

    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// The loss `spec` names. `key` is the spec's path in the config
    /// (`tasks[0].optimizer`); config errors of the factory get it as a
    /// prefix (`tasks[0].optimizer.beta`).
    pub fn build(&self, spec: &LossSpec, key: &str) -> Result<Arc<dyn TaskLoss>> {
        let factory = self.factories.get(&spec.name).ok_or_else(|| {
            Error::config(
                format!("{key}.name"),
                format!(
                    "unknown optimizer `{}` (registered: {})",
                    spec.name,
                    self.names().join(", ")
                ),
            )
        })?;
        factory(&Value::Object(spec.params.clone())).map_err(|e| match e {
            Error::Config { key: sub, message } if sub == "." => Error::config(key, message),
            Error::Config { key: sub, message } => Error::config(format!("{key}.{sub}"), message),
            other => other,
        })
    }
}

/// A built-in's settings, checked after parsing.
pub(crate) trait Settings: TaskLoss + DeserializeOwned + 'static {
    /// A bad value as `Error::config(field, message)`.
    fn check(&self) -> Result<()>;
}

fn builtin<T: Settings>(params: &Value) -> Result<Arc<dyn TaskLoss>> {
    let loss: T = serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        Error::config(path, e.into_inner().to_string())
    })?;
    loss.check()?;
    Ok(Arc::new(loss))
}

/// The `pg` preset `name` with the config's keys over it.
fn preset(name: &str, params: &Value) -> Result<Arc<dyn TaskLoss>> {
    let base = Pg::preset(name).ok_or_else(|| Error::config(".", format!("no preset `{name}`")))?;
    let mut merged = match serde_json::to_value(&base) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if let Value::Object(over) = params {
        merged.extend(over.clone());
    }
    let loss: Pg = serde_path_to_error::deserialize(Value::Object(merged)).map_err(|e| {
        let path = e.path().to_string();
        Error::config(path, e.into_inner().to_string())
    })?;
    loss.check()?;
    Ok(Arc::new(Pg {
        preset: base.preset,
        ..loss
    }))
}
