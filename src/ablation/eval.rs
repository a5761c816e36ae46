//! Evaluation of a policy on the suite's held-out prompts, the same for
//! every run whatever it trains with: responses sampled at temperature 1
//! (seeded, the same seed at every evaluation), judged by the task's full
//! mixture of judges and scored by its reward model (raw), and the KL of
//! the policy from the warm-up on those samples.
//!
//! KL is the sequence-level single-sample estimate `Σ_t (log pi(a_t) -
//! log pi_ref(a_t))` over a response's tokens (nats), averaged over the
//! samples: an unbiased estimate of `KL(pi || pi_ref)` per response since
//! the responses are drawn from `pi`.
//!
//! ```
//! use cgpo::ablation::eval::spread;
//! assert_eq!(spread(10, 4), vec![0, 2, 5, 7]);
//! assert_eq!(spread(3, 8), vec![0, 1, 2]);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::D;
use cgpo_judges::{Message, Outcome, Prompt};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::data::{read_prompts, PromptRecord};
use crate::error::Result;
use crate::judges::JudgeRegistry;
use crate::policy::{Policy, TextTokenizer};
use crate::reward::RewardRegistry;
use crate::rollout::{generate, sequence_logprobs, SamplingConfig};
use crate::task::{build_tasks, TaskSpec};
use crate::train::load_policy;

/// One task's evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    /// Share of samples every judge of the task passes.
    pub eval_pass_rate: f64,
    /// Mean raw reward of the task's reward model.
    pub eval_reward: f64,
    /// Mean sequence-level KL from the warm-up (nats per response).
    pub kl: f64,
}

/// `n` indices spread evenly over `0..len` (all of them when `len <= n`).
pub fn spread(len: usize, n: usize) -> Vec<usize> {
    if len <= n {
        return (0..len).collect();
    }
    (0..n).map(|i| i * len / n).collect()
}

/// Evaluates policies against the suite's judges, reward models and the
/// warm-up as the reference.
pub struct Evaluator {
    tasks: Vec<TaskSpec>,
    prompts: Vec<Vec<Arc<PromptRecord>>>,
    reference: Box<dyn Policy>,
    tokenizer: Arc<dyn TextTokenizer>,
    sampling: SamplingConfig,
}

impl Evaluator {
    /// From a run config with every task's judges (`cgpo-crpg`'s), the
    /// held-out prompts (`eval_prompts` per task, spread over the file's)
    /// and `samples_per_prompt` responses to each.
    pub fn new(
        config: &RunConfig,
        eval_prompts: &std::path::Path,
        prompts_per_task: usize,
        samples_per_prompt: usize,
        seed: u64,
    ) -> Result<Self> {
        let tasks = build_tasks(
            config,
            &JudgeRegistry::with_builtins(),
            &RewardRegistry::with_builtins(),
        )?;
        let names = config.task_names();
        let records = read_prompts(eval_prompts, Some(&names))?;
        let prompts = names
            .iter()
            .map(|n| {
                let of_task: Vec<Arc<PromptRecord>> = records
                    .iter()
                    .filter(|r| r.task.as_deref() == Some(n.as_str()))
                    .map(|r| Arc::new(r.clone()))
                    .collect();
                spread(of_task.len(), prompts_per_task)
                    .into_iter()
                    .map(|i| of_task[i].clone())
                    .collect()
            })
            .collect();
        let (reference, tokenizer) = load_policy(&config.policy, config.seed)?;
        Ok(Self {
            tasks,
            prompts,
            reference,
            tokenizer,
            sampling: SamplingConfig {
                samples_per_prompt,
                temperature: 1.0,
                seed,
                ..config.train.sampling.clone()
            },
        })
    }

    /// The warm-up, the reference of the KL.
    pub fn reference(&self) -> &dyn Policy {
        self.reference.as_ref()
    }

    /// Per task (by name): pass rate, raw reward and KL of `policy`.
    pub fn evaluate(&self, policy: &dyn Policy) -> Result<BTreeMap<String, EvalPoint>> {
        let mut out = BTreeMap::new();
        for (task, records) in self.tasks.iter().zip(&self.prompts) {
            if records.is_empty() {
                continue;
            }
            let prompts = records
                .iter()
                .map(|r| self.tokenizer.encode_chat(&messages(&r.prompt)))
                .collect::<Result<Vec<_>>>()?;
            let ro = generate(policy, self.tokenizer.as_ref(), &prompts, &self.sampling)?;
            let views: Vec<_> = ro
                .prompt_index
                .iter()
                .zip(&ro.texts)
                .map(|(&p, t)| records[p].view(t))
                .collect();
            let report = task.judges.judge(&views);
            let raw = task.raw_scores(&views)?;
            let device = policy.device();
            let mask = ro.response_mask(device)?;
            let logp = ro.behaviour_logprobs(device)?;
            let logp_ref = sequence_logprobs(self.reference.as_ref(), &ro, false)?;
            let kl = ((logp - logp_ref)? * mask)?
                .sum(D::Minus1)?
                .to_vec1::<f32>()?;
            let n = views.len().max(1) as f64;
            out.insert(
                task.name.clone(),
                EvalPoint {
                    eval_pass_rate: report.count(Outcome::Satisfied) as f64 / n,
                    eval_reward: raw.iter().map(|&r| f64::from(r)).sum::<f64>() / n,
                    kl: kl.iter().map(|&k| f64::from(k)).sum::<f64>() / n,
                },
            );
        }
        Ok(out)
    }
}

fn messages(prompt: &Prompt) -> Vec<Message> {
    match prompt {
        Prompt::Text(t) => vec![Message::new("user", t.as_str())],
        Prompt::Messages(ms) => ms.clone(),
    }
}
