//! Finding the program in a response: fenced code blocks (``` or ~~~, with
//! an optional language tag), following CommonMark's fence rules closely
//! enough for model output: up to three spaces of indentation, a closing
//! fence of the same character at least as long as the opening one, and an
//! unclosed fence running to the end (a response cut off by the token limit
//! still has its code).
//!
//! Blocks tagged with another language (`bash`, `text`, `output`, ...) are
//! skipped; untagged blocks count as Python. Of the rest, the last block
//! that defines the entry point wins, else the last block.

/// One fenced block: its language tag (first word of the info string,
/// lowercased; empty when absent) and its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeBlock {
    pub lang: String,
    pub code: String,
}

/// Every fenced block in `text`, in order.
pub fn code_blocks(text: &str) -> Vec<CodeBlock> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some((fence_char, fence_len, indent, info)) = opening_fence(line) else {
            continue;
        };
        let mut code = String::new();
        for body in lines.by_ref() {
            if is_closing_fence(body, fence_char, fence_len) {
                break;
            }
            code.push_str(strip_indent(body, indent));
            code.push('\n');
        }
        let lang = info.split_whitespace().next().unwrap_or("").to_lowercase();
        blocks.push(CodeBlock { lang, code });
    }
    blocks
}

/// The Python block to run: the last one defining `entry_point` if given
/// and present, else the last Python (or untagged) block.
pub fn select_code(text: &str, entry_point: Option<&str>) -> Option<String> {
    let python: Vec<CodeBlock> = code_blocks(text)
        .into_iter()
        .filter(|b| is_python(&b.lang))
        .collect();
    let defining = entry_point.and_then(|ep| python.iter().rev().find(|b| defines(&b.code, ep)));
    defining.or(python.last()).map(|b| b.code.clone())
}

fn is_python(lang: &str) -> bool {
    matches!(lang, "" | "python" | "python3" | "py" | "py3")
}

/// Whether `code` defines `name` at top level or in a class (`def name(`,
/// `async def name(`, `class name`) or assigns it (`name = `).
pub fn defines(code: &str, name: &str) -> bool {
    code.lines().any(|line| {
        let l = line.trim_start();
        let l = l.strip_prefix("async ").unwrap_or(l);
        let rest = l
            .strip_prefix("def ")
            .or_else(|| l.strip_prefix("class "))
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix(name))
            .map(|r| r.trim_start().starts_with(['(', ':']));
        let assigned = line.starts_with(name)
            && line[name.len()..].trim_start().starts_with('=')
            && !line[name.len()..].trim_start().starts_with("==");
        rest == Some(true) || assigned
    })
}

/// `(char, length, indent, info)` when `line` opens a fence.
fn opening_fence(line: &str) -> Option<(char, usize, usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let c = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = rest.len() - rest.trim_start_matches(c).len();
    let info = rest[len..].trim();
    // A backtick fence's info string may not contain backticks (that is
    // inline code such as ```a``` on one line).
    if len < 3 || (c == '`' && info.contains('`')) {
        return None;
    }
    Some((c, len, indent, info))
}

fn is_closing_fence(line: &str, c: char, min_len: usize) -> bool {
    let t = line.trim_start_matches(' ');
    if line.len() - t.len() > 3 {
        return false;
    }
    let len = t.len() - t.trim_start_matches(c).len();
    len >= min_len && t[len..].trim().is_empty()
}

fn strip_indent(line: &str, indent: usize) -> &str {
    let spaces = line.len() - line.trim_start_matches(' ').len();
    &line[spaces.min(indent)..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_last_python_block() {
        let r = "First try:\n```python\ndef f(x):\n    return 0\n```\nBetter:\n```py\ndef f(x):\n    return x + 1\n```\nOutput:\n```text\n2\n```\n";
        assert_eq!(
            select_code(r, None).as_deref(),
            Some("def f(x):\n    return x + 1\n")
        );
    }

    #[test]
    fn prefers_the_block_defining_the_entry_point() {
        let r = "```python\ndef add(a, b):\n    return a + b\n```\nUsage:\n```python\nprint(add(1, 2))\n```\n";
        assert_eq!(
            select_code(r, Some("add")).as_deref(),
            Some("def add(a, b):\n    return a + b\n")
        );
        assert_eq!(select_code(r, None).as_deref(), Some("print(add(1, 2))\n"));
        assert_eq!(
            select_code(r, Some("missing")).as_deref(),
            Some("print(add(1, 2))\n")
        );
    }

    #[test]
    fn language_tags_tildes_indent_and_unclosed_fences() {
        let blocks = code_blocks(
            "~~~Python title=x\na = 1\n~~~\n  ````\n  b = 2\n  ```\n  still b\n  ````\n```bash\nls\n```\n```python\nc = 3",
        );
        let got: Vec<(&str, &str)> = blocks
            .iter()
            .map(|b| (b.lang.as_str(), b.code.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("python", "a = 1\n"),
                ("", "b = 2\n```\nstill b\n"),
                ("bash", "ls\n"),
                ("python", "c = 3\n"),
            ]
        );
        assert_eq!(
            select_code("```bash\nls\n```", None),
            None,
            "another language is not Python"
        );
    }

    #[test]
    fn no_block_and_inline_code() {
        assert_eq!(select_code("def f(): return 1", None), None);
        assert_eq!(select_code("Use ```f()``` here.", None), None);
        assert!(code_blocks("").is_empty());
    }

    #[test]
    fn entry_point_definitions() {
        assert!(defines("def f(x):\n    pass", "f"));
        assert!(defines("    async def f (x):", "f"));
        assert!(defines("class f:", "f"));
        assert!(defines("f = lambda x: x", "f"));
        assert!(!defines("def fa(x):", "f"));
        assert!(!defines("f == 2", "f"));
        assert!(!defines("print(f(1))", "f"));
    }
}
