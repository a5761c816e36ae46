//! Task strata (docs/algorithm.md §1): every prompt belongs to exactly one
//! task. The [`Stratifier`] takes the record's own label when it has one,
//! else asks a [`TaskClassifier`], else uses the default task; a prompt left
//! without a task is an error, never silently dropped.
//!
//! ```
//! use cgpo::data::PromptRecord;
//! use cgpo::strata::{KeywordClassifier, Stratifier};
//! let classifier = KeywordClassifier::new([("math", r"\d+\s*[-+*/]\s*\d+"), ("code", r"(?i)\bpython\b")]).unwrap();
//! let stratifier = Stratifier::new(["chat", "math", "code"]).with_classifier(classifier).with_default_task("chat");
//! let strata = stratifier.stratify(vec![
//!     PromptRecord::new("a", "What is 12 * 7?"),
//!     PromptRecord::new("b", "Write a Python function."),
//!     PromptRecord::new("c", "Hello!"),
//!     PromptRecord::new("d", "Sum the list.").with_task("code"),
//! ]).unwrap();
//! assert_eq!(strata.records("code").len(), 2);
//! assert_eq!(strata.records("chat")[0].id, "c");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::data::PromptRecord;
use crate::error::{DataError, Error, Result};

/// Assigns a task to a prompt that carries no label.
pub trait TaskClassifier: Send + Sync {
    /// The task name, or `None` when the classifier cannot tell.
    fn classify(&self, record: &PromptRecord) -> Option<String>;
}

/// Ordered `(task, regex)` rules over the prompt's text; the first rule
/// that matches any message wins.
pub struct KeywordClassifier {
    rules: Vec<(String, Regex)>,
}

impl KeywordClassifier {
    pub fn new<T: Into<String>, P: AsRef<str>>(
        rules: impl IntoIterator<Item = (T, P)>,
    ) -> Result<Self> {
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(i, (task, pattern))| {
                let regex = Regex::new(pattern.as_ref()).map_err(|e| {
                    Error::config(format!("stratify.classifier[{i}].pattern"), e.to_string())
                })?;
                Ok((task.into(), regex))
            })
            .collect::<Result<_>>()?;
        Ok(Self { rules })
    }

    /// The tasks the rules can return.
    pub fn tasks(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|(t, _)| t.as_str())
    }
}

impl TaskClassifier for KeywordClassifier {
    fn classify(&self, record: &PromptRecord) -> Option<String> {
        self.rules
            .iter()
            .find(|(_, re)| record.prompt.texts().any(|t| re.is_match(t)))
            .map(|(task, _)| task.clone())
    }
}

/// How a prompt got its task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignment {
    Label,
    Classifier,
    Default,
}

/// Sorts prompts into tasks.
pub struct Stratifier {
    tasks: Vec<String>,
    classifier: Option<Box<dyn TaskClassifier>>,
    default_task: Option<String>,
}

impl Stratifier {
    pub fn new<T: Into<String>>(tasks: impl IntoIterator<Item = T>) -> Self {
        Self {
            tasks: tasks.into_iter().map(Into::into).collect(),
            classifier: None,
            default_task: None,
        }
    }

    pub fn with_classifier(mut self, classifier: impl TaskClassifier + 'static) -> Self {
        self.classifier = Some(Box::new(classifier));
        self
    }

    /// Prompts that neither a label nor the classifier place go here.
    pub fn with_default_task(mut self, task: impl Into<String>) -> Self {
        self.default_task = Some(task.into());
        self
    }

    pub fn tasks(&self) -> &[String] {
        &self.tasks
    }

    /// Assigns every record (setting `record.task`), or reports every
    /// record that could not be assigned.
    pub fn stratify(&self, records: Vec<PromptRecord>) -> Result<Strata> {
        if let Some(d) = &self.default_task {
            if !self.is_task(d) {
                return Err(Error::config(
                    "stratify.default_task",
                    format!("unknown task `{d}` (tasks: {})", self.tasks.join(", ")),
                ));
            }
        }
        let mut strata = Strata {
            tasks: self
                .tasks
                .iter()
                .map(|t| (t.clone(), Stratum::default()))
                .collect(),
        };
        let mut errors = Vec::new();
        for mut record in records {
            match self.assign(&record) {
                Ok((task, how)) => {
                    record.task = Some(task.clone());
                    let stratum = strata
                        .tasks
                        .get_mut(&task)
                        .expect("assign returns known tasks");
                    stratum.count(how);
                    stratum.records.push(Arc::new(record));
                }
                Err(message) => errors.push(DataError {
                    origin: record.origin.clone(),
                    field: Some("task".into()),
                    message: format!("prompt `{}`: {message}", record.id),
                }),
            }
        }
        if errors.is_empty() {
            Ok(strata)
        } else {
            Err(Error::Data(errors))
        }
    }

