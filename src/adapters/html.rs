//! HTML bodies to text with their structure (paragraphs, line breaks, list
//! items), and with the quoted part of a reply removed in the document itself
//! before it becomes text: Gmail's `gmail_quote`, Apple's and Thunderbird's
//! `blockquote type="cite"` (with `moz-cite-prefix`), Outlook's `divRplyFwdMsg`
//! and its border-top separator, Yahoo's `yahoo_quoted`, any `blockquote`.
//!
//! Parsing is html5ever's (through `scraper`), never hand-written tag
//! stripping. Pure: a string in, a string out. Used by the `inbound` adapter.

use scraper::Html;
use scraper::node::Node;

/// The text of an HTML body. With `without_quotes`, quoted parts are left
/// out: a quote container is skipped (text after it, a bottom-posted answer,
/// is kept), and an Outlook-style separator ends the text (what follows it is
/// the original mail, not quoted).
pub fn to_text(html: &str, without_quotes: bool) -> String {
    let (all, unquoted) = texts(html);
    if without_quotes { unquoted } else { all }
}

/// The text of an HTML body, and the same without its quoted parts, from one
/// parse of the document.
pub fn texts(html: &str) -> (String, String) {
    if nesting_depth(html) > MAX_DEPTH {
        // Too deep for the tree builder to stay linear: the text only, no structure.
        let flat = tidy(&flat_text(html));
        return (flat.clone(), flat);
    }
    let doc = Html::parse_document(html);
    let walk = |without_quotes: bool| {
        let mut w = Writer {
            out: String::new(),
            depth: 0,
            without_quotes,
            stopped: false,
            pre: 0,
        };
        for child in doc.tree.root().children() {
            w.node(child);
        }
        tidy(&w.out)
    };
    (walk(false), walk(true))
}

/// Deeper than this, an element's content is left out: a hostile mail of
/// 100,000 nested elements must not exhaust the stack.
const MAX_DEPTH: usize = 200;

struct Writer {
    out: String,
    /// Elements open above the current node.
    depth: usize,
    without_quotes: bool,
    /// An Outlook separator was met: the rest is the original.
    stopped: bool,
    /// Depth inside `<pre>`: white space is kept.
    pre: usize,
}

const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "header",
    "footer",
    "blockquote",
    "ul",
    "ol",
    "li",
    "table",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "hr",
    "address",
    "dl",
    "dt",
    "dd",
    "center",
];

impl Writer {
    fn node(&mut self, node: ego_tree::NodeRef<'_, Node>) {
        if self.stopped || self.depth > MAX_DEPTH {
            return;
        }
        self.depth += 1;
        self.visit(node);
        self.depth -= 1;
    }

    fn visit(&mut self, node: ego_tree::NodeRef<'_, Node>) {
        match node.value() {
            Node::Text(t) => {
                if self.pre > 0 {
                    self.out.push_str(t);
                } else {
                    // Collapse white space as a browser does.
                    let mut last_space = self.out.ends_with([' ', '\n']) || self.out.is_empty();
                    for c in t.chars() {
                        if c.is_whitespace() {
                            if !last_space {
                                self.out.push(' ');
                                last_space = true;
                            }
                        } else {
                            self.out.push(c);
                            last_space = false;
                        }
                    }
                }
            }
            Node::Element(e) => {
                let name = e.name();
                if matches!(name, "script" | "style" | "head" | "title" | "template" | "noscript") {
                    return;
                }
                if self.without_quotes {
                    if is_separator(e) {
                        self.stopped = true;
                        return;
                    }
                    if is_quote(e) {
                        self.newline();
                        return;
                    }
                }
                match name {
                    "br" => {
                        self.trim_line_end();
                        self.out.push('\n');
                        return;
                    }
                    "hr" => {
                        self.newline();
                        return;
                    }
                    _ => {}
                }
                let block = BLOCKS.contains(&name);
                let paragraph = matches!(
                    name,
                    "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "ul" | "ol" | "table"
                );
                if block {
                    self.newline();
                }
                if paragraph {
                    self.blank_line();
                }
                if name == "li" {
                    self.out.push_str("- ");
                }
                if name == "pre" {
                    self.pre += 1;
                }
                for child in node.children() {
                    self.node(child);
                }
                if name == "pre" {
                    self.pre -= 1;
                }
                if name == "td" || name == "th" {
                    self.out.push(' ');
                }
                if paragraph {
                    self.blank_line();
                } else if block {
                    self.newline();
                }
            }
            _ => {
                for child in node.children() {
                    self.node(child);
                }
            }
        }
    }

    fn trim_line_end(&mut self) {
        while self.out.ends_with(' ') {
            self.out.pop();
        }
    }

    fn newline(&mut self) {
        self.trim_line_end();
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
    }

    fn blank_line(&mut self) {
        self.newline();
        if !self.out.is_empty() && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }
}

fn has_class(e: &scraper::node::Element, class: &str) -> bool {
    e.classes().any(|c| c.eq_ignore_ascii_case(class))
}

/// A container whose content is quoted mail (skipped, the rest goes on).
fn is_quote(e: &scraper::node::Element) -> bool {
    e.name() == "blockquote"
        || has_class(e, "gmail_quote")
        || has_class(e, "gmail_quote_container")
        || has_class(e, "gmail_attr")
        || has_class(e, "yahoo_quoted")
        || has_class(e, "moz-cite-prefix")
        || e.id().is_some_and(|id| id.eq_ignore_ascii_case("appendonsend"))
}

