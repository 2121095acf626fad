//! Plain-text tables (left-aligned columns, two spaces apart) and the small
//! formatting helpers `proxy-status` and `proxy-config` share.

use std::fmt::Write;

/// Renders `header` and `rows` as aligned columns; trailing spaces trimmed.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate().take(cols) {
            if i + 1 < cols {
                let pad = widths[i] - cell.chars().count();
                let _ = write!(l, "{cell}{}  ", " ".repeat(pad));
            } else {
                l.push_str(cell);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `1d2h`, `3h4m`, `5m6s`, `7s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// At most `max` characters, with `…` when cut; newlines folded.
pub fn truncate(s: &str, max: usize) -> String {
    let flat = s.replace('\n', " ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut out: String = flat.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let t = render(
            &["A", "BB", "C"],
            &[
                vec!["xxx".into(), "y".into(), "".into()],
                vec!["1".into(), "2".into(), "3".into()],
            ],
        );
        assert_eq!(t, "A    BB  C\nxxx  y\n1    2   3\n");
    }

    #[test]
    fn formats_durations_and_truncates() {
        assert_eq!(duration(7), "7s");
        assert_eq!(duration(366), "6m6s");
        assert_eq!(duration(3 * 3600 + 240), "3h4m");
        assert_eq!(duration(90_000), "1d1h");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("a\nb", 4), "a b");
    }
}