    fn is_task(&self, name: &str) -> bool {
        self.tasks.iter().any(|t| t == name)
    }

    fn assign(&self, record: &PromptRecord) -> std::result::Result<(String, Assignment), String> {
        let known = || self.tasks.join(", ");
        if let Some(label) = &record.task {
            return if self.is_task(label) {
                Ok((label.clone(), Assignment::Label))
            } else {
                Err(format!("unknown task `{label}` (tasks: {})", known()))
            };
        }
        if let Some(task) = self.classifier.as_ref().and_then(|c| c.classify(record)) {
            return if self.is_task(&task) {
                Ok((task, Assignment::Classifier))
            } else {
                Err(format!(
                    "the classifier returned unknown task `{task}` (tasks: {})",
                    known()
                ))
            };
        }
        match &self.default_task {
            Some(d) => Ok((d.clone(), Assignment::Default)),
            None => Err("no task label, no classifier match, and no default task".into()),
        }
    }
}

/// The prompts of one task and how they were assigned.
#[derive(Clone, Debug, Default)]
pub struct Stratum {
    pub records: Vec<Arc<PromptRecord>>,
    pub by_label: usize,
    pub by_classifier: usize,
    pub by_default: usize,
}

impl Stratum {
    fn count(&mut self, how: Assignment) {
        match how {
            Assignment::Label => self.by_label += 1,
            Assignment::Classifier => self.by_classifier += 1,
            Assignment::Default => self.by_default += 1,
        }
    }
}

/// Prompts grouped by task.
#[derive(Clone, Debug)]
pub struct Strata {
    tasks: BTreeMap<String, Stratum>,
}

impl Strata {
    /// The records of `task` (empty for a task with no prompts or an unknown name).
    pub fn records(&self, task: &str) -> &[Arc<PromptRecord>] {
        self.tasks.get(task).map_or(&[], |s| &s.records)
    }

    pub fn stratum(&self, task: &str) -> Option<&Stratum> {
        self.tasks.get(task)
    }

    /// (task, stratum) in task-name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Stratum)> {
        self.tasks.iter().map(|(t, s)| (t.as_str(), s))
    }

    pub fn total(&self) -> usize {
        self.tasks.values().map(|s| s.records.len()).sum()
    }
}

/// The per-task counts table.
impl fmt::Display for Strata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16} {:>7} {:>7} {:>11} {:>8}",
            "task", "prompts", "label", "classifier", "default"
        )?;
        for (task, s) in self.iter() {
            writeln!(
                f,
                "{task:<16} {:>7} {:>7} {:>11} {:>8}",
                s.records.len(),
                s.by_label,
                s.by_classifier,
                s.by_default
            )?;
        }
        write!(f, "{:<16} {:>7}", "total", self.total())
    }
}

/// How unlabeled prompts find their task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StratifyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_task: Option<String>,
    /// Keyword rules, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classifier: Vec<ClassifierRule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierRule {
    pub task: String,
    /// A regex (Rust `regex` syntax) matched against the prompt's text.
    pub pattern: String,
}

impl StratifyConfig {
    /// Checks the rules against the run's tasks; errors name the key
    /// (`stratify.classifier[0].task`).
    pub fn validate(&self, tasks: &[String]) -> Result<()> {
        let known = |name: &str| tasks.iter().any(|t| t == name);
        let listed = || tasks.join(", ");
        if let Some(d) = &self.default_task {
            if !known(d) {
                return Err(Error::config(
                    "stratify.default_task",
                    format!("unknown task `{d}` (tasks: {})", listed()),
                ));
            }
        }
        for (i, rule) in self.classifier.iter().enumerate() {
            if !known(&rule.task) {
                return Err(Error::config(
                    format!("stratify.classifier[{i}].task"),
                    format!("unknown task `{}` (tasks: {})", rule.task, listed()),
                ));
            }
            Regex::new(&rule.pattern).map_err(|e| {
                Error::config(format!("stratify.classifier[{i}].pattern"), e.to_string())
            })?;
        }
        Ok(())
    }

