//! The instruction list of a prompt: IFEval's `instruction_id_list` with its
//! aligned `kwargs`, parsed into typed instructions and checked.
//!
//! As in the IFEval data, a kwargs dict may carry every argument name with
//! `null` for those that do not apply; the reference also drops other falsy
//! values (`0`, `""`, `[]`) before use, so they count as "not set" here too.
//! Where the reference would then pick a random value, this judge reports
//! bad metadata instead.

use regex::Regex;
use serde_json::{Map, Value};
use whatlang::Lang;

use super::text::Relation;
use super::{case, content, format, keywords, language, length, shape};

/// One instruction with its arguments, ready to check.
pub(crate) enum Instruction {
    KeywordsExistence(Vec<(String, Regex)>),
    KeywordsFrequency((String, Regex), usize, Relation),
    ForbiddenWords(Vec<(String, Regex)>),
    LetterFrequency(char, usize, Relation),
    ResponseLanguage(String, Lang),
    NumberSentences(usize, Relation),
    NumberParagraphs(usize),
    NumberWords(usize, Relation),
    NthParagraphFirstWord {
        paragraphs: usize,
        nth: usize,
        first_word: String,
    },
    Placeholders(usize),
    Postscript(String, Regex),
    BulletLists(usize),
    ConstrainedResponse,
    HighlightedSections(usize),
    MultipleSections(String, Regex, usize),
    JsonFormat,
    Title,
    TwoResponses,
    RepeatPrompt(String),
    EndChecker(String),
    Quotation,
    CapitalWordFrequency(usize, Relation),
    EnglishCapital,
    EnglishLowercase,
    NoComma,
}

/// Every instruction id this judge knows, in IFEval's registry order.
pub const INSTRUCTION_IDS: [&str; 25] = [
    "keywords:existence",
    "keywords:frequency",
    "keywords:forbidden_words",
    "keywords:letter_frequency",
    "language:response_language",
    "length_constraints:number_sentences",
    "length_constraints:number_paragraphs",
    "length_constraints:number_words",
    "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders",
    "detectable_content:postscript",
    "detectable_format:number_bullet_lists",
    "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections",
    "detectable_format:multiple_sections",
    "detectable_format:json_format",
    "detectable_format:title",
    "combination:two_responses",
    "combination:repeat_prompt",
    "startend:end_checker",
    "change_case:capital_word_frequency",
    "change_case:english_capital",
    "change_case:english_lowercase",
    "punctuation:no_comma",
    "startend:quotation",
];

/// Reads one kwargs dict, remembering which keys were used so that leftover
/// set keys can be reported.
struct Kwargs<'a> {
    map: Option<&'a Map<String, Value>>,
    used: Vec<&'static str>,
}

fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

impl<'a> Kwargs<'a> {
    fn get(&mut self, key: &'static str) -> Result<&'a Value, String> {
        self.used.push(key);
        self.map
            .and_then(|m| m.get(key))
            .filter(|v| is_set(v))
            .ok_or_else(|| format!("kwarg `{key}` is not set"))
    }

    fn count(&mut self, key: &'static str) -> Result<usize, String> {
        let v = self.get(key)?;
        v.as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f > 0.0)
                    .map(|f| f as u64)
            })
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("kwarg `{key}` must be a positive integer, got {v}"))
    }

    fn string(&mut self, key: &'static str) -> Result<&'a str, String> {
        let v = self.get(key)?;
        v.as_str()
            .ok_or_else(|| format!("kwarg `{key}` must be a string, got {v}"))
    }

    fn strings(&mut self, key: &'static str) -> Result<Vec<&'a str>, String> {
        let v = self.get(key)?;
        v.as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
            .ok_or_else(|| format!("kwarg `{key}` must be a list of strings, got {v}"))
    }

    fn relation(&mut self, key: &'static str) -> Result<Relation, String> {
        let s = self.string(key)?;
        Relation::parse(s).ok_or_else(|| {
            format!("kwarg `{key}` must be \"less than\" or \"at least\", got {s:?}")
        })
    }

    /// Errors on a set key that the instruction does not take.
    fn finish(self) -> Result<(), String> {
        let extra: Vec<&str> = self
            .map
            .into_iter()
            .flatten()
            .filter(|(k, v)| is_set(v) && !self.used.contains(&k.as_str()))
            .map(|(k, _)| k.as_str())
            .collect();
        if extra.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected kwargs {extra:?}"))
        }
    }
}

