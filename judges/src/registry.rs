//! Judges by name with parameters, as run configs describe them.
//!
//! A [`JudgeSpec`] is `{"name": "regex", "params": {...}, "label": "no_sorry"}`;
//! a [`JudgeRegistry`] maps names to factories. Users register their own
//! judges next to the built-in ones, and factories reject unknown or
//! ill-typed parameters (parse them with [`parse_params`]).
//!
//! ```
//! use cgpo_judges::{JudgeRegistry, JudgeSpec};
//! let registry = JudgeRegistry::with_builtins();
//! let spec: JudgeSpec = serde_json::from_str(
//!     r#"{"name": "regex", "label": "no_sorry", "params": {"pattern": "(?i)sorry", "must_match": false}}"#,
//! ).unwrap();
//! let judge = registry.build(&spec).unwrap();
//! assert_eq!(judge.name(), "no_sorry");
//! let bad: JudgeSpec = serde_json::from_str(r#"{"name": "regex", "params": {"patern": "x"}}"#).unwrap();
//! assert!(matches!(registry.build(&bad), Err(e) if e.to_string().contains("unknown field `patern`")));
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rules::{LengthJudge, RegexJudge};
use crate::{CodeJudge, IfevalJudge, Judge, JudgeError, MathJudge, RefusalJudge};

/// A judge as written in a run config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeSpec {
    /// The registered judge name, e.g. `"regex"`.
    pub name: String,
    /// The name used in metrics and reasons; defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Parameters for the factory; `{}` when absent.
    #[serde(default = "empty_object")]
    pub params: Value,
}

impl JudgeSpec {
    pub fn new(name: impl Into<String>, params: Value) -> Self {
        Self {
            name: name.into(),
            label: None,
            params,
        }
    }

    /// The instance name: the label if set, else the registered name.
    pub fn instance_name(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.name)
    }
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Builds a judge from (instance name, params).
pub type JudgeFactory =
    Arc<dyn Fn(&str, &Value) -> Result<Box<dyn Judge>, JudgeError> + Send + Sync>;

/// Name -> factory.
#[derive(Clone, Default)]
pub struct JudgeRegistry {
    factories: BTreeMap<String, JudgeFactory>,
}

impl JudgeRegistry {
    pub fn empty() -> Self {
        Self::default()
    }

    /// The judges this crate ships.
    pub fn with_builtins() -> Self {
        let mut r = Self::empty();
        r.register("regex", |name, params| {
            Ok(Box::new(RegexJudge::from_params(name, params)?))
        });
        r.register("length", |name, params| {
            Ok(Box::new(LengthJudge::from_params(name, params)?))
        });
        r.register("refusal", |name, params| {
            Ok(Box::new(RefusalJudge::from_params(name, params)?))
        });
        r.register("llm", crate::llm::from_params);
        r.register("math", |name, params| {
            Ok(Box::new(MathJudge::from_params(name, params)?))
        });
        r.register("ifeval", |name, params| {
            Ok(Box::new(IfevalJudge::from_params(name, params)?))
        });
        r.register("code", |name, params| {
            Ok(Box::new(CodeJudge::from_params(name, params)?))
        });
        r
    }

    /// Adds (or replaces) a factory.
    pub fn register<F>(&mut self, name: impl Into<String>, factory: F) -> &mut Self
    where
        F: Fn(&str, &Value) -> Result<Box<dyn Judge>, JudgeError> + Send + Sync + 'static,
    {
        self.factories.insert(name.into(), Arc::new(factory));
        self
    }

    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    pub fn build(&self, spec: &JudgeSpec) -> Result<Box<dyn Judge>, JudgeError> {
        let factory = self
            .factories
            .get(&spec.name)
            .ok_or_else(|| JudgeError::UnknownJudge {
                name: spec.name.clone(),
                known: self.factories.keys().cloned().collect(),
            })?;
        factory(spec.instance_name(), &spec.params)
    }
}

/// Parses a factory's parameters; declare `T` with
/// `#[serde(deny_unknown_fields)]` so that typos are errors.
pub fn parse_params<T: DeserializeOwned>(judge: &str, params: &Value) -> Result<T, JudgeError> {
    let params = if params.is_null() {
        empty_object()
    } else {
        params.clone()
    };
    serde_json::from_value(params).map_err(|e| JudgeError::Params {
        judge: judge.to_owned(),
        message: e.to_string(),
    })
}
