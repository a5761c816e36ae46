//! Training a [`BradleyTerryReward`] on preference pairs: the loss is
//! `mean(-log sigmoid(r(chosen) - r(rejected)))`, chosen and rejected
//! scored in one forward. The statistics are the pairwise `accuracy` (the
//! fraction of pairs with `r(chosen) > r(rejected)`), the mean `margin`
//! `r(chosen) - r(rejected)` and the mean score of each side.
//!
//! What the model learns is what the preferences say, biases included: on
//! pairs where the longer answer is preferred regardless of correctness it
//! learns to prefer length (`tests/reward_model.rs` measures this), which is
//! how the hackable reward models that judges guard against are made.

use std::path::Path;

use candle_core::Var;

use super::data::PairExample;
use super::stage::{BatchLoss, Split, Stage};
use crate::error::{Error, Result};
use crate::reward::{bradley_terry_loss, BradleyTerryReward};

pub struct RewardTraining {
    model: BradleyTerryReward,
    train: Vec<PairExample>,
    eval: Vec<PairExample>,
}

impl RewardTraining {
    pub fn new(model: BradleyTerryReward, train: Vec<PairExample>, eval: Vec<PairExample>) -> Self {
        Self { model, train, eval }
    }

    pub fn model(&self) -> &BradleyTerryReward {
        &self.model
    }

    pub fn into_model(self) -> BradleyTerryReward {
        self.model
    }

    fn split(&self, split: Split) -> &[PairExample] {
        match split {
            Split::Train => &self.train,
            Split::Eval => &self.eval,
        }
    }

    /// Scores of records `idx` of `split`: `(chosen, rejected)`, host copies.
    pub fn pair_scores(&self, split: Split, idx: &[usize]) -> Result<(Vec<f32>, Vec<f32>)> {
        let (c, r, _) = self.scores(split, idx, false)?;
        Ok((c.to_vec1()?, r.to_vec1()?))
    }

    fn scores(
        &self,
        split: Split,
        idx: &[usize],
        grad: bool,
    ) -> Result<(candle_core::Tensor, candle_core::Tensor, usize)> {
        let data = self.split(split);
        let pairs = idx
            .iter()
            .map(|&i| {
                data.get(i)
                    .ok_or_else(|| Error::Train(format!("reward: no record {i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let n = pairs.len();
        let join = |p: &PairExample, r: &[u32]| [p.prompt.as_slice(), r].concat();
        let seqs: Vec<Vec<u32>> = pairs
            .iter()
            .map(|p| join(p, &p.chosen))
            .chain(pairs.iter().map(|p| join(p, &p.rejected)))
            .collect();
        let scores = self.model.score_tokens(&seqs, grad)?;
        Ok((scores.narrow(0, 0, n)?, scores.narrow(0, n, n)?, n))
    }
}

impl Stage for RewardTraining {
    fn name(&self) -> &'static str {
        "reward"
    }

    fn vars(&self) -> Vec<(String, Var)> {
        self.model.vars()
    }

    fn len(&self, split: Split) -> usize {
        self.split(split).len()
    }

    fn loss(&self, split: Split, idx: &[usize], grad: bool) -> Result<BatchLoss> {
        let (chosen, rejected, n) = self.scores(split, idx, grad)?;
        let loss = bradley_terry_loss(&chosen, &rejected)?;
        let c = chosen.to_vec1::<f32>()?;
        let r = rejected.to_vec1::<f32>()?;
        let n = n.max(1) as f64;
        let wins = c.iter().zip(&r).filter(|(c, r)| c > r).count() as f64;
        let sum = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>();
        Ok(BatchLoss {
            loss,
            weight: n,
            stats: vec![
                ("accuracy", wins / n),
                ("margin", (sum(&c) - sum(&r)) / n),
                ("chosen_score", sum(&c) / n),
                ("rejected_score", sum(&r) / n),
            ],
        })
    }

    fn save(&self, dir: &Path) -> Result<()> {
        self.model.save(dir)
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        self.model.load(dir)
    }
}
