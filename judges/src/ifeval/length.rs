//! `length_constraints:*` instructions: counts of sentences (Punkt), words
//! (`\w+` runs), paragraphs separated by `***`, and paragraphs separated by
//! blank lines with a required first word.

use std::sync::OnceLock;

use regex::Regex;

use super::punkt::count_sentences;
use super::text::{count_words, py_split, py_strip, static_regex, Relation};

/// Python's `\s` as a regex class (Rust's `\s` lacks U+001C..U+001F).
pub(crate) const PY_SPACE_CLASS: &str = r"[\s\x1C-\x1F]";

pub(crate) fn number_sentences(
    response: &str,
    threshold: usize,
    relation: Relation,
) -> Result<(), String> {
    relation.check(count_sentences(response), threshold, "sentences")
}

pub(crate) fn number_words(
    response: &str,
    threshold: usize,
    relation: Relation,
) -> Result<(), String> {
    relation.check(count_words(response), threshold, "words")
}

/// Exactly `expected` paragraphs between `***` dividers (each divider may
/// take one whitespace character on either side). Empty text before the
/// first or after the last divider does not count; an empty paragraph
/// between two dividers fails.
pub(crate) fn number_paragraphs(response: &str, expected: usize) -> Result<(), String> {
    static DIVIDER: OnceLock<Regex> = OnceLock::new();
    let divider =
        DIVIDER.get_or_init(|| static_regex(&format!(r"{PY_SPACE_CLASS}?\*\*\*{PY_SPACE_CLASS}?")));
    let parts: Vec<&str> = divider.split(response).collect();
    let last = parts.len() - 1;
    let mut n = parts.len();
    for (i, part) in parts.iter().enumerate() {
        if py_strip(part).is_empty() {
            if i == 0 || i == last {
                n -= 1;
            } else {
                return Err(format!("paragraph {} between *** dividers is empty", i + 1));
            }
        }
    }
    if n == expected {
        Ok(())
    } else {
        Err(format!(
            "{n} paragraphs separated by ***, expected {expected}"
        ))
    }
}

/// Exactly `expected` non-empty paragraphs separated by `\n\n`, and the
/// `nth` piece (1-based, counting empty pieces as the reference does)
/// starts with `first_word` (lowercase), after leading quotes and up to the
/// first of `. , ? ! ' "`, ignoring case.
pub(crate) fn nth_paragraph_first_word(
    response: &str,
    expected: usize,
    nth: usize,
    first_word: &str,
) -> Result<(), String> {
    let pieces: Vec<&str> = response.split("\n\n").collect();
    let n = pieces.iter().filter(|p| !py_strip(p).is_empty()).count();
    if nth > n {
        return Err(format!(
            "{n} paragraphs, so there is no paragraph {nth} (expected {expected})"
        ));
    }
    let paragraph = py_strip(pieces[nth - 1]);
    let Some(word) = py_split(paragraph).next() else {
        return Err(format!("paragraph {nth} is empty"));
    };
    let word = word.trim_start_matches('\'').trim_start_matches('"');
    let found: String = word
        .chars()
        .take_while(|c| !matches!(c, '.' | ',' | '?' | '!' | '\'' | '"'))
        .flat_map(char::to_lowercase)
        .collect();
    if n != expected {
        Err(format!("{n} paragraphs, expected {expected}"))
    } else if found != first_word {
        Err(format!(
            "paragraph {nth} starts with {found:?}, expected {first_word:?}"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_boundary() {
        let text = "one two three, four-five";
        assert!(number_words(text, 5, Relation::LessThan).is_err());
        assert!(number_words(text, 6, Relation::LessThan).is_ok());
        assert!(number_words(text, 5, Relation::AtLeast).is_ok());
        assert_eq!(
            number_words(text, 6, Relation::AtLeast),
            Err("5 words, expected at least 6".into())
        );
    }

    #[test]
    fn sentences_boundary() {
        let text = "Dr. Who is here. He waits. Why?";
        assert!(number_sentences(text, 3, Relation::AtLeast).is_ok());
        assert!(number_sentences(text, 4, Relation::AtLeast).is_err());
        assert!(number_sentences(text, 3, Relation::LessThan).is_err());
        assert!(number_sentences(text, 4, Relation::LessThan).is_ok());
    }

    #[test]
    fn star_paragraphs() {
        assert!(number_paragraphs("a\n***\nb\n***\nc", 3).is_ok());
        assert!(number_paragraphs("***\na *** b\n***", 2).is_ok());
        assert!(number_paragraphs("a *** b", 3).is_err());
        assert_eq!(
            number_paragraphs("a *** *** b", 2),
            Err("paragraph 2 between *** dividers is empty".into())
        );
    }

    #[test]
    fn nth_paragraph() {
        let text = "Intro here.\n\n\"Second, para\n\nThird";
        assert!(nth_paragraph_first_word(text, 3, 2, "second").is_ok());
        assert!(nth_paragraph_first_word(text, 2, 2, "second").is_err());
        assert!(nth_paragraph_first_word(text, 3, 2, "third").is_err());
        assert!(nth_paragraph_first_word(text, 3, 4, "x").is_err());
        // An empty piece still takes an index.
        assert!(nth_paragraph_first_word("a\n\n\n\nb", 2, 2, "b").is_err());
    }
}