fn keyword_list(words: Vec<&str>, whole_word: bool) -> Result<Vec<(String, Regex)>, String> {
    words
        .into_iter()
        .map(|w| Ok((w.to_owned(), keywords::keyword_regex(w, whole_word)?)))
        .collect()
}

impl Instruction {
    /// Parses one instruction; `kwargs` is its dict (or null).
    pub(crate) fn parse(id: &str, kwargs: &Value) -> Result<Self, String> {
        let map = match kwargs {
            Value::Object(m) => Some(m),
            Value::Null => None,
            other => return Err(format!("kwargs must be an object, got {other}")),
        };
        let mut k = Kwargs {
            map,
            used: Vec::new(),
        };
        use Instruction as I;
        let instruction = match id {
            "keywords:existence" => {
                I::KeywordsExistence(keyword_list(k.strings("keywords")?, false)?)
            }
            "keywords:frequency" => {
                let word = k.string("keyword")?.trim();
                let re = keywords::keyword_regex(word, false)?;
                I::KeywordsFrequency(
                    (word.to_owned(), re),
                    k.count("frequency")?,
                    k.relation("relation")?,
                )
            }
            "keywords:forbidden_words" => {
                I::ForbiddenWords(keyword_list(k.strings("forbidden_words")?, true)?)
            }
            "keywords:letter_frequency" => {
                let letter = k.string("letter")?;
                let mut chars = letter.chars();
                let c = match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_alphabetic() => c.to_ascii_lowercase(),
                    _ => {
                        return Err(format!(
                            "kwarg `letter` must be one ASCII letter, got {letter:?}"
                        ))
                    }
                };
                I::LetterFrequency(c, k.count("let_frequency")?, k.relation("let_relation")?)
            }
            "language:response_language" => {
                let code = k.string("language")?;
                let lang = language::lang_for_code(code).ok_or_else(|| {
                    format!("language `{code}` is not supported by the language detector")
                })?;
                I::ResponseLanguage(code.to_owned(), lang)
            }
            "length_constraints:number_sentences" => {
                I::NumberSentences(k.count("num_sentences")?, k.relation("relation")?)
            }
            "length_constraints:number_paragraphs" => {
                I::NumberParagraphs(k.count("num_paragraphs")?)
            }
            "length_constraints:number_words" => {
                I::NumberWords(k.count("num_words")?, k.relation("relation")?)
            }
            "length_constraints:nth_paragraph_first_word" => {
                let paragraphs = k.count("num_paragraphs")?;
                let nth = k.count("nth_paragraph")?;
                if nth > paragraphs {
                    return Err(format!(
                        "nth_paragraph {nth} is greater than num_paragraphs {paragraphs}"
                    ));
                }
                let first_word = k.string("first_word")?.to_lowercase();
                I::NthParagraphFirstWord {
                    paragraphs,
                    nth,
                    first_word,
                }
            }
            "detectable_content:number_placeholders" => {
                I::Placeholders(k.count("num_placeholders")?)
            }
            "detectable_content:postscript" => {
                let marker = k.string("postscript_marker")?.trim();
                I::Postscript(marker.to_owned(), content::postscript_regex(marker)?)
            }
            "detectable_format:number_bullet_lists" => I::BulletLists(k.count("num_bullets")?),
            "detectable_format:constrained_response" => I::ConstrainedResponse,
            "detectable_format:number_highlighted_sections" => {
                I::HighlightedSections(k.count("num_highlights")?)
            }
            "detectable_format:multiple_sections" => {
                let splitter = k.string("section_spliter")?.trim();
                let re = format::section_regex(splitter)?;
                I::MultipleSections(splitter.to_owned(), re, k.count("num_sections")?)
            }
            "detectable_format:json_format" => I::JsonFormat,
            "detectable_format:title" => I::Title,
            "combination:two_responses" => I::TwoResponses,
            "combination:repeat_prompt" => {
                I::RepeatPrompt(k.string("prompt_to_repeat")?.to_owned())
            }
            "startend:end_checker" => I::EndChecker(k.string("end_phrase")?.trim().to_owned()),
            "startend:quotation" => I::Quotation,
            "change_case:capital_word_frequency" => I::CapitalWordFrequency(
                k.count("capital_frequency")?,
                k.relation("capital_relation")?,
            ),
            "change_case:english_capital" => I::EnglishCapital,
            "change_case:english_lowercase" => I::EnglishLowercase,
            "punctuation:no_comma" => I::NoComma,
            other => return Err(format!("unknown instruction id `{other}`")),
        };
        k.finish()?;
        Ok(instruction)
    }

    /// `Ok(())` when the response follows the instruction, else the reason.
    pub(crate) fn check(&self, response: &str) -> Result<(), String> {
        use Instruction as I;
        match self {
            I::KeywordsExistence(words) => keywords::existence(response, words),
            I::KeywordsFrequency(word, n, rel) => keywords::frequency(response, word, *n, *rel),
            I::ForbiddenWords(words) => keywords::forbidden(response, words),
            I::LetterFrequency(c, n, rel) => keywords::letter_frequency(response, *c, *n, *rel),
            I::ResponseLanguage(code, lang) => case::response_language(response, code, *lang),
            I::NumberSentences(n, rel) => length::number_sentences(response, *n, *rel),
            I::NumberParagraphs(n) => length::number_paragraphs(response, *n),
            I::NumberWords(n, rel) => length::number_words(response, *n, *rel),
            I::NthParagraphFirstWord {
                paragraphs,
                nth,
                first_word,
            } => length::nth_paragraph_first_word(response, *paragraphs, *nth, first_word),
            I::Placeholders(n) => content::placeholders(response, *n),
            I::Postscript(marker, re) => content::postscript(response, marker, re),
            I::BulletLists(n) => format::bullet_lists(response, *n),
            I::ConstrainedResponse => format::constrained_response(response),
            I::HighlightedSections(n) => format::highlighted_sections(response, *n),
            I::MultipleSections(s, re, n) => format::multiple_sections(response, s, re, *n),
            I::JsonFormat => format::json_format(response),
            I::Title => format::title(response),
            I::TwoResponses => shape::two_responses(response),
            I::RepeatPrompt(prompt) => shape::repeat_prompt(response, prompt),
            I::EndChecker(phrase) => shape::end_checker(response, phrase),
            I::Quotation => shape::quotation(response),
            I::CapitalWordFrequency(n, rel) => case::capital_word_frequency(response, *n, *rel),
            I::EnglishCapital => case::english_capital(response),
            I::EnglishLowercase => case::english_lowercase(response),
            I::NoComma => case::no_comma(response),
        }
    }
}

