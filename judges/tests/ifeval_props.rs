//! The ifeval judge never panics: arbitrary responses against every
//! instruction, and arbitrary (often ill-typed) kwargs. And every one of the
//! 25 instructions, those with two or three kwargs included, parses random
//! well-typed kwargs of its own and runs its check on arbitrary responses.

use cgpo_judges::ifeval::punkt::sentence_spans;
use cgpo_judges::ifeval::INSTRUCTION_IDS;
use cgpo_judges::IfevalJudge;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Each instruction id and the kwargs it takes, as in the IFEval data.
const OWN_KWARGS: [(&str, &[&str]); 25] = [
    ("keywords:existence", &["keywords"]),
    ("keywords:frequency", &["keyword", "frequency", "relation"]),
    ("keywords:forbidden_words", &["forbidden_words"]),
    (
        "keywords:letter_frequency",
        &["letter", "let_frequency", "let_relation"],
    ),
    ("language:response_language", &["language"]),
    (
        "length_constraints:number_sentences",
        &["num_sentences", "relation"],
    ),
    ("length_constraints:number_paragraphs", &["num_paragraphs"]),
    (
        "length_constraints:number_words",
        &["num_words", "relation"],
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        &["num_paragraphs", "nth_paragraph", "first_word"],
    ),
    (
        "detectable_content:number_placeholders",
        &["num_placeholders"],
    ),
    ("detectable_content:postscript", &["postscript_marker"]),
    ("detectable_format:number_bullet_lists", &["num_bullets"]),
    ("detectable_format:constrained_response", &[]),
    (
        "detectable_format:number_highlighted_sections",
        &["num_highlights"],
    ),
    (
        "detectable_format:multiple_sections",
        &["section_spliter", "num_sections"],
    ),
    ("detectable_format:json_format", &[]),
    ("detectable_format:title", &[]),
    ("combination:two_responses", &[]),
    ("combination:repeat_prompt", &["prompt_to_repeat"]),
    ("startend:end_checker", &["end_phrase"]),
    ("startend:quotation", &[]),
    (
        "change_case:capital_word_frequency",
        &["capital_frequency", "capital_relation"],
    ),
    ("change_case:english_capital", &[]),
    ("change_case:english_lowercase", &[]),
    ("punctuation:no_comma", &[]),
];

/// Random well-typed values for every kwarg name.
#[derive(Debug, Clone)]
struct KwargValues {
    words: Vec<String>,
    phrase: String,
    counts: [i64; 3],
    relations: [bool; 3],
    letter: char,
    language: &'static str,
    marker: &'static str,
    splitter: &'static str,
}

const LANGUAGES: [&str; 8] = ["en", "fr", "de", "es", "ru", "ja", "hi", "ar"];

fn kwarg_values() -> impl Strategy<Value = KwargValues> {
    (
        prop::collection::vec("[a-zA-Z]{1,10}", 1..4),
        "[A-Za-z][A-Za-z ,.!?']{0,30}",
        [1i64..12, 1i64..12, 1i64..12],
        any::<[bool; 3]>(),
        prop::char::range('a', 'z'),
        prop::sample::select(LANGUAGES.to_vec()),
        prop::sample::select(vec!["P.S.", "P.P.S", "Note:"]),
        prop::sample::select(vec!["Section", "SECTION", "Part", "Chapter"]),
    )
        .prop_map(
            |(words, phrase, counts, relations, letter, language, marker, splitter)| KwargValues {
                words,
                phrase,
                counts,
                relations,
                letter,
                language,
                marker,
                splitter,
            },
        )
}

fn relation(at_least: bool) -> &'static str {
    if at_least {
        "at least"
    } else {
        "less than"
    }
}

/// The kwargs dict of `keys`, with values drawn from `v`.
fn own_kwargs(keys: &[&str], v: &KwargValues) -> Value {
    let [a, b, _] = v.counts;
    let mut map = serde_json::Map::new();
    for key in keys {
        let value = match *key {
            "keywords" | "forbidden_words" => json!(v.words),
            "keyword" | "first_word" => json!(v.words[0]),
            "frequency" | "let_frequency" | "num_sentences" | "num_words" | "num_placeholders"
            | "num_bullets" | "num_highlights" | "num_sections" | "capital_frequency" => json!(a),
            // nth_paragraph <= num_paragraphs, as the data has it.
            "num_paragraphs" => json!(a.max(b)),
            "nth_paragraph" => json!(a.min(b)),
            "relation" => json!(relation(v.relations[0])),
            "let_relation" => json!(relation(v.relations[1])),
            "capital_relation" => json!(relation(v.relations[2])),
            "letter" => json!(v.letter.to_string()),
            "language" => json!(v.language),
            "postscript_marker" => json!(v.marker),
            "section_spliter" => json!(v.splitter),
            "prompt_to_repeat" | "end_phrase" => json!(v.phrase),
            other => panic!("no value for kwarg {other}"),
        };
        map.insert((*key).to_owned(), value);
    }
    Value::Object(map)
}

#[test]
fn the_kwargs_table_covers_every_instruction() {
    let mut ids: Vec<&str> = OWN_KWARGS.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    let mut all = INSTRUCTION_IDS.to_vec();
    all.sort_unstable();
    assert_eq!(ids, all);
    // The seven with two or more kwargs, which the single-key fuzzing
    // below cannot reach.
    assert_eq!(OWN_KWARGS.iter().filter(|(_, k)| k.len() >= 2).count(), 7);
}

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

    /// With its own well-typed kwargs, every instruction parses and its
    /// check runs: the verdict is Pass or Fail, never an Error.
    #[test]
    fn every_instruction_runs_with_its_own_kwargs(response in texty(), v in kwarg_values(), pick in 0usize..25) {
        let judge = IfevalJudge::new("ifeval");
        let (id, keys) = OWN_KWARGS[pick];
        let meta = json!({"instruction_id_list": [id], "kwargs": [own_kwargs(keys, &v)]});
        let verdict = judge.judge_one(&response, &meta);
        prop_assert!(!verdict.is_error(), "{} with {}: {:?}", id, meta, verdict);
        // All 25 at once, as one sample of the IFEval data.
        let ids: Vec<&str> = OWN_KWARGS.iter().map(|(id, _)| *id).collect();
        let kwargs: Vec<Value> = OWN_KWARGS.iter().map(|(_, k)| own_kwargs(k, &v)).collect();
        let all = json!({"instruction_id_list": ids, "kwargs": kwargs});
        let verdict = judge.judge_one(&response, &all);
        prop_assert!(!verdict.is_error(), "all 25: {:?}", verdict);
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
