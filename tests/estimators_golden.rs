//! Golden parity of the advantage estimators, policy losses, reward
//! aggregations and KL estimators with the peers' definitions (verl, TRL),
//! computed in float64 by `benches/estimators_peer.py` and kept in
//! `tests/data/estimators_golden.json`: every value and gradient agrees to
//! 1e-6.

use candle_core::{DType, Device, Tensor, Var};
use cgpo::kl::{kl_penalty, sequence_kl, KlEstimator};
use cgpo::ops::{kl_estimate, token_kl};
use cgpo::optim::advantage::{
    advantages, aggregate_rewards, informative, Advantage, RewardAggregation,
};
use cgpo::optim::objective::{policy_loss, Aggregation, ImportanceSampling, Objective};
use cgpo::optim::LossInputs;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

const TOL: f64 = 1e-6;

fn golden() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/estimators_golden.json"
    );
    let text = std::fs::read_to_string(path).expect("golden file");
    serde_json::from_str(&text).expect("golden JSON")
}

fn cases<T: DeserializeOwned>(section: &str) -> Vec<T> {
    let v = golden()[section].clone();
    let cases: Vec<T> = serde_json::from_value(v).expect(section);
    assert!(!cases.is_empty(), "{section} has no cases");
    cases
}

fn parse<T: DeserializeOwned>(name: &str) -> T {
    serde_json::from_value(Value::String(name.into())).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn assert_close(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= TOL,
            "{name}[{i}]: cgpo {g}, peer {w}\n{got:?}\n{want:?}"
        );
    }
}

fn matrix(rows: &[Vec<f64>]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

fn mask_of(lengths: &[usize], width: usize) -> Tensor {
    let rows: Vec<Vec<f64>> = lengths
        .iter()
        .map(|&l| (0..width).map(|t| if t < l { 1.0 } else { 0.0 }).collect())
        .collect();
    matrix(&rows)
}

#[derive(Deserialize)]
struct AdvantageCase {
    name: String,
    estimator: String,
    eps: f64,
    rewards: Vec<f64>,
    group: Vec<usize>,
    lengths: Vec<usize>,
    expected: Vec<f64>,
}

#[test]
fn advantage_estimators_match_the_peers() {
    let all: Vec<AdvantageCase> = cases("advantages");
    for c in &all {
        let est: Advantage = parse(&c.estimator);
        let got = advantages(est, &c.rewards, &c.group, &c.lengths, c.eps);
        assert_close(&c.name, &got, &c.expected);
    }
    let names: Vec<&str> = all.iter().map(|c| c.estimator.as_str()).collect();
    for want in [
        "batch",
        "per_prompt",
        "grpo",
        "rloo",
        "reinforce_pp",
        "reinforce_pp_baseline",
    ] {
        assert!(names.contains(&want), "no golden case for {want}");
    }
}

#[derive(Deserialize)]
struct AggregationCase {
    name: String,
    aggregation: String,
    then: String,
    eps: f64,
    components: Vec<Vec<f64>>,
    weights: Vec<f64>,
    group: Vec<usize>,
    expected: Vec<f64>,
}

#[test]
fn reward_aggregations_match_the_peers() {
    for c in cases::<AggregationCase>("reward_aggregation") {
        let agg: RewardAggregation = parse(&c.aggregation);
        let combined = aggregate_rewards(agg, &c.components, &c.weights, &c.group, c.eps);
        let then: Advantage = parse(&c.then);
        let lengths = vec![1; c.group.len()];
        let got = advantages(then, &combined, &c.group, &lengths, c.eps);
        assert_close(&c.name, &got, &c.expected);
    }
}

#[derive(Deserialize)]
struct LossCase {
    name: String,
    clip: Option<(f64, f64)>,
    importance_sampling: String,
    dual_clip: Option<f64>,
    aggregation: String,
    norm_constant: Option<f64>,
    dynamic_sampling: bool,
    rewards: Vec<f64>,
    group: Vec<usize>,
    lengths: Vec<usize>,
    logp: Vec<Vec<f64>>,
    old: Vec<Vec<f64>>,
    advantages: Vec<f64>,
    loss: Option<f64>,
    grad: Vec<Vec<f64>>,
}

#[test]
fn policy_losses_match_the_peers_in_value_and_gradient() {
    for c in cases::<LossCase>("policy_losses") {
        let n = c.lengths.len();
        let width = c.logp[0].len();
        let mask = mask_of(&c.lengths, width);
        let var = Var::from_tensor(&matrix(&c.logp)).unwrap();
        // The trainer's per-token log-probs are 0, with no gradient, on padding.
        let token_logp = (var.as_tensor() * &mask).unwrap();
        let inputs = LossInputs {
            seq_logp: token_logp.sum(1).unwrap(),
            seq_logp_ref: vec![0.0; n],
            seq_logp_old: vec![0.0; n],
            token_logp: token_logp.clone(),
            token_logp_old: matrix(&c.old),
            token_logp_ref: Tensor::zeros((n, width), DType::F32, &Device::Cpu).unwrap(),
            mask,
            raw: c.rewards.clone(),
            calibrated: c.rewards.clone(),
            positive: vec![true; n],
            group: c.group.clone(),
            lengths: c.lengths.clone(),
            baseline_seq_logp: vec![None; c.group.iter().max().unwrap() + 1],
            logits: None,
        };
        inputs.validate().unwrap();
        let obj = Objective {
            clip: c.clip,
            importance_sampling: parse::<ImportanceSampling>(&c.importance_sampling),
            dual_clip: c.dual_clip,
            aggregation: parse::<Aggregation>(&c.aggregation),
            norm_constant: c.norm_constant,
        };
        let keep = if c.dynamic_sampling {
            informative(&c.rewards, &c.group)
        } else {
            vec![true; n]
        };
        if c.dynamic_sampling {
            assert!(keep.iter().any(|k| !k), "{}: nothing dropped", c.name);
        }
        let (loss, _) = policy_loss(&inputs, &c.advantages, &keep, &obj).unwrap();
        if let Some(want) = c.loss {
            let got = f64::from(loss.to_scalar::<f32>().unwrap());
            assert!(
                (got - want).abs() <= TOL,
                "{}: loss {got} vs {want}",
                c.name
            );
        }
        let grads = loss.backward().unwrap();
        let grad: Vec<f64> = grads
            .get(&var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        let want: Vec<f64> = c.grad.iter().flatten().copied().collect();
        assert_close(&format!("{} (gradient)", c.name), &grad, &want);
    }
}

#[derive(Deserialize)]
struct KlCase {
    estimator: String,
    logp: Vec<f64>,
    #[serde(rename = "ref")]
    reference: Vec<f64>,
    expected: Vec<f64>,
}

#[test]
fn kl_estimators_match_verl() {
    let all: Vec<KlCase> = cases("kl");
    for c in &all {
        let est: KlEstimator = parse(&c.estimator);
        let row = |v: &[f64]| matrix(&[v.to_vec()]);
        let got = kl_estimate(&row(&c.logp), &row(&c.reference), est).unwrap();
        let got: Vec<f64> = got
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        // f32 inputs: compare relative to the value's size for k2's squares.
        let want: Vec<f64> = c.expected.clone();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= TOL * w.abs().max(1.0),
                "{}[{i}]: {g} vs {w}",
                c.estimator
            );
        }
    }
    // verl's names for the same estimators, and `exact` for `full`.
    for (alias, est) in [
        ("kl", KlEstimator::K1),
        ("mse", KlEstimator::K2),
        ("low_var_kl", KlEstimator::K3),
        ("exact", KlEstimator::Full),
    ] {
        assert_eq!(parse::<KlEstimator>(alias), est);
    }
    assert_eq!(all.len(), 4);
}

