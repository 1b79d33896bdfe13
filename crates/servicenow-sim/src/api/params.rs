//! Query strings and form bodies (`application/x-www-form-urlencoded`, decoded by `form_urlencoded`), and
//! header helpers.

use http::{HeaderMap, HeaderName, header};

use super::Req;

/// Decoded name/value pairs, in order; the first occurrence of a name wins.
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parse a query string or a form body. Malformed percent escapes are kept literally, as browsers do.
    pub fn parse(text: &[u8]) -> Params {
        Params(form_urlencoded::parse(text).into_owned().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `name=true` (any case).
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The instance URL as the caller addressed it (links and `Location` headers).
pub fn base_url(req: &Req) -> String {
    format!(
        "http://{}",
        header_str(&req.headers, &header::HOST).unwrap_or("127.0.0.1")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_a_form() {
        let p = Params::parse(b"sysparm_query=a%5Eb+c%3D&pct=100%&bad=%zz&flag=TRUE&empty&sysparm_query=second");
        assert_eq!(p.get("sysparm_query"), Some("a^b c="), "first occurrence wins");
        assert_eq!(p.get("pct"), Some("100%"));
        assert_eq!(p.get("bad"), Some("%zz"));
        assert_eq!(p.get("empty"), Some(""));
        assert!(p.flag("flag"));
        assert!(!p.flag("empty"));
        assert_eq!(p.get("missing"), None);
    }
}
