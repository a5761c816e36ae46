//! Held out means disjoint. For both generated suites, every stage's data
//! (SFT demonstrations, reward-model pairs, DPO pairs, RL prompts,
//! evaluation prompts) is classified as train, dev or test, and no two
//! splits share a normalized prompt text, a (prompt, response) pair, a
//! template, an operand, a keyword, an end phrase or a topic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cgpo::split::{normalize, vocabulary_overlaps, Split};
use cgpo_suites::ablation::suite::{SuiteTask, TASKS as SUITE_TASKS};
use cgpo_suites::ablation::warmup::{Warmup, WarmupConfig};
use cgpo_suites::instruct::prompts::{records, Vocabulary, TASKS as INSTRUCT_TASKS};
use cgpo_suites::instruct::InstructOptions;
use serde_json::Value;

/// The split of a file the warm-up writes, by its name; `None` for a file
/// this test does not know (which fails the test: a new data file must be
/// classified here).
fn split_of(name: &str) -> Option<Split> {
    let stem = name.strip_suffix(".jsonl")?;
    if stem.ends_with("-dev") || stem.starts_with("dev_") || stem.ends_with("_dev") {
        Some(Split::Dev)
    } else if stem.ends_with("-test") || stem.starts_with("test_") {
        Some(Split::Test)
    } else if ["prompts", "sft", "dpo"].contains(&stem)
        || (stem.starts_with("rm-") && !stem.contains("-dev") && !stem.contains("-test"))
    {
        Some(Split::Train)
    } else {
        None
    }
}

#[derive(Default)]
struct Seen {
    prompts: BTreeMap<Split, BTreeSet<String>>,
    pairs: BTreeMap<Split, BTreeSet<(String, String)>>,
    files: BTreeMap<Split, Vec<String>>,
}

impl Seen {
    fn add(&mut self, split: Split, record: &Value) {
        let prompt = normalize(record["prompt"].as_str().expect("a prompt"));
        for key in ["response", "chosen", "rejected"] {
            if let Some(r) = record[key].as_str() {
                self.pairs
                    .entry(split)
                    .or_default()
                    .insert((prompt.clone(), normalize(r)));
            }
        }
        self.prompts.entry(split).or_default().insert(prompt);
    }

    fn assert_disjoint(&self) {
        for a in Split::ALL {
            for b in Split::ALL.into_iter().filter(|&b| b > a) {
                let (pa, pb) = (&self.prompts[&a], &self.prompts[&b]);
                let shared: Vec<_> = pa.intersection(pb).take(5).collect();
                assert!(
                    shared.is_empty(),
                    "{a:?} and {b:?} share prompts {shared:?}"
                );
                if let (Some(x), Some(y)) = (self.pairs.get(&a), self.pairs.get(&b)) {
                    let shared: Vec<_> = x.intersection(y).take(5).collect();
                    assert!(shared.is_empty(), "{a:?} and {b:?} share pairs {shared:?}");
                }
            }
        }
    }
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_file_of_the_ablation_warmup_is_in_one_split_and_splits_are_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    let warmup = Warmup::get_or_train(dir.path(), &WarmupConfig::quick(), 0, false).unwrap();
    let mut seen = Seen::default();
    for entry in std::fs::read_dir(&warmup.dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".jsonl") {
            continue;
        }
        let split = split_of(&name).unwrap_or_else(|| panic!("unclassified data file {name}"));
        for record in read_jsonl(&path) {
            seen.add(split, &record);
        }
        seen.files.entry(split).or_default().push(name);
    }
    // Every stage has data in the splits it uses.
    let files = |s: Split| seen.files[&s].iter().cloned().collect::<BTreeSet<_>>();
    let (train, dev, test) = (files(Split::Train), files(Split::Dev), files(Split::Test));
    for f in ["prompts.jsonl", "sft.jsonl", "dpo.jsonl", "rm-math.jsonl"] {
        assert!(train.contains(f), "{train:?}");
    }
    for f in [
        "dev_prompts.jsonl",
        "sft_dev.jsonl",
        "dpo_dev.jsonl",
        "rm-chat-dev.jsonl",
    ] {
        assert!(dev.contains(f), "{dev:?}");
    }
    for f in ["test_prompts.jsonl", "rm-safety-test.jsonl"] {
        assert!(test.contains(f), "{test:?}");
    }
    seen.assert_disjoint();
    // The run configs' prompt files are the warm-up's split files.
    assert!(warmup.train_prompts.ends_with("prompts.jsonl"));
    assert!(warmup.dev_prompts.ends_with("dev_prompts.jsonl"));
    assert!(warmup.test_prompts.ends_with("test_prompts.jsonl"));

    // Templates, operands, words and things: disjoint per task, and no
    // word or thing of one split is a word of another split's prompt.
    for task in SUITE_TASKS {
        for a in Split::ALL {
            for b in Split::ALL.into_iter().filter(|&b| b != a) {
                let prompts: Vec<String> = seen.prompts[&b].iter().cloned().collect();
                let shared = vocabulary_overlaps(
                    &task.vocabulary(a),
                    &task.vocabulary(b),
                    &SuiteTask::WORD_KINDS,
                    &prompts,
                );
                assert!(shared.is_empty(), "{task:?} {a:?} {b:?}: {shared:?}");
            }
        }
    }
}

#[test]
fn smollm2_splits_share_no_prompt_template_phrasing_keyword_or_topic() {
    let opts = InstructOptions::new("unused.gguf", "unused");
    let counts = |split: Split| match split {
        Split::Train => [opts.train_prompts; 3],
        s => InstructOptions::eval_prompts_for(s),
    };
    let mut seen = Seen::default();
    let mut by_split: BTreeMap<Split, Vec<String>> = BTreeMap::new();
    for split in Split::ALL {
        for (task, n) in INSTRUCT_TASKS.iter().zip(counts(split)) {
            let recs = records(task, split, n, opts.seed);
            // Every default count is met with distinct prompts (`helpful`
            // has a fixed list per split: all of it).
            let all = records(task, split, 10_000, opts.seed).len();
            assert_eq!(recs.len(), n.min(all), "{task} {split:?}");
            assert!(*task == "helpful" || recs.len() == n, "{task} {split:?}");
            for r in &recs {
                seen.add(split, r);
                by_split
                    .entry(split)
                    .or_default()
                    .push(r["prompt"].as_str().unwrap().to_string());
            }
        }
    }
    seen.assert_disjoint();
    assert!(InstructOptions::eval_prompts_for(Split::Test)[0] >= 200);

    let vocab: BTreeMap<Split, Vocabulary> =
        Split::ALL.iter().map(|&s| (s, Vocabulary::of(s))).collect();
    for a in Split::ALL {
        for b in Split::ALL.into_iter().filter(|&b| b != a) {
            let shared = vocabulary_overlaps(
                &vocab[&a].sets,
                &vocab[&b].sets,
                &Vocabulary::WORD_SETS,
                &by_split[&b],
            );
            assert!(shared.is_empty(), "{a:?} and {b:?}: {shared:?}");
        }
    }
}