#[derive(Deserialize)]
struct KlRewardCase {
    name: String,
    estimator: String,
    coef: f64,
    scores: Vec<f64>,
    old: Vec<Vec<f64>>,
    #[serde(rename = "ref")]
    reference: Vec<Vec<f64>>,
    group: Vec<usize>,
    lengths: Vec<usize>,
    expected: Vec<f64>,
}

#[test]
fn kl_in_the_reward_matches_verl() {
    for c in cases::<KlRewardCase>("kl_in_reward") {
        let mask = mask_of(&c.lengths, c.old[0].len());
        let est: KlEstimator = parse(&c.estimator);
        let kl = sequence_kl(&matrix(&c.old), &matrix(&c.reference), &mask, est).unwrap();
        let penalized: Vec<f64> = c
            .scores
            .iter()
            .zip(&kl)
            .map(|(s, k)| s - c.coef * k)
            .collect();
        let got = advantages(Advantage::Grpo, &penalized, &c.group, &c.lengths, 1e-6);
        assert_close(&c.name, &got, &c.expected);
    }
}

#[derive(Deserialize)]
struct KlFullCase {
    policy_logits: Vec<Vec<f64>>,
    ref_logits: Vec<Vec<f64>>,
    expected: Vec<f64>,
    grad: Vec<Vec<f64>>,
}

#[test]
fn the_exact_kl_and_its_gradient_match_the_definition() {
    let c: KlFullCase = serde_json::from_value(golden()["kl_full"].clone()).unwrap();
    let zp = Var::from_tensor(&matrix(&c.policy_logits)).unwrap();
    let kl = token_kl(zp.as_tensor(), &matrix(&c.ref_logits), None).unwrap();
    let got: Vec<f64> = kl
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    assert_close("full KL", &got, &c.expected);
    let grads = kl.sum_all().unwrap().backward().unwrap();
    let grad = flat(grads.get(&zp).unwrap());
    let want: Vec<f64> = c.grad.iter().flatten().copied().collect();
    assert_close("full KL (gradient)", &grad, &want);
}

#[derive(Deserialize)]
struct KlLossCase {
    name: String,
    estimator: String,
    coef: f64,
    logp: Vec<Vec<f64>>,
    #[serde(rename = "ref")]
    reference: Vec<Vec<f64>>,
    lengths: Vec<usize>,
    loss: f64,
    grad: Vec<Vec<f64>>,
}

#[test]
fn the_kl_in_the_loss_matches_trl_in_value_and_gradient() {
    for c in cases::<KlLossCase>("kl_in_loss") {
        let mask = mask_of(&c.lengths, c.logp[0].len());
        let var = Var::from_tensor(&matrix(&c.logp)).unwrap();
        let logp = (var.as_tensor() * &mask).unwrap();
        let est: KlEstimator = parse(&c.estimator);
        let penalty =
            (kl_penalty(&logp, &matrix(&c.reference), &mask, est).unwrap() * c.coef).unwrap();
        let got = f64::from(penalty.to_scalar::<f32>().unwrap());
        assert!(
            (got - c.loss).abs() <= TOL,
            "{}: {got} vs {}",
            c.name,
            c.loss
        );
        let grads = penalty.backward().unwrap();
        let want: Vec<f64> = c.grad.iter().flatten().copied().collect();
        assert_close(
            &format!("{} (gradient)", c.name),
            &flat(grads.get(&var).unwrap()),
            &want,
        );
    }
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}
