//! `keywords:*` instructions: words that must appear, must appear a number
//! of times, must not appear, and a letter's frequency.
//!
//! Matching is case-insensitive, as in the reference. Keywords are matched
//! as literal text (the reference splices them into a regular expression,
//! so its `.` in a keyword matches any character); existence and frequency
//! match substrings ("cat" is found in "concatenate"), forbidden words match
//! whole words between `\b` boundaries.

use regex::Regex;

use super::text::{cached_regex, Relation};

/// A case-insensitive literal pattern, optionally between word boundaries.
pub(crate) fn keyword_regex(keyword: &str, whole_word: bool) -> Result<Regex, String> {
    let lit = regex::escape(keyword);
    let pattern = if whole_word {
        format!(r"\b{lit}\b")
    } else {
        lit
    };
    cached_regex(&pattern, true).map_err(|e| format!("keyword `{keyword}`: {e}"))
}

/// Every keyword occurs (as a substring, ignoring case).
pub(crate) fn existence(response: &str, keywords: &[(String, Regex)]) -> Result<(), String> {
    let missing: Vec<&str> = keywords
        .iter()
        .filter(|(_, re)| !re.is_match(response))
        .map(|(k, _)| k.as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing keywords {missing:?}"))
    }
}

/// Non-overlapping occurrences of the keyword, compared with the threshold.
pub(crate) fn frequency(
    response: &str,
    keyword: &(String, Regex),
    threshold: usize,
    relation: Relation,
) -> Result<(), String> {
    let n = keyword.1.find_iter(response).count();
    relation.check(n, threshold, &format!("occurrences of {:?}", keyword.0))
}

/// No forbidden word occurs as a whole word.
pub(crate) fn forbidden(response: &str, words: &[(String, Regex)]) -> Result<(), String> {
    let found: Vec<&str> = words
        .iter()
        .filter(|(_, re)| re.is_match(response))
        .map(|(w, _)| w.as_str())
        .collect();
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!("contains forbidden words {found:?}"))
    }
}

/// Occurrences of `letter` (lowercase ASCII) in the lowercased response.
pub(crate) fn letter_frequency(
    response: &str,
    letter: char,
    threshold: usize,
    relation: Relation,
) -> Result<(), String> {
    let n = response
        .chars()
        .flat_map(char::to_lowercase)
        .filter(|&c| c == letter)
        .count();
    relation.check(n, threshold, &format!("occurrences of letter '{letter}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw(k: &str, whole: bool) -> (String, Regex) {
        (k.to_owned(), keyword_regex(k, whole).unwrap())
    }

    #[test]
    fn existence_is_case_insensitive_substring() {
        assert!(existence("A Concatenated CAT", &[kw("cat", false), kw("a c", false)]).is_ok());
        assert_eq!(
            existence("dog", &[kw("cat", false), kw("dog", false)]),
            Err("missing keywords [\"cat\"]".into())
        );
        // Literal, not a pattern: `.` is a period.
        assert!(existence("v305", &[kw("3.5", false)]).is_err());
    }

    #[test]
    fn frequency_boundaries() {
        let k = kw("the", false);
        assert!(frequency("The the THE", &k, 3, Relation::AtLeast).is_ok());
        assert!(frequency("The the", &k, 3, Relation::AtLeast).is_err());
        assert!(frequency("The the", &k, 3, Relation::LessThan).is_ok());
        assert_eq!(
            frequency("The the THE", &k, 3, Relation::LessThan),
            Err("3 occurrences of \"the\", expected less than 3".into())
        );
    }

    #[test]
    fn forbidden_matches_whole_words() {
        let words = [kw("cat", true)];
        assert!(forbidden("concatenate", &words).is_ok());
        assert!(forbidden("a CAT.", &words).is_err());
    }

    #[test]
    fn letter_frequency_boundaries() {
        assert!(letter_frequency("Aaa bca", 'a', 4, Relation::AtLeast).is_ok());
        assert!(letter_frequency("Aaa bc", 'a', 4, Relation::AtLeast).is_err());
        assert!(letter_frequency("Aaa bc", 'a', 4, Relation::LessThan).is_ok());
        assert!(letter_frequency("Aaa bca", 'a', 4, Relation::LessThan).is_err());
    }
}
