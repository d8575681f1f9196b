//! Bar charts drawn on the server as SVG (no script, no chart library):
//! the dashboard's medians per day, ratings and backlog ages.

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A bar chart of `points` (label, value; `None` draws no bar), titled, with
/// values shown by `show`. Empty data says so instead of drawing.
pub fn bars(id: &str, title: &str, points: &[(String, Option<f64>)], show: fn(f64) -> String) -> String {
    let (w, h, left, bottom, top) = (640.0, 180.0, 56.0, 28.0, 12.0);
    let max = points.iter().filter_map(|p| p.1).fold(0.0f64, f64::max);
    let mut svg = format!(
        "<svg id=\"{id}\" class=\"chart\" role=\"img\" aria-label=\"{t}\" viewBox=\"0 0 {w} {h}\" width=\"100%\" xmlns=\"http://www.w3.org/2000/svg\"><title>{t}</title>",
        t = esc(title)
    );
    if points.iter().all(|p| p.1.is_none()) {
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#4a4a4a\" font-size=\"14\">no data yet</text></svg>",
            w / 2.0,
            h / 2.0
        ));
        return svg;
    }
    let plot_w = w - left - 8.0;
    let plot_h = h - bottom - top;
    let step = plot_w / points.len().max(1) as f64;
    svg.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"#6b6b6b\"/><text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\" fill=\"#333\" font-size=\"11\">{m}</text><text x=\"{lx}\" y=\"{y}\" text-anchor=\"end\" fill=\"#333\" font-size=\"11\">0</text>",
        y = top + plot_h,
        x2 = w - 8.0,
        lx = left - 4.0,
        ty = top + 10.0,
        m = esc(&show(max))
    ));
    for (i, (label, value)) in points.iter().enumerate() {
        let x = left + i as f64 * step;
        if let Some(v) = value {
            let bh = if max > 0.0 { v / max * plot_h } else { 0.0 };
            svg.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#1f3a5f\"><title>{}: {}</title></rect>",
                x + step * 0.15,
                top + plot_h - bh,
                step * 0.7,
                bh.max(1.0),
                esc(label),
                esc(&show(*v))
            ));
        }
        let n = points.len();
        if i == 0 || i == n - 1 || (n > 8 && i % (n / 4).max(1) == 0) {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#333\" font-size=\"11\">{}</text>",
                x + step / 2.0,
                h - 8.0,
                esc(label)
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The stand-in while the charts are being read.
pub fn reading(id: &str) -> String {
    format!(
        "<svg id=\"{}\" class=\"chart\" role=\"img\" aria-label=\"charts being read\" viewBox=\"0 0 640 60\" width=\"100%\" xmlns=\"http://www.w3.org/2000/svg\"><text x=\"320\" y=\"35\" text-anchor=\"middle\" fill=\"#4a4a4a\" font-size=\"14\">The charts are being read; they appear on the next refresh.</text></svg>",
        esc(id)
    )
}

/// Seconds as hours with one decimal, or minutes under an hour.
pub fn hours(secs: f64) -> String {
    if secs < 3600.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

/// A rating of 1 to 5.
pub fn rating(r: f64) -> String {
    format!("{r:.1} of 5")
}

/// A count.
pub fn count(n: f64) -> String {
    format!("{n:.0}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn bars_escape_and_say_when_there_is_nothing() {
        let svg = super::bars(
            "c",
            "a <b>",
            &[("x<y".into(), Some(3600.0)), ("z".into(), None)],
            super::hours,
        );
        assert!(svg.contains("a &lt;b&gt;") && svg.contains("x&lt;y: 1.0 h") && !svg.contains("<b>"));
        assert_eq!(svg.matches("<rect").count(), 1);
        let empty = super::bars("c", "t", &[("x".into(), None)], super::hours);
        assert!(empty.contains("no data yet"));
    }
}
