//! `Authentication-Results` (RFC 8601), parsed as the grammar says: comments
//! (nested, with quoted pairs) are dropped, quoted strings stay whole, so a
//! `;` or `dmarc=pass` inside a quoted value or a comment is data, not a
//! result. Alignment of a DKIM signing domain with the From domain is by
//! organisational domain, from the public suffix list (`psl`): `d=com`
//! aligns with nothing, `d=mail.example.co.uk` with `example.co.uk`.
//!
//! Pure: a header value in, values out.

/// One parsed `Authentication-Results` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthResults {
    /// The authserv-id: which server wrote the header (lowercase).
    pub authserv_id: String,
    /// The results, in order.
    pub results: Vec<MethodResult>,
}

/// One `method=result` clause with its properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodResult {
    /// `dkim`, `spf`, `dmarc`, `arc`... (lowercase, without a version).
    pub method: String,
    /// `pass`, `fail`, `none`... (lowercase).
    pub result: String,
    /// `(ptype.property, value)`, like `("header.d", "example.com")`; property names lowercase.
    pub properties: Vec<(String, String)>,
}

impl MethodResult {
    /// The value of a property, by lowercase name.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Semi,
    Eq,
    Word(String),
}

/// Splits a header value into words, `;` and `=`, dropping comments and
/// white space; quoted strings are unquoted and joined with what touches them.
fn tokens(value: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    let mut word: Option<String> = None;
    let flush = |word: &mut Option<String>, out: &mut Vec<Token>| {
        if let Some(w) = word.take() {
            out.push(Token::Word(w));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '(' => {
                flush(&mut word, &mut out);
                let mut depth = 1;
                while depth > 0 {
                    match chars.next() {
                        Some('\\') => {
                            chars.next();
                        }
                        Some('(') => depth += 1,
                        Some(')') => depth -= 1,
                        Some(_) => {}
                        None => break,
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\\') => {
                            if let Some(q) = chars.next() {
                                w.push(q);
                            }
                        }
                        Some('"') | None => break,
                        Some(q) => w.push(q),
                    }
                }
            }
            ';' => {
                flush(&mut word, &mut out);
                out.push(Token::Semi);
            }
            '=' => {
                flush(&mut word, &mut out);
                out.push(Token::Eq);
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Parses one header value; `None` when it has no authserv-id.
pub fn parse(value: &str) -> Option<AuthResults> {
    let tokens = tokens(value);
    let mut clauses = tokens.split(|t| *t == Token::Semi);
    let head = clauses.next()?;
    let authserv_id = match head.first() {
        Some(Token::Word(w)) => w.to_ascii_lowercase(),
        _ => return None,
    };
    let mut results = Vec::new();
    for clause in clauses {
        let (Some(Token::Word(method)), Some(Token::Eq), Some(Token::Word(result))) =
            (clause.first(), clause.get(1), clause.get(2))
        else {
            continue;
        };
        let method = method.split('/').next().unwrap_or("").to_ascii_lowercase();
        let mut properties = Vec::new();
        let mut i = 3;
        while i < clause.len() {
            match (clause.get(i), clause.get(i + 1), clause.get(i + 2)) {
                (Some(Token::Word(name)), Some(Token::Eq), Some(Token::Word(v))) => {
                    let name = name.to_ascii_lowercase();
                    if name != "reason" {
                        properties.push((name, v.clone()));
                    }
                    i += 3;
                }
                _ => i += 1,
            }
        }
        results.push(MethodResult {
            method,
            result: result.to_ascii_lowercase(),
            properties,
        });
    }
    Some(AuthResults { authserv_id, results })
}

/// The organisational (registrable) domain of a domain name, by the public
/// suffix list; `None` for a public suffix itself (`com`, `co.uk`) or junk.
pub fn organizational_domain(domain: &str) -> Option<String> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() || d.starts_with('.') || d.contains("..") {
        return None;
    }
    psl::domain_str(&d).map(String::from)
}

/// Whether `domain` aligns with `from_domain` (relaxed alignment: the same organisational domain).
pub fn aligned(domain: &str, from_domain: &str) -> bool {
    match (organizational_domain(domain), organizational_domain(from_domain)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A DKIM pass whose signing domain aligns with the From domain, or a DMARC
/// pass for exactly the From domain: what it was, or `None`.
pub fn aligned_pass(results: &AuthResults, from_domain: &str) -> Option<&'static str> {
    let from_domain = from_domain.to_ascii_lowercase();
    for r in &results.results {
        if r.result != "pass" {
            continue;
        }
        match r.method.as_str() {
            "dkim" => {
                let d = r.property("header.d").map(String::from).or_else(|| {
                    r.property("header.i")
                        .map(|i| i.rsplit('@').next().unwrap_or(i).to_string())
                });
                if d.is_some_and(|d| aligned(&d, &from_domain)) {
                    return Some("DKIM pass");
                }
            }
            "dmarc"
                if r.property("header.from")
                    .is_some_and(|d| d.eq_ignore_ascii_case(&from_domain)) =>
            {
                return Some("DMARC pass");
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: &str, from_domain: &str, expected: Option<&str>) {
        let parsed = parse(header).expect("parses");
        assert_eq!(aligned_pass(&parsed, from_domain), expected, "{header}");
    }

    #[test]
    fn parses_methods_and_properties() {
        let ar = parse(
            "mx.example.com 1; dkim=pass (2048-bit key) header.d=example.com header.s=s1 header.b=\"AbC=\"; spf=fail smtp.mailfrom=x@y.test; dmarc=pass (p=none) header.from=example.com",
        )
        .unwrap();
        assert_eq!(ar.authserv_id, "mx.example.com");
        assert_eq!(ar.results.len(), 3);
        assert_eq!(ar.results[0].method, "dkim");
        assert_eq!(ar.results[0].property("header.d"), Some("example.com"));
        assert_eq!(ar.results[0].property("header.b"), Some("AbC="));
        assert_eq!(ar.results[1].result, "fail");
        assert_eq!(ar.results[2].property("header.from"), Some("example.com"));
        assert_eq!(parse("mx.example.com; none").unwrap().results, vec![]);
        assert_eq!(parse(";dkim=pass"), None);
    }

    #[test]
    fn alignment_table() {
        // Aligned passes.
        check("mx; dkim=pass header.d=example.com", "example.com", Some("DKIM pass"));
        check(
            "mx; dkim=pass header.d=mail.example.com",
            "example.com",
            Some("DKIM pass"),
        );
        check(
            "mx; dkim=pass header.d=example.com",
            "eu.example.com",
            Some("DKIM pass"),
        );
        check("mx; dkim=pass header.i=@example.com", "example.com", Some("DKIM pass"));
        check(
            "mx; dmarc=pass header.from=Example.COM",
            "example.com",
            Some("DMARC pass"),
        );
        check(
            "mx; DKIM=Pass header.d=example.co.uk",
            "example.co.uk",
            Some("DKIM pass"),
        );
        // A public suffix aligns with nothing.
        check("mx; dkim=pass header.d=com", "example.com", None);
        check("mx; dkim=pass header.d=co.uk", "example.co.uk", None);
        // Another organisation under the same suffix.
        check("mx; dkim=pass header.d=evil.co.uk", "example.co.uk", None);
        check("mx; dkim=pass header.d=notexample.com", "example.com", None);
        // Not a pass.
        check("mx; dkim=fail header.d=example.com", "example.com", None);
        check("mx; dmarc=fail header.from=example.com", "example.com", None);
        // A `;` or a result inside a quoted string or a comment is data.
        check(
            "mx; spf=pass smtp.mailfrom=\"a; dmarc=pass header.from=example.com b\"@evil.test",
            "example.com",
            None,
        );
        check(
            "mx; spf=pass (; dmarc=pass header.from=example.com) smtp.mailfrom=evil.test",
            "example.com",
            None,
        );
        check(
            "mx; spf=pass (nested (; dkim=pass header.d=example.com) comment) smtp.mailfrom=e.test",
            "example.com",
            None,
        );
        check(
            "mx; dkim=pass header.d=evil.test (header.d=example.com)",
            "example.com",
            None,
        );
        check(
            "mx; dkim=pass reason=\"; dkim=pass header.d=example.com\" header.d=evil.test",
            "example.com",
            None,
        );
    }

    #[test]
    fn quoted_authserv_id_and_odd_input_never_panic() {
        for s in [
            "",
            "(",
            "\"",
            "mx; =",
            "mx; dkim",
            "mx; dkim=",
            "mx;;;",
            "mx ( ; dkim=pass",
        ] {
            let _ = parse(s);
        }
    }
}