/// Parses a sample's metadata: `{"instruction_id_list": [...], "kwargs":
/// [...]}`, with `kwargs` optional when every instruction takes none.
pub(crate) fn parse_metadata(metadata: &Value) -> Result<Vec<(String, Instruction)>, String> {
    let ids = metadata
        .get("instruction_id_list")
        .ok_or("metadata has no `instruction_id_list`")?
        .as_array()
        .ok_or("`instruction_id_list` must be a list")?;
    let kwargs = match metadata.get("kwargs") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(a),
        Some(_) => return Err("`kwargs` must be a list".into()),
    };
    if let Some(kw) = kwargs {
        if kw.len() != ids.len() {
            return Err(format!(
                "{} instruction ids but {} kwargs dicts",
                ids.len(),
                kw.len()
            ));
        }
    }
    if ids.is_empty() {
        return Err("`instruction_id_list` is empty".into());
    }
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let id = id
                .as_str()
                .ok_or_else(|| format!("instruction id {i} must be a string, got {id}"))?;
            let kw = kwargs.map_or(&Value::Null, |k| &k[i]);
            let instruction = Instruction::parse(id, kw).map_err(|e| format!("{id}: {e}"))?;
            Ok((id.to_owned(), instruction))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(meta: Value) -> String {
        match parse_metadata(&meta) {
            Ok(_) => panic!("expected an error for {meta}"),
            Err(e) => e,
        }
    }

    #[test]
    fn every_id_parses_with_its_kwargs() {
        let kwargs = json!({
            "keywords": ["a"], "keyword": "a", "frequency": 2, "relation": "at least",
            "forbidden_words": ["b"], "letter": "Q", "let_frequency": 3, "let_relation": "less than",
            "language": "en", "num_sentences": 2, "num_paragraphs": 3, "num_words": 10,
            "nth_paragraph": 2, "first_word": "Hello", "num_placeholders": 1,
            "postscript_marker": "P.S.", "num_bullets": 2, "num_highlights": 2,
            "section_spliter": "Section", "num_sections": 2, "prompt_to_repeat": "p",
            "end_phrase": "bye", "capital_frequency": 3, "capital_relation": "at least",
        });
        for id in INSTRUCTION_IDS {
            let Value::Object(all) = &kwargs else {
                unreachable!()
            };
            // Keep only the keys this id takes: parse with all, then drop the
            // ones reported as unexpected.
            let full = Instruction::parse(id, &kwargs);
            let msg = full.err().unwrap_or_default();
            let mut mine = all.clone();
            if let Some(list) = msg.strip_prefix("unexpected kwargs ") {
                let extra: Vec<String> = serde_json::from_str(list).unwrap();
                mine.retain(|k, _| !extra.contains(k));
            }
            assert!(
                Instruction::parse(id, &Value::Object(mine)).is_ok(),
                "{id} did not parse"
            );
        }
    }

    #[test]
    fn malformed_metadata_is_an_error() {
        assert!(err(json!({})).contains("no `instruction_id_list`"));
        assert!(err(json!({"instruction_id_list": "x"})).contains("must be a list"));
        assert!(err(json!({"instruction_id_list": []})).contains("is empty"));
        assert!(err(json!({"instruction_id_list": ["a:b"], "kwargs": [{}]}))
            .contains("unknown instruction id `a:b`"));
        assert!(
            err(json!({"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]}))
                .contains("1 instruction ids but 2 kwargs")
        );
        assert!(err(json!({"instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 5}]}))
            .contains("kwarg `relation` is not set"));
        assert!(err(
            json!({"instruction_id_list": ["length_constraints:number_words"],
            "kwargs": [{"num_words": "five", "relation": "at least"}]})
        )
        .contains("must be a positive integer"));
        assert!(err(
            json!({"instruction_id_list": ["length_constraints:number_words"],
            "kwargs": [{"num_words": 5, "relation": "at most"}]})
        )
        .contains("\"less than\" or \"at least\""));
        assert!(err(
            json!({"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"num_words": 5}]})
        )
        .contains("unexpected kwargs [\"num_words\"]"));
        assert!(
            err(json!({"instruction_id_list": ["keywords:letter_frequency"],
            "kwargs": [{"letter": "ab", "let_frequency": 2, "let_relation": "at least"}]}))
            .contains("one ASCII letter")
        );
        assert!(err(json!({"instruction_id_list": ["language:response_language"], "kwargs": [{"language": "sw"}]}))
            .contains("not supported"));
        assert!(err(
            json!({"instruction_id_list": ["length_constraints:nth_paragraph_first_word"],
            "kwargs": [{"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "a"}]})
        )
        .contains("greater than"));
        assert!(
            err(json!({"instruction_id_list": [7], "kwargs": [{}]})).contains("must be a string")
        );
        assert!(
            err(json!({"instruction_id_list": ["punctuation:no_comma"], "kwargs": [3]}))
                .contains("must be an object")
        );
    }

    #[test]
    fn null_and_falsy_kwargs_are_not_set() {
        let meta = json!({"instruction_id_list": ["punctuation:no_comma", "detectable_format:title"],
            "kwargs": [{"num_words": null, "keywords": [], "letter": ""}, {"num_sections": 0}]});
        assert_eq!(parse_metadata(&meta).map(|v| v.len()), Ok(2));
        let no_kwargs = json!({"instruction_id_list": ["startend:quotation"]});
        assert!(parse_metadata(&no_kwargs).is_ok());
    }
}
