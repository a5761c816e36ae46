//! Throughput of the math judge on `math_pairs.jsonl` (500 responses with a
//! few sentences of working, mixed answer kinds, right, wrong and
//! misformatted; written by `benches/make_math_pairs.py`). Criterion reports
//! the throughput in elements/s, i.e. answers judged per second, on one
//! thread: the same work `benches/math_verify_peer.py` times for Math-Verify.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;

use cgpo_judges::{Judge, MathJudge, Prompt, SampleView};

const PAIRS: &str = include_str!("math_pairs.jsonl");

fn load() -> Vec<(String, Value)> {
    PAIRS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("math_pairs.jsonl is valid JSON lines");
            let response = v["response"]
                .as_str()
                .expect("response is a string")
                .to_owned();
            (response, serde_json::json!({ "answer": v["answer"] }))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let pairs = load();
    let prompt = Prompt::from("q");
    let views: Vec<SampleView<'_>> = pairs
        .iter()
        .map(|(r, m)| SampleView::new("id", &prompt, r, m))
        .collect();
    let judge = MathJudge::new("math");
    let passed = judge.judge(&views).iter().filter(|v| v.is_pass()).count();
    println!("math_judge: {} answers, {passed} pass", views.len());

    let mut group = c.benchmark_group("math_judge");
    group.throughput(Throughput::Elements(views.len() as u64));
    group.bench_function("judge_500_mixed", |b| {
        b.iter(|| judge.judge(black_box(&views)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
