//! Plain-text tables aligned like `kubectl get`.
//!
//! Cells come from manifests and from servers, so they can be anything: long,
//! multi-line, full of control characters. Each cell is cut to [`MAX_CELL`]
//! characters (ending in `…`) with control characters shown as `?`, so a column is
//! never wider than that and the terminal sees no escape sequence.

/// Widest a cell is printed, in characters.
pub const MAX_CELL: usize = 64;

/// `text` on one line, at most `max` characters: control characters (C0, DEL, C1,
/// and the Unicode line and paragraph separators) become `?`, and a longer text is
/// cut and ends with `…`.
pub fn clip(text: &str, max: usize) -> String {
    let clean = |c: char| {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            '?'
        } else {
            c
        }
    };
    let mut out: String = text.chars().take(max).map(clean).collect();
    if text.chars().nth(max).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// Left-aligned columns separated by two spaces; the first row is the header.
/// Empty cells print as `empty` so columns stay readable.
pub fn aligned(rows: &[Vec<String>], empty: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            (0..columns)
                .map(|i| match r.get(i).map(String::as_str) {
                    Some("") | None => clip(empty, MAX_CELL),
                    Some(c) => clip(c, MAX_CELL),
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            table
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
                .min(MAX_CELL)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            if !line.is_empty() {
                line.push_str("  ");
            }
            line.push_str(cell);
            // Padding by hand: a width is at most MAX_CELL, never a format argument.
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_and_fills() {
        let rows = vec![
            vec!["NAME".to_string(), "READY".into()],
            vec!["corporate".into(), "".into()],
        ];
        assert_eq!(aligned(&rows, "-"), "NAME       READY\ncorporate  -\n");
    }

    /// Issue #15: a 65,528-character name made `format!("{:<w$}")` panic.
    #[test]
    fn huge_cells_are_cut_not_a_panic() {
        let name = "a".repeat(1_000_000);
        let rows = vec![
            vec!["NAME".to_string(), "READY".into()],
            vec![name, "True".into()],
        ];
        let out = aligned(&rows, "-");
        let second = out.lines().nth(1).expect("row");
        assert!(second.starts_with(&format!("{}…  True", "a".repeat(MAX_CELL - 1))));
        assert!(out.lines().all(|l| l.chars().count() <= 2 * MAX_CELL + 2));
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(
            clip("a\u{1b}[31mb\nc\u{0}d\u{85}e\u{2028}", 64),
            "a?[31mb?c?d?e?"
        );
        assert_eq!(clip("short", 64), "short");
        assert_eq!(clip("ab", 1), "…");
        assert_eq!(clip("", 0), "");
    }
}
