//! Sentence counts of the Punkt re-implementation against NLTK's English
//! tokenizer on 600 generated texts (recorded by benches/ifeval_punkt_cases.py).

use cgpo_judges::ifeval::punkt::count_sentences;
use serde_json::Value;

#[test]
fn sentence_counts_match_nltk() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/punkt_counts.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    let mut mismatches = Vec::new();
    let mut total = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        let t = case["text"].as_str().unwrap();
        let want = case["count"].as_u64().unwrap() as usize;
        total += 1;
        let got = count_sentences(t);
        if got != want {
            mismatches.push(format!("{t:?}: nltk {want}, here {got}"));
        }
    }
    assert!(total >= 600);
    assert!(
        mismatches.is_empty(),
        "{} of {total} differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
