//! Letter case and punctuation: `change_case:capital_word_frequency`,
//! `change_case:english_capital`, `change_case:english_lowercase`,
//! `punctuation:no_comma`, and `language:response_language`.
//!
//! Capital words are counted over NLTK's `word_tokenize` tokens, since its
//! splitting decides what a word is ("DON'T" is "DO" + "N'T", "AT&T" is
//! "AT" + "&" + "T", "CANNOT" is "CAN" + "NOT"). The tokenizer is emulated
//! here: Punkt sentences, then the Treebank-style rules that can split or
//! join letters. Rules that only move punctuation which has no case (the
//! opening-apostrophe rule, bracket conversion) are left out: they cannot
//! change whether a token is all capitals.

use std::sync::OnceLock;

use regex::Regex;
use whatlang::Lang;

use super::language;
use super::punkt::sentence_spans;
use super::text::{py_islower, py_isupper, static_regex, Relation};

/// Substitutions in NLTK's order; each pads a piece with spaces.
fn treebank_rules() -> &'static [(Regex, &'static str)] {
    static RULES: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    RULES.get_or_init(|| {
        [
            // Opening quotes.
            ("([«“‘„]|`+)", " $1 "),
            (r#"^""#, "``"),
            ("(``)", " $1 "),
            (r#"([ (\[{<])("|'{2})"#, "$1 `` "),
            // Punctuation; the sentence-final period first.
            (r#"([^.])(\.)([\])}>"'»”’ ]*)\s*$"#, "$1 $2 $3 "),
            (r"([:,])([^\d])", " $1 $2"),
            (r"([:,])$", " $1 "),
            (r"\.{2,}", " $0 "),
            (r"[;@#$%&]", " $0 "),
            ("[\u{2012}-\u{2015}]", " $0 "),
            (r"[?!]", " $0 "),
            (r"([^'])' ", "$1 ' "),
            (r"[*]", " $0 "),
            (r"[\]\[(){}<>]", " $0 "),
            ("--", " -- "),
        ]
        .into_iter()
        .map(|(p, r)| (static_regex(p), r))
        .collect()
    })
}

/// Rules applied after padding the sentence with a space at both ends.
fn ending_rules() -> &'static [(Regex, &'static str)] {
    static RULES: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    RULES.get_or_init(|| {
        [
            ("([»”’])", " $1 "),
            ("''", " '' "),
            ("\"", " '' "),
            (r"\s+", " "),
            ("([^' ])('[sS]|'[mM]|'[dD]|') ", "$1 $2 "),
            ("([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", "$1 $2 "),
            (r"(?i)\b(can)(not)\b", " $1 $2 "),
            (r"(?i)\b(d)('ye)\b", " $1 $2 "),
            (r"(?i)\b(gim)(me)\b", " $1 $2 "),
            (r"(?i)\b(gon)(na)\b", " $1 $2 "),
            (r"(?i)\b(got)(ta)\b", " $1 $2 "),
            (r"(?i)\b(lem)(me)\b", " $1 $2 "),
            (r"(?i)\b(more)('n)\b", " $1 $2 "),
            // NLTK's `(?=\s)` lookahead, consuming the space instead.
            (r"(?i)\b(wan)(na)(\s)", " $1 $2 $3"),
            (r"(?i) ('t)(is)\b", " $1 $2 "),
            (r"(?i) ('t)(was)\b", " $1 $2 "),
        ]
        .into_iter()
        .map(|(p, r)| (static_regex(p), r))
        .collect()
    })
}

/// The number of all-capital tokens (Python `str.isupper`) among NLTK's
/// `word_tokenize` tokens.
pub(crate) fn count_capital_words(text: &str) -> usize {
    let mut n = 0;
    for (a, b) in sentence_spans(text) {
        let mut s = text[a..b].to_owned();
        for (re, rep) in treebank_rules() {
            if let std::borrow::Cow::Owned(t) = re.replace_all(&s, *rep) {
                s = t;
            }
        }
        s = format!(" {s} ");
        for (re, rep) in ending_rules() {
            if let std::borrow::Cow::Owned(t) = re.replace_all(&s, *rep) {
                s = t;
            }
        }
        n += s.split_whitespace().filter(|t| py_isupper(t)).count();
    }
    n
}

pub(crate) fn capital_word_frequency(
    response: &str,
    threshold: usize,
    relation: Relation,
) -> Result<(), String> {
    relation.check(
        count_capital_words(response),
        threshold,
        "all-capital words",
    )
}

/// English (or no detectable language) and no lowercase letters.
pub(crate) fn english_capital(response: &str) -> Result<(), String> {
    if !py_isupper(response) {
        return Err("not all capital letters".into());
    }
    english(response)
}

/// English (or no detectable language) and no capital letters.
pub(crate) fn english_lowercase(response: &str) -> Result<(), String> {
    if !py_islower(response) {
        return Err("not all lowercase letters".into());
    }
    english(response)
}

fn english(response: &str) -> Result<(), String> {
    match language::detect(response) {
        None | Some(Lang::Eng) => Ok(()),
        Some(other) => Err(format!(
            "language detected as {}, not English",
            other.code()
        )),
    }
}

pub(crate) fn no_comma(response: &str) -> Result<(), String> {
    match response.matches(',').count() {
        0 => Ok(()),
        n => Err(format!("{n} commas")),
    }
}

/// The detected language is `expected` (or none is detectable).
pub(crate) fn response_language(response: &str, code: &str, expected: Lang) -> Result<(), String> {
    match language::detect(response) {
        None => Ok(()),
        Some(l) if l == expected => Ok(()),
        Some(other) => Err(format!(
            "language detected as {}, expected {code}",
            other.code()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Token counts recorded from NLTK 3.10.4's word_tokenize.
    #[test]
    fn capital_words_follow_nltk_tokenizer() {
        assert_eq!(
            count_capital_words("I CAN'T DO IT, CANNOT. AT&T is HERE: NOW!"),
            11
        );
        assert_eq!(count_capital_words("WELL-KNOWN U.S. FACTS"), 3);
        assert_eq!(count_capital_words("IT'S \"FINE\" (OK)"), 4);
        assert_eq!(count_capital_words("no caps here. 123"), 0);
    }

    #[test]
    fn capital_frequency_boundary() {
        let text = "THE END IS NEAR";
        assert!(capital_word_frequency(text, 4, Relation::AtLeast).is_ok());
        assert!(capital_word_frequency(text, 5, Relation::AtLeast).is_err());
        assert!(capital_word_frequency(text, 4, Relation::LessThan).is_err());
        assert!(capital_word_frequency(text, 5, Relation::LessThan).is_ok());
    }

    #[test]
    fn english_case() {
        let upper = "THIS IS A LONG ENGLISH SENTENCE ABOUT THE WEATHER AND THE SEA.";
        assert!(english_capital(upper).is_ok());
        assert!(english_lowercase(upper).is_err());
        assert!(english_lowercase(&upper.to_lowercase()).is_ok());
        assert!(english_capital("THIS IS a TEST").is_err());
        assert!(
            english_lowercase("c'est une phrase en français, pas en anglais du tout.").is_err()
        );
    }

    #[test]
    fn commas() {
        assert!(no_comma("no commas here").is_ok());
        assert_eq!(no_comma("a, b, c"), Err("2 commas".into()));
    }
}
