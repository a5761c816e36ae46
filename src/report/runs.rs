//! A run directory's `metrics.jsonl`, read back: train lines, evaluation
//! lines, alarms and sample responses. Lines of other kinds (a pipeline
//! stage's) are skipped; a line that is not JSON, or a `train`, `eval`,
//! `alarm` or `samples` line with a bad field, is an error naming the file,
//! the line and the field.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{DataError, Error, Origin, Result};
use crate::train::evaluate::EvalPoint;
use crate::train::monitor::{Alarm, Example};
use crate::train::TaskMetrics;

/// One evaluation line.
#[derive(Clone, Debug, Deserialize)]
pub struct EvalLine {
    pub step: u64,
    pub task: String,
    #[serde(default)]
    pub split: String,
    #[serde(flatten)]
    pub point: EvalPoint,
}

/// One `samples` line: a few responses of a task at a step.
#[derive(Clone, Debug, Deserialize)]
pub struct SamplesLine {
    pub step: u64,
    pub task: String,
    #[serde(default)]
    pub split: String,
    pub samples: Vec<Example>,
}

/// What a run directory's metrics hold.
#[derive(Clone, Debug, Default)]
pub struct RunData {
    /// The run's label in the report (the directory's name).
    pub name: String,
    pub dir: PathBuf,
    pub train: Vec<TaskMetrics>,
    pub eval: Vec<EvalLine>,
    pub alarms: Vec<Alarm>,
    pub samples: Vec<SamplesLine>,
}

impl RunData {
    /// The tasks of the run, in the order they first appear.
    pub fn tasks(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let names = self
            .train
            .iter()
            .map(|m| &m.task)
            .chain(self.eval.iter().map(|e| &e.task));
        for t in names {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }
}

fn parse<T: DeserializeOwned>(value: serde_json::Value, origin: &Origin) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        Error::Data(vec![DataError::new(
            origin,
            (field != ".").then_some(field.as_str()),
            e.inner().to_string(),
        )])
    })
}

/// Reads `dir/metrics.jsonl`.
pub fn read_run(dir: &Path) -> Result<RunData> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let file: Arc<Path> = Arc::from(path.as_path());
    let name = dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut run = RunData {
        name,
        dir: dir.to_path_buf(),
        ..RunData::default()
    };
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = Origin {
            file: file.clone(),
            line: i + 1,
        };
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                errors.push(DataError::new(&origin, None, format!("not JSON: {e}")));
                continue;
            }
        };
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let parsed = match kind {
            "train" => parse(value, &origin).map(|m| run.train.push(m)),
            "eval" => parse(value, &origin).map(|m| run.eval.push(m)),
            "alarm" => parse(value, &origin).map(|m| run.alarms.push(m)),
            "samples" => parse(value, &origin).map(|m| run.samples.push(m)),
            _ => Ok(()),
        };
        if let Err(Error::Data(mut e)) = parsed {
            errors.append(&mut e);
        }
    }
    if errors.is_empty() {
        Ok(run)
    } else {
        Err(Error::Data(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let train = serde_json::to_string(&TaskMetrics {
            kind: "train".into(),
            task: "chat".into(),
            step: 3,
            ..TaskMetrics::default()
        })
        .unwrap();
        let lines = [
            train.as_str(),
            r#"{"kind":"eval","split":"dev","step":0,"task":"math","eval_pass_rate":0.5,"eval_reward":1.0,"kl":0.0}"#,
            r#"{"kind":"samples","split":"train","step":3,"task":"chat","samples":[{"step":3,"prompt":"p","response":"r","passed":true,"reward_raw":1.5}]}"#,
            r#"{"kind":"sft","step":1,"loss":2.0}"#,
        ];
        std::fs::write(dir.path().join("metrics.jsonl"), lines.join("\n")).unwrap();
        let run = read_run(dir.path()).unwrap();
        assert_eq!(
            (run.train.len(), run.eval.len(), run.samples.len()),
            (1, 1, 1)
        );
        assert_eq!(run.tasks(), ["chat", "math"]);
        assert_eq!(run.samples[0].samples[0].response, "r");

        std::fs::write(
            dir.path().join("metrics.jsonl"),
            format!(
                "{}\nnot json\n{{\"kind\":\"eval\",\"step\":\"x\",\"task\":\"t\"}}\n",
                lines[0]
            ),
        )
        .unwrap();
        let err = read_run(dir.path()).unwrap_err();
        let msgs: Vec<String> = err.data_errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(
            msgs[0].contains("metrics.jsonl:2: ") && msgs[0].contains("not JSON"),
            "{msgs:?}"
        );
        assert!(
            msgs[1].contains("metrics.jsonl:3: field `step`"),
            "{msgs:?}"
        );
    }
}
