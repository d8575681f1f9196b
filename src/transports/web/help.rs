//! The knowledge base's pages: `/help` (every article) and `/help/{slug}`
//! (one, its Markdown rendered by pulldown-cmark). Raw HTML in an article is
//! shown as text and links go only to http(s), mailto and relative
//! addresses, so an article cannot carry script; the pages' CSP allows none
//! anyway. Served whenever `[knowledge]` is configured.

use super::{Web, html};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use std::sync::Arc;

#[derive(Template)]
#[template(path = "help.html", config = "src/transports/web/askama.toml")]
struct HelpPage<'a> {
    desk: &'a str,
    title: &'a str,
    /// One article's HTML, or none for the list.
    body: Option<String>,
    list: Vec<(&'a str, &'a str)>,
}

/// Whether a link may stay a link.
fn safe_link(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    match lower.split_once(':') {
        // A colon before any slash is a scheme.
        Some((scheme, _)) if !scheme.contains(['/', '?', '#']) => ["http", "https", "mailto"].contains(&scheme),
        _ => true,
    }
}

/// An article's Markdown as HTML: raw HTML as text, unsafe links as their text.
pub fn render(markdown: &str) -> String {
    let mut dropped_links = 0usize;
    let events =
        Parser::new_ext(markdown, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH).filter_map(|e| match e {
            Event::Html(h) | Event::InlineHtml(h) => Some(Event::Text(h)),
            Event::Start(Tag::Link { ref dest_url, .. }) | Event::Start(Tag::Image { ref dest_url, .. })
                if !safe_link(dest_url) =>
            {
                dropped_links += 1;
                None
            }
            Event::End(TagEnd::Link) | Event::End(TagEnd::Image) if dropped_links > 0 => {
                dropped_links -= 1;
                None
            }
            e => Some(e),
        });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such article\n").into_response()
}

/// `GET /help`.
pub async fn index(State(web): State<Arc<Web>>) -> Response {
    let pipeline = super::portal::pipeline(&web);
    let Some(kb) = &pipeline.knowledge else {
        return not_found();
    };
    let page = HelpPage {
        desk: &pipeline.config.desk.name,
        title: "Help",
        body: None,
        list: kb
            .articles()
            .iter()
            .map(|a| (a.slug.as_str(), a.title.as_str()))
            .collect(),
    };
    html(StatusCode::OK, page.render())
}

/// `GET /help/{slug}`.
pub async fn article(State(web): State<Arc<Web>>, Path(slug): Path<String>) -> Response {
    let pipeline = super::portal::pipeline(&web);
    let Some(a) = pipeline.knowledge.as_ref().and_then(|kb| kb.article(&slug)) else {
        return not_found();
    };
    let page = HelpPage {
        desk: &pipeline.config.desk.name,
        title: &a.title,
        body: Some(render(&a.body)),
        list: Vec::new(),
    };
    html(StatusCode::OK, page.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders_without_raw_html_or_script_links() {
        let out = render(
            "Hello **there**.\n\n<script>alert(1)</script>\n\n[ok](https://example.com/a) [bad](javascript:alert(1)) [rel](/help/x) [data](DATA:text/html,x)\n",
        );
        assert!(out.contains("<strong>there</strong>"), "{out}");
        assert!(out.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{out}");
        assert!(out.contains(r#"<a href="https://example.com/a">ok</a>"#), "{out}");
        assert!(out.contains(r#"<a href="/help/x">rel</a>"#), "{out}");
        assert!(
            !out.contains("javascript:") && !out.to_lowercase().contains("data:"),
            "{out}"
        );
        assert!(out.contains("bad") && out.contains("data"), "the text stays: {out}");
    }
}
