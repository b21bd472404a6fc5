//! Plain-text tables aligned like `kubectl get`.

/// Left-aligned columns separated by two spaces; the first row is the header.
/// Empty cells print as `empty` so columns stay readable.
pub fn aligned(rows: &[Vec<String>], empty: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let cell = |r: &Vec<String>, i: usize| -> String {
        match r.get(i).map(String::as_str) {
            Some("") | None => empty.to_string(),
            Some(c) => c.to_string(),
        }
    };
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .map(|r| cell(r, i).chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, w)| format!("{:<w$}", cell(row, i)))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_and_fills() {
        let rows = vec![
            vec!["NAME".to_string(), "READY".into()],
            vec!["corporate".into(), "".into()],
        ];
        assert_eq!(
            super::aligned(&rows, "-"),
            "NAME       READY\ncorporate  -\n"
        );
    }
}
