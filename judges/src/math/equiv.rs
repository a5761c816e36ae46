//! Mathematical equivalence of two [`Answer`]s.
//!
//! Numbers compare by [`Num::approx_eq`](super::Num::approx_eq): exactly
//! when both are exact rationals, else within a relative tolerance.
//! Tuples and intervals compare item by item and their brackets must match
//! (`[0, 1)` is not `[0, 1]`); bare lists (`1, 2`) and sets (`\{1, 2\}`)
//! compare as multisets, since "enter all solutions" has no order. Text
//! compares by its normalised key. Different kinds never match.
//!
//! ```
//! use cgpo_judges::math::{equivalent, parse_answer};
//! let eq = |a: &str, b: &str| equivalent(&parse_answer(a), &parse_answer(b), 1e-9);
//! assert!(eq(r"\sqrt{12}", r"2\sqrt{3}"));
//! assert!(eq("3, -1", "-1, 3"));
//! assert!(!eq("(3, -1)", "(-1, 3)"));
//! ```

use super::parse::{Answer, Shape};

/// Whether `a` and `b` denote the same answer; `rel_tol` is for inexact numbers.
pub fn equivalent(a: &Answer, b: &Answer, rel_tol: f64) -> bool {
    match (a, b) {
        (Answer::Number(x), Answer::Number(y)) => x.approx_eq(y, rel_tol),
        (Answer::Text(x), Answer::Text(y)) => x == y,
        (
            Answer::Seq {
                shape: sa,
                items: xs,
            },
            Answer::Seq {
                shape: sb,
                items: ys,
            },
        ) => {
            if sa != sb || xs.len() != ys.len() {
                return false;
            }
            match sa {
                Shape::Delimited { .. } => {
                    xs.iter().zip(ys).all(|(x, y)| equivalent(x, y, rel_tol))
                }
                Shape::Bare | Shape::Set => multiset_eq(xs, ys, rel_tol),
            }
        }
        _ => false,
    }
}

/// Greedy matching; equivalence is transitive enough on real answers
/// (distinct solutions are far apart) that greedy finds a matching when
/// one exists.
fn multiset_eq(xs: &[Answer], ys: &[Answer], rel_tol: f64) -> bool {
    let mut used = vec![false; ys.len()];
    xs.iter().all(|x| {
        let found = ys
            .iter()
            .enumerate()
            .position(|(j, y)| !used[j] && equivalent(x, y, rel_tol));
        match found {
            Some(j) => {
                used[j] = true;
                true
            }
            None => false,
        }
    })
}
