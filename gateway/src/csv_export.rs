//! CSV for spreadsheets (RFC 4180): fields separated by commas, records by CRLF, a field quoted
//! when it holds a comma, a quote, CR or LF, quotes doubled inside. A cell that begins with `=`,
//! `+`, `-`, `@`, a tab or CR is prefixed with `'`, so that a spreadsheet shows it as text and
//! never runs it as a formula (names come from the people in the meeting: treat them as hostile).

/// One record, with its CRLF.
pub fn record<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = String::new();
    for (n, field) in fields.iter().enumerate() {
        if n > 0 {
            line.push(',');
        }
        push_field(&mut line, field.as_ref());
    }
    line.push_str("\r\n");
    line
}

fn push_field(line: &mut String, field: &str) {
    let neutralized = field.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = neutralized || field.contains([',', '"', '\r', '\n']);
    if quoted {
        line.push('"');
    }
    if neutralized {
        line.push('\'');
    }
    for c in field.chars() {
        if c == '"' {
            line.push('"');
        }
        line.push(c);
    }
    if quoted {
        line.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it_and_neutralizes_formulas() {
        assert_eq!(record(&["ada", "12"]), "ada,12\r\n");
        assert_eq!(
            record(&["Lovelace, Ada", "say \"hi\"", "two\nlines"]),
            "\"Lovelace, Ada\",\"say \"\"hi\"\"\",\"two\nlines\"\r\n"
        );
        assert_eq!(
            record(&["=HYPERLINK(\"x\")", "-1", "+a", "@b", "a=b"]),
            "\"'=HYPERLINK(\"\"x\"\")\",\"'-1\",\"'+a\",\"'@b\",a=b\r\n"
        );
        assert_eq!(record::<&str>(&[]), "\r\n");
    }
}