/// Where Outlook starts the original mail (unquoted): everything from here is it.
fn is_separator(e: &scraper::node::Element) -> bool {
    if e.id().is_some_and(|id| {
        id.eq_ignore_ascii_case("divRplyFwdMsg") || id.eq_ignore_ascii_case("mail-editor-reference-message-container")
    }) {
        return true;
    }
    if e.name() == "hr" && e.id().is_some_and(|id| id.eq_ignore_ascii_case("stopSpelling")) {
        return true;
    }
    // Outlook desktop: <div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0in 0in 0in">
    e.name() == "div"
        && e.attr("style").is_some_and(|s| {
            let s = s.to_ascii_lowercase().replace(' ', "");
            s.contains("border-top:solid") && s.contains("padding:3")
        })
}

/// How deep the tags of `html` nest, at most, by a linear scan (an upper bound:
/// unclosed `<p>` and the like count as nesting).
fn nesting_depth(html: &str) -> usize {
    const VOID: &[&str] = &[
        "br", "img", "hr", "meta", "link", "input", "wbr", "area", "base", "col", "embed", "source", "track", "param",
    ];
    let b = html.as_bytes();
    let (mut depth, mut max) = (0usize, 0usize);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'<' {
            if b.get(i + 1) == Some(&b'/') {
                depth = depth.saturating_sub(1);
            } else if b.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
                let name: String = b[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .map(|&c| (c as char).to_ascii_lowercase())
                    .collect();
                let end = b[i..].iter().position(|&c| c == b'>').map(|p| i + p);
                let self_closing = end.is_some_and(|e| e > 0 && b[e - 1] == b'/');
                if !VOID.contains(&name.as_str()) && !self_closing {
                    depth += 1;
                    max = max.max(depth);
                }
            }
        }
        i += 1;
    }
    max
}

/// The text of `html` with every tag dropped (a fallback for hostile documents).
fn flat_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Trailing spaces off every line, at most one blank line in a row, no blank edges.
fn tidy(text: &str) -> String {
    let mut out = String::new();
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end().replace('\u{a0}', " ");
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_text;

    fn check(html: &str, expected: &str) {
        assert_eq!(to_text(html, true), expected, "{html}");
    }

    #[test]
    fn line_breaks_and_paragraphs_survive() {
        assert_eq!(
            to_text(
                "<p>Hi Carol,</p><p>try this:<br>one<br>two</p><div>Thanks,</div><div>Alex</div>",
                false
            ),
            "Hi Carol,\n\ntry this:\none\ntwo\n\nThanks,\nAlex"
        );
        assert_eq!(
            to_text("<ul><li>a</li><li>b</li></ul><pre>x  y\n z</pre>", false),
            "- a\n- b\n\nx  y\n z"
        );
        assert_eq!(to_text("<style>p{}</style><p>a &amp; b&nbsp;</p>", false), "a & b");
    }

    #[test]
    fn deep_nesting_is_cut_not_a_crash() {
        let html = format!("<p>top</p>{}deep{}", "<div>".repeat(100_000), "</div>".repeat(100_000));
        let text = to_text(&html, true);
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(words, vec!["top", "deep"]);
    }

    #[test]
    fn quotes_are_removed_in_the_document() {
        // Gmail.
        check(
            r#"<div dir="ltr">Done, see attached.<br><br>Alex</div><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, Nov 23, 2026 at 10:00 AM Example Support &lt;support@example.com&gt; wrote:<br></div><blockquote class="gmail_quote">##- Please type your reply above this line -##<br>hello</blockquote></div>"#,
            "Done, see attached.\n\nAlex",
        );
        // Apple Mail.
        check(
            r#"<html><body>Sure thing.<br><div><br><blockquote type="cite"><div>On 23 Nov 2026, at 10:00, Example Support wrote:</div><div>hi</div></blockquote></div></body></html>"#,
            "Sure thing.",
        );
        // Thunderbird, bottom-posted: the answer below the quote is kept.
        check(
            r#"<div class="moz-cite-prefix">On 11/23/26 10:00 AM, Example Support wrote:<br></div><blockquote type="cite">question?</blockquote><p>The answer is 42.</p>"#,
            "The answer is 42.",
        );
        // Outlook desktop: the separator div ends the answer.
        check(
            r#"<div class="WordSection1"><p class="MsoNormal">Please restart.<o:p></o:p></p><p class="MsoNormal">Regards, Alex</p><div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0in 0in 0in"><p><b>From:</b> Example Support &lt;support@example.com&gt;</p></div><p>original</p></div>"#,
            "Please restart.\n\nRegards, Alex",
        );
        // Outlook on the web.
        check(
            r#"<div>Fixed now.</div><hr style="display:inline-block;width:98%"><div id="divRplyFwdMsg"><b>From:</b> Example Support</div><div>original</div>"#,
            "Fixed now.",
        );
        // Yahoo.
        check(
            r#"<div>Yes.</div><div class="yahoo_quoted"><div>On Monday... wrote:</div><div>old</div></div>"#,
            "Yes.",
        );
    }
}
