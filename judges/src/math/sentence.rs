//! The format rule (docs/algorithm.md §7): the response's last sentence must
//! read "The final answer is X".
//!
//! The phrase is matched ignoring ASCII case, may be followed by a colon,
//! and must begin its sentence (start of the response, or after `.`, `!`,
//! `?` or a line break). X runs to the end of the response, less one
//! trailing period; a sentence end inside X (`.`, `!`, `?` followed by a
//! space, or a line break, outside `$...$` and braces) means that more text
//! follows and the rule is broken.
//!
//! ```
//! use cgpo_judges::math::sentence::{final_answer, FinalAnswer};
//! assert_eq!(final_answer("So 6*7 = 42.\nThe final answer is $42$."), FinalAnswer::Found("$42$"));
//! assert!(matches!(final_answer("The answer is 42."), FinalAnswer::Missing { .. }));
//! assert!(matches!(
//!     final_answer("The final answer is 42. I hope it is correct."),
//!     FinalAnswer::NotLast { answer: "42", .. }
//! ));
//! ```

const PHRASE: &str = "the final answer is";

/// What the format rule found in a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalAnswer<'a> {
    /// The rule holds; X as written.
    Found(&'a str),
    /// No sentence begins with the phrase at the end of the response.
    Missing { last_sentence: &'a str },
    /// The phrase has nothing after it.
    Empty,
    /// The final-answer sentence is followed by more text.
    NotLast { answer: &'a str, after: &'a str },
}

/// Applies the format rule to `response`.
pub fn final_answer(response: &str) -> FinalAnswer<'_> {
    let text = response.trim_end();
    let missing = || FinalAnswer::Missing {
        last_sentence: last_sentence(text),
    };
    let Some(pos) = rfind_ignore_case(text, PHRASE) else {
        return missing();
    };
    if !starts_sentence(&text[..pos]) {
        return missing();
    }
    let after = text[pos + PHRASE.len()..].trim_start_matches([' ', '\t']);
    let after = after.strip_prefix(':').unwrap_or(after).trim_start();
    let x = after.strip_suffix('.').unwrap_or(after).trim_end();
    if x.is_empty() {
        return FinalAnswer::Empty;
    }
    match sentence_end(x) {
        Some(k) => FinalAnswer::NotLast {
            answer: x[..k].trim_end().trim_end_matches(['.', '!', '?']),
            after: after[k..].trim(),
        },
        None => FinalAnswer::Found(x),
    }
}

/// The last occurrence of an ASCII `needle`, ignoring ASCII case.
fn rfind_ignore_case(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    (0..=h.len().checked_sub(n.len())?)
        .rev()
        .find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Whether a sentence may begin right after `before`.
fn starts_sentence(before: &str) -> bool {
    let trimmed = before.trim_end_matches([' ', '\t']);
    trimmed.is_empty()
        || trimmed.ends_with(['\n', '\r'])
        || trimmed.trim_end().ends_with(['.', '!', '?'])
}

/// The byte index just past the first sentence end in `x` that has text
/// after it, outside math and braces.
fn sentence_end(x: &str) -> Option<usize> {
    let b = x.as_bytes();
    let (mut in_math, mut depth) = (false, 0usize);
    for (i, &c) in b.iter().enumerate() {
        let escaped = i > 0 && b[i - 1] == b'\\';
        match c {
            b'$' if !escaped => in_math = !in_math,
            b'{' if !escaped => depth += 1,
            b'}' if !escaped => depth = depth.saturating_sub(1),
            b'\n' if !in_math => return Some(i),
            b'.' | b'!' | b'?'
                if !in_math && depth == 0 && b.get(i + 1).is_some_and(u8::is_ascii_whitespace) =>
            {
                return Some(i + 1)
            }
            _ => {}
        }
    }
    None
}

/// The response's last sentence (for messages): after the last line break
/// or sentence end before the final character.
pub fn last_sentence(text: &str) -> &str {
    let body = text.trim_end().trim_end_matches(['.', '!', '?']);
    let b = body.as_bytes();
    let start = (0..b.len())
        .rev()
        .find(|&i| {
            b[i] == b'\n'
                || (matches!(b[i], b'.' | b'!' | b'?')
                    && b.get(i + 1).is_some_and(u8::is_ascii_whitespace))
        })
        .map_or(0, |i| i + 1);
    text.trim_end()[start..].trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        for (resp, x) in [
            ("The final answer is 42", "42"),
            ("the final answer is 42.", "42"),
            (
                "Work.\n\nThe final answer is: $\\boxed{42}$.  \n",
                "$\\boxed{42}$",
            ),
            ("Thus x = 2! The final answer is 3.14", "3.14"),
            ("The final answer is $x = 1. 5$", "$x = 1. 5$"),
            ("The final answer is 5 dollars.", "5 dollars"),
        ] {
            assert_eq!(final_answer(resp), FinalAnswer::Found(x), "{resp}");
        }
    }

    #[test]
    fn rejected_forms() {
        assert_eq!(
            final_answer("I think the final answer is 42."),
            FinalAnswer::Missing {
                last_sentence: "I think the final answer is 42."
            }
        );
        assert_eq!(
            final_answer("Done. The answer is 42."),
            FinalAnswer::Missing {
                last_sentence: "The answer is 42."
            }
        );
        assert_eq!(final_answer("The final answer is ."), FinalAnswer::Empty);
        assert_eq!(
            final_answer("The final answer is 42\nThanks!"),
            FinalAnswer::NotLast {
                answer: "42",
                after: "Thanks!"
            }
        );
        assert!(matches!(
            final_answer(""),
            FinalAnswer::Missing { last_sentence: "" }
        ));
        assert!(matches!(final_answer("é"), FinalAnswer::Missing { .. }));
    }
}
