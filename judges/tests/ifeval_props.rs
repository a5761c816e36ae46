//! The ifeval judge never panics: arbitrary responses against every
//! instruction, and arbitrary (often ill-typed) kwargs.

use cgpo_judges::ifeval::punkt::sentence_spans;
use cgpo_judges::ifeval::INSTRUCTION_IDS;
use cgpo_judges::IfevalJudge;
use proptest::prelude::*;
use serde_json::{json, Value};

fn kwargs_for(word: &str, n: i64) -> Value {
    json!({
        "keywords": [word], "keyword": word, "frequency": n, "relation": "at least",
        "forbidden_words": [word], "letter": word, "let_frequency": n, "let_relation": "less than",
        "language": word, "num_sentences": n, "num_paragraphs": n, "num_words": n,
        "nth_paragraph": 1, "first_word": word, "num_placeholders": n,
        "postscript_marker": word, "num_bullets": n, "num_highlights": n,
        "section_spliter": word, "num_sections": n, "prompt_to_repeat": word,
        "end_phrase": word, "capital_frequency": n, "capital_relation": "less than",
    })
}

/// Text rich in the characters the rules look at.
fn texty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \\n\\t.!?,;:*\\-\"'()\\[\\]<>{}#@&aAzZ0-9’“”«»…İıß\u{1c}]{0,200}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics(response in texty(), word in texty(), n in -3i64..30, pick in 0usize..25) {
        let judge = IfevalJudge::new("ifeval");
        let id = INSTRUCTION_IDS[pick];
        // With every kwarg set, most ids see unexpected keys (an error);
        // with only its own, the check itself runs.
        let all = kwargs_for(&word, n);
        let _ = judge.judge_one(&response, &json!({"instruction_id_list": [id], "kwargs": [all]}));
        let Value::Object(map) = all else { unreachable!() };
        for (k, v) in map {
            let meta = json!({"instruction_id_list": [id], "kwargs": [{k: v}]});
            let _ = judge.judge_one(&response, &meta);
        }
        let own = json!({"instruction_id_list": [id], "kwargs": [{}]});
        let _ = judge.judge_one(&response, &own);
    }

    #[test]
    fn sentence_spans_are_ordered_slices(text in texty()) {
        let spans = sentence_spans(&text);
        let mut last = 0;
        for (a, b) in spans {
            prop_assert!(last <= a && a < b && b <= text.len());
            prop_assert!(text.is_char_boundary(a) && text.is_char_boundary(b));
            last = b;
        }
    }

    #[test]
    fn arbitrary_metadata_never_panics(response in texty(), meta in arb_json()) {
        let _ = IfevalJudge::new("ifeval").judge_one(&response, &meta);
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(INSTRUCTION_IDS.to_vec()).prop_map(Value::from),
        "[a-z_ ]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "instruction_id_list",
                    "kwargs",
                    "num_words",
                    "relation",
                    "keywords",
                    "letter",
                    "language",
                    "num_paragraphs",
                    "nth_paragraph",
                    "first_word",
                ]),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}
