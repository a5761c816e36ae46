//! Throughput of the ifeval judge on the cross-check set
//! (judges/tests/data/ifeval_samples.jsonl, 201 samples over all 25 ids).
//!
//!     cargo bench -p cgpo-judges --bench ifeval_judge
//!
//! Criterion reports elements/s, i.e. samples/s. The Python reference on the
//! same set: benches/ifeval_peer.py.

use cgpo_judges::{IfevalJudge, Judge, Prompt, SampleView};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;

fn load() -> Vec<(Prompt, String, Value)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ifeval_samples.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("sample set");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("sample line");
            let prompt = Prompt::from(v["prompt"].as_str().unwrap_or_default());
            let response = v["response"].as_str().unwrap_or_default().to_owned();
            (prompt, response, v)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let data = load();
    let views: Vec<SampleView> = data
        .iter()
        .map(|(p, r, m)| SampleView::new("id", p, r, m))
        .collect();
    let judge = IfevalJudge::new("ifeval");
    let mut group = c.benchmark_group("ifeval");
    group.throughput(Throughput::Elements(views.len() as u64));
    group.bench_function("judge_one_thread", |b| {
        b.iter(|| {
            views
                .iter()
                .map(|s| judge.judge_one(s.response, s.metadata))
                .filter(|v| v.is_pass())
                .count()
        })
    });
    group.bench_function("judge_batch", |b| b.iter(|| judge.judge(&views)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
