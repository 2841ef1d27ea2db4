//! The HTML page every report is written into: one self-contained file with its styles
//! inline, no script, no link, no image from anywhere, so it reads offline and fetches nothing.
//!
//! Every string a node, a dataset or an analyst supplied (job names, labels, category names,
//! reasons) goes through [`escape`] before it reaches the page; charts come from the `chart`
//! module as SVG built by `plotters`, whose text is escaped there.

use std::fmt::Write as _;

/// `s` with the five HTML-significant characters replaced by entities, safe as element text
/// and as a quoted attribute value.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The styles of every report page.
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;\
padding:0 1rem;color:#222}h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}\
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ccc;padding:.25rem .6rem;\
text-align:left}th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.note{background:#f7f7ee;border-left:4px solid #c9b458;padding:.5rem 1rem}\
figure{margin:1rem 0}figcaption{font-size:.9rem;color:#555}";

/// A whole page: `title` (plain text, escaped here) over `body` (HTML the caller built from
/// escaped parts).
pub(crate) fn page(title: &str, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let title = escape(title);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; img-src data:\">\
         <title>{title}</title><style>{STYLE}</style></head>\n<body>\n<h1>{title}</h1>\n{body}\
         </body></html>\n"
    );
    out
}

/// A table: `head` cells and `rows` of cells, all plain text escaped here; a cell starting
/// with a digit, a sign or `±` is right-aligned.
pub(crate) fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let numeric = cell
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+' || c == '±');
            let class = if numeric { " class=\"n\"" } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_replaces_every_markup_character() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("plain text é"), "plain text é");
    }

    #[test]
    fn page_and_table_escape_what_they_are_given() {
        let t = table(&["<b>"], &[vec!["<img src=x>".into()]]);
        assert!(!t.contains("<img") && !t.contains("<b>"), "{t}");
        let p = page("a<b", &t);
        assert!(p.contains("<title>a&lt;b</title>"), "{p}");
        assert!(
            p.contains("default-src 'none'"),
            "the page must forbid every fetch"
        );
    }
}
