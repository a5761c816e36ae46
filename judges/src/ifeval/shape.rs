//! Whole-response shape: `combination:two_responses`,
//! `combination:repeat_prompt`, `startend:end_checker`, `startend:quotation`.

use super::text::py_strip;

/// Exactly two different non-blank responses separated by `******`; a blank
/// piece is allowed only before the first or after the last separator.
pub(crate) fn two_responses(response: &str) -> Result<(), String> {
    let pieces: Vec<&str> = response.split("******").collect();
    let last = pieces.len() - 1;
    let mut valid = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        if !py_strip(piece).is_empty() {
            valid.push(py_strip(piece));
        } else if i != 0 && i != last {
            return Err("a blank response between ****** separators".into());
        }
    }
    match valid.as_slice() {
        [a, b] if a != b => Ok(()),
        [_, _] => Err("the two responses are identical".into()),
        other => Err(format!(
            "{} responses separated by ******, expected 2",
            other.len()
        )),
    }
}

/// The response starts with the prompt to repeat, ignoring case and
/// surrounding whitespace.
pub(crate) fn repeat_prompt(response: &str, prompt: &str) -> Result<(), String> {
    let text = py_strip(response).to_lowercase();
    if text.starts_with(&py_strip(prompt).to_lowercase()) {
        Ok(())
    } else {
        Err("does not start by repeating the request".into())
    }
}

/// The response, less surrounding whitespace and then double quotes, ends
/// with the phrase, ignoring case.
pub(crate) fn end_checker(response: &str, phrase: &str) -> Result<(), String> {
    let text = py_strip(response).trim_matches('"').to_lowercase();
    if text.ends_with(&py_strip(phrase).to_lowercase()) {
        Ok(())
    } else {
        Err(format!("does not end with {phrase:?}"))
    }
}

/// The stripped response is longer than one character and both starts and
/// ends with `"`.
pub(crate) fn quotation(response: &str) -> Result<(), String> {
    let text = py_strip(response);
    if text.chars().count() > 1 && text.starts_with('"') && text.ends_with('"') {
        Ok(())
    } else {
        Err("not wrapped in double quotation marks".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two() {
        assert!(two_responses("A\n******\nB").is_ok());
        assert!(two_responses("******A******B******").is_ok());
        assert!(two_responses("A ****** A ").is_err());
        assert!(two_responses("A ****** B ****** C").is_err());
        assert!(two_responses("A ************ B").is_err());
        assert!(two_responses("A").is_err());
    }

    #[test]
    fn repeat() {
        assert!(repeat_prompt("  write a poem. Here it is", "Write a poem.").is_ok());
        assert!(repeat_prompt("Sure! Write a poem.", "Write a poem.").is_err());
    }

    #[test]
    fn ending() {
        assert!(end_checker("Bye. Any other questions?\"  ", "any other questions?").is_ok());
        assert!(end_checker("Any other questions? Yes.", "Any other questions?").is_err());
    }

    #[test]
    fn quotes() {
        assert!(quotation(" \"hi\" ").is_ok());
        assert!(quotation("\"").is_err());
        assert!(quotation("\"hi").is_err());
    }
}
