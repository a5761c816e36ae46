//! A synthetic task small enough for [`crate::policy::TinyLm`] on a CPU,
//! for the pipeline's tests and bundled examples: "Is N even or odd?" for a
//! digit N, asked in one of four ways ([`TEMPLATES`]), answered
//! `ANSWER: even` or `ANSWER: odd`, optionally followed by a filler
//! sentence ([`FILLERS`]): a *long* answer, no more correct than the short
//! one.
//!
//! Preference pairs always hold one correct and one wrong answer, one of
//! them long. [`Rule::Correct`] prefers the correct one (a learnable rule);
//! [`Rule::Longer`] prefers the longer one with some probability
//! regardless of correctness: the length bias that makes a reward model
//! hackable. Held-out sets use a template or a filler that training does
//! not.
//!
//! ```
//! use cgpo::pipeline::synthetic::{parity_pairs, questions, Rule};
//! let train = questions(0..1);
//! assert_eq!(train[7].text(), "Is 7 even or odd?");
//! let pairs = parity_pairs(&train, 0..3, 4, Rule::Correct, 1);
//! assert!(pairs.iter().all(|p| p.chosen_is_correct));
//! assert!(pairs[0].record()["chosen"].as_str().unwrap().starts_with("ANSWER: "));
//! ```

use std::ops::Range;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Ways to ask about a digit (`{}`).
pub const TEMPLATES: [&str; 4] = [
    "Is {} even or odd?",
    "Is {} odd or even?",
    "Even or odd: {}?",
    "Tell me if {} is even or odd.",
];

/// Sentences that make an answer long without making it more right.
pub const FILLERS: [&str; 4] = [" Sure.", " I am certain.", " Trust me.", " No doubt."];

/// A question: a digit and how it is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Question {
    pub n: u32,
    /// An index into [`TEMPLATES`].
    pub template: usize,
}

impl Question {
    pub fn text(&self) -> String {
        TEMPLATES[self.template % TEMPLATES.len()].replace("{}", &self.n.to_string())
    }

    /// `even` or `odd`.
    pub fn parity(&self) -> &'static str {
        if self.n % 2 == 0 {
            "even"
        } else {
            "odd"
        }
    }

    /// The other word.
    pub fn wrong(&self) -> &'static str {
        if self.n % 2 == 0 {
            "odd"
        } else {
            "even"
        }
    }
}

/// The ten digits asked with each template of `templates`.
pub fn questions(templates: Range<usize>) -> Vec<Question> {
    templates
        .flat_map(|template| (0..10).map(move |n| Question { n, template }))
        .collect()
}

/// `ANSWER: <word>`, with a filler sentence when `filler` is given.
pub fn answer(word: &str, filler: Option<usize>) -> String {
    match filler {
        Some(i) => format!("ANSWER: {word}.{}", FILLERS[i % FILLERS.len()]),
        None => format!("ANSWER: {word}"),
    }
}

/// Demonstrations `{prompt, response}`: short correct answers, `count` of
/// them over `questions` (in turn).
pub fn sft_records(questions: &[Question], count: usize) -> Vec<Value> {
    questions
        .iter()
        .cycle()
        .take(count)
        .map(|q| json!({"prompt": q.text(), "response": answer(q.parity(), None)}))
        .collect()
}

/// Which answer of a pair is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// The correct one (lengths are random).
    Correct,
    /// The longer one with this probability, else the shorter one,
    /// whichever is correct.
    Longer(f64),
}

/// A preference pair with what a test needs to know about it.
#[derive(Clone, Debug, PartialEq)]
pub struct LabeledPair {
    pub question: Question,
    pub correct: String,
    pub wrong: String,
    pub correct_is_long: bool,
    pub chosen_is_correct: bool,
}

impl LabeledPair {
    pub fn chosen(&self) -> &str {
        if self.chosen_is_correct {
            &self.correct
        } else {
            &self.wrong
        }
    }

    pub fn rejected(&self) -> &str {
        if self.chosen_is_correct {
            &self.wrong
        } else {
            &self.correct
        }
    }

    /// Whether the chosen answer is the longer one.
    pub fn chosen_is_long(&self) -> bool {
        self.chosen().len() > self.rejected().len()
    }

    /// The preference record `{prompt, chosen, rejected}`.
    pub fn record(&self) -> Value {
        json!({"prompt": self.question.text(), "chosen": self.chosen(), "rejected": self.rejected()})
    }
}

/// `count` pairs over `questions` (in turn), each with the correct and the
/// wrong answer, one of them long (a fair coin) with a filler drawn from
/// `fillers`, labelled by `rule`; seeded.
pub fn parity_pairs(
    questions: &[Question],
    fillers: Range<usize>,
    count: usize,
    rule: Rule,
    seed: u64,
) -> Vec<LabeledPair> {
    let mut rng = StdRng::seed_from_u64(seed);
    questions
        .iter()
        .cycle()
        .take(count)
        .map(|&question| {
            let correct_is_long = rng.random::<bool>();
            let filler = rng.random_range(fillers.clone());
            let long = |yes: bool| yes.then_some(filler);
            let chosen_is_correct = match rule {
                Rule::Correct => true,
                Rule::Longer(p) => {
                    let chosen_is_long = rng.random::<f64>() < p;
                    chosen_is_long == correct_is_long
                }
            };
            LabeledPair {
                question,
                correct: answer(question.parity(), long(correct_is_long)),
                wrong: answer(question.wrong(), long(!correct_is_long)),
                correct_is_long,
                chosen_is_correct,
            }
        })
        .collect()
}

/// JSON lines of `records`.
pub fn jsonl(records: impl IntoIterator<Item = Value>) -> String {
    records.into_iter().map(|r| format!("{r}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_bias_holds_in_the_stated_share_of_pairs() {
        let pairs = parity_pairs(&questions(0..4), 0..3, 2000, Rule::Longer(0.8), 3);
        let longer = pairs.iter().filter(|p| p.chosen_is_long()).count();
        assert!((1520..1680).contains(&longer), "{longer}");
        let correct = pairs.iter().filter(|p| p.chosen_is_correct).count();
        assert!((900..1100).contains(&correct), "{correct}");
        for p in &pairs {
            assert_eq!(p.chosen().len() > p.rejected().len(), p.chosen_is_long());
            assert!(!p.correct.contains(FILLERS[3]) && !p.wrong.contains(FILLERS[3]));
        }
        let again = parity_pairs(&questions(0..4), 0..3, 5, Rule::Longer(0.8), 3);
        assert_eq!(again, pairs[..5]);
    }
}
