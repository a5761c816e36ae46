//! Throughput of the code judge: a batch of 16 simple, correct Python
//! solutions (HumanEval form) verified in the sandbox. Criterion reports
//! the time per batch and, through `Throughput::Elements`, verifications
//! per second.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use serde_json::json;

use cgpo_judges::{CodeJudge, Judge, Prompt, SampleView};

const BATCH: usize = 16;

fn code_judge(c: &mut Criterion) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group("code_judge");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    // The default (one run per CPU), and twice that: a run spends part of
    // its time waiting on namespace setup and teardown rather than a CPU.
    for parallelism in [cpus, 2 * cpus] {
        bench_batch(&mut group, parallelism);
    }
    group.finish();
}

fn bench_batch(group: &mut BenchmarkGroup<'_, WallTime>, parallelism: usize) {
    let params = json!({"timeout_s": 10.0, "parallelism": parallelism});
    let judge = CodeJudge::from_params("code", &params).unwrap();
    let prompt = Prompt::from("Write add(a, b).");
    let meta = json!({
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n",
        "entry_point": "add",
    });
    let responses: Vec<String> = (0..BATCH)
        .map(|i| format!("```python\ndef add(a, b):\n    # solution {i}\n    return a + b\n```"))
        .collect();
    let batch: Vec<SampleView> = responses
        .iter()
        .map(|r| SampleView::new("p", &prompt, r, &meta))
        .collect();
    // The first call resolves the interpreter and probes bubblewrap.
    let first = judge.judge(&batch);
    assert!(first.iter().all(|v| v.is_pass()), "{first:?}");

    let id = format!("humaneval_batch_{BATCH}/parallelism_{parallelism}");
    group.bench_function(id, |b| {
        b.iter(|| {
            let verdicts = judge.judge(&batch);
            assert!(verdicts.iter().all(|v| v.is_pass()));
        })
    });
}

criterion_group!(benches, code_judge);
criterion_main!(benches);
