//! Human tables and JSON output, and stdout writing that survives a closed pipe.

/// Like `println!`, but a closed stdout (`sluice topic list | head -1`) ends the process
/// quietly with success instead of panicking, as Unix tools do.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// Like `print!`, with [`outln!`]'s closed-pipe behaviour.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

use crate::cli::args::OutputFormat;

/// Prints rows as an aligned table with a header line.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    crate::out!("{}", render_table(headers, rows));
}

pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = rows
        .iter()
        .map(Vec::len)
        .chain([headers.len()])
        .max()
        .unwrap_or(0);
    let mut widths = vec![0; columns];
    let all = std::iter::once(headers.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .chain(rows.iter().cloned());
    for row in all.clone() {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in all {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{:<w$}  ", cell, w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Prints `value` as pretty JSON when the output is JSON; returns whether it did.
pub fn print_json_if(format: OutputFormat, value: &serde_json::Value) -> bool {
    if format == OutputFormat::Json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_aligns_columns() {
        let t = super::render_table(
            &["TOPIC", "PARTITIONS"],
            &[vec!["a-long-name".into(), "3".into()]],
        );
        assert_eq!(t, "TOPIC        PARTITIONS\na-long-name  3\n");
    }

    #[test]
    fn ragged_rows_do_not_panic() {
        let t = super::render_table(&["A"], &[vec!["1".into(), "2".into()], vec![]]);
        assert_eq!(t, "A\n1  2\n\n");
    }
}