    /// The stratifier over `tasks` these settings describe.
    pub fn stratifier(&self, tasks: &[String]) -> Result<Stratifier> {
        let mut stratifier = Stratifier::new(tasks.iter().cloned());
        if !self.classifier.is_empty() {
            let rules = self
                .classifier
                .iter()
                .map(|r| (r.task.clone(), r.pattern.clone()));
            stratifier = stratifier.with_classifier(KeywordClassifier::new(rules)?);
        }
        if let Some(d) = &self.default_task {
            stratifier = stratifier.with_default_task(d.clone());
        }
        Ok(stratifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, prompt: &str) -> PromptRecord {
        PromptRecord::new(id, prompt)
    }

    fn ids(strata: &Strata, task: &str) -> Vec<String> {
        strata.records(task).iter().map(|r| r.id.clone()).collect()
    }

    #[test]
    fn labels_assign_and_are_kept_on_the_record() {
        let s = Stratifier::new(["math", "chat"])
            .stratify(vec![
                rec("a", "x").with_task("math"),
                rec("b", "y").with_task("chat"),
                rec("c", "z").with_task("math"),
            ])
            .unwrap();
        assert_eq!(ids(&s, "math"), ["a", "c"]);
        assert_eq!(ids(&s, "chat"), ["b"]);
        assert_eq!(s.records("math")[1].task.as_deref(), Some("math"));
        assert_eq!(s.stratum("math").unwrap().by_label, 2);
    }

    #[test]
    fn the_classifier_places_unlabeled_prompts_and_labels_win() {
        let c = KeywordClassifier::new([("math", r"\d\s*\+\s*\d"), ("code", r"(?i)def |python")])
            .unwrap();
        let s = Stratifier::new(["math", "code", "chat"])
            .with_classifier(c)
            .with_default_task("chat")
            .stratify(vec![
                rec("a", "what is 2 + 2"),
                rec("b", "write python"),
                rec("c", "hello"),
                rec("d", "2 + 2 in python").with_task("chat"),
                PromptRecord::new(
                    "e",
                    cgpo_judges::Prompt::Messages(vec![
                        cgpo_judges::Message::new("system", "You write Python."),
                        cgpo_judges::Message::new("user", "Reverse a list."),
                    ]),
                ),
            ])
            .unwrap();
        assert_eq!(ids(&s, "math"), ["a"]);
        assert_eq!(ids(&s, "code"), ["b", "e"]);
        assert_eq!(ids(&s, "chat"), ["c", "d"]);
        let chat = s.stratum("chat").unwrap();
        assert_eq!(
            (chat.by_label, chat.by_classifier, chat.by_default),
            (1, 0, 1)
        );
        assert_eq!(s.stratum("code").unwrap().by_classifier, 2);
        assert_eq!(s.total(), 5);
        let table = s.to_string();
        assert!(
            table.contains("code") && table.lines().last().unwrap().contains('5'),
            "{table}"
        );
    }

    #[test]
    fn first_matching_rule_wins() {
        let c = KeywordClassifier::new([("a", "x"), ("b", "x")]).unwrap();
        assert_eq!(c.classify(&rec("1", "x")).as_deref(), Some("a"));
        assert_eq!(c.classify(&rec("1", "y")), None);
    }

    #[test]
    fn unassigned_prompts_are_all_reported_without_a_default() {
        let c = KeywordClassifier::new([("math", r"\d")]).unwrap();
        let err = Stratifier::new(["math"])
            .with_classifier(c)
            .stratify(vec![rec("a", "1+1"), rec("b", "hi"), rec("c", "yo")])
            .unwrap_err();
        let msgs: Vec<String> = err.data_errors().iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            [
                "field `task`: prompt `b`: no task label, no classifier match, and no default task",
                "field `task`: prompt `c`: no task label, no classifier match, and no default task"
            ]
        );
    }

    #[test]
    fn unknown_labels_and_classifier_answers_are_errors() {
        let c = KeywordClassifier::new([("poetry", "rhyme")]).unwrap();
        let err = Stratifier::new(["chat"])
            .with_classifier(c)
            .with_default_task("chat")
            .stratify(vec![rec("a", "rhyme me"), rec("b", "x").with_task("art")])
            .unwrap_err();
        let msgs: Vec<String> = err
            .data_errors()
            .iter()
            .map(|e| e.message.clone())
            .collect();
        assert_eq!(
            msgs,
            [
                "prompt `a`: the classifier returned unknown task `poetry` (tasks: chat)",
                "prompt `b`: unknown task `art` (tasks: chat)"
            ]
        );
        let bad_default = Stratifier::new(["chat"])
            .with_default_task("nope")
            .stratify(vec![])
            .unwrap_err();
        assert!(bad_default.to_string().contains("stratify.default_task"));
    }

    #[test]
    fn a_bad_classifier_pattern_names_its_rule() {
        let err = KeywordClassifier::new([("a", "ok"), ("b", "(")])
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("config `stratify.classifier[1].pattern`"),
            "{err}"
        );
    }
}
