//! HTTP routes and methods, when two triggers conflict, and the one form of request path
//! that routes are matched against.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::HttpTrigger;

/// Whether a route names one path or everything below a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Matches exactly this path.
    Exact,
    /// Matches the base path and every path below it (written `/base/...`).
    Prefix,
}

/// A route: `/hello` (exact) or `/orders/...` (the prefix `/orders` and all below it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Route {
    base: String,
    kind: RouteKind,
}

impl Route {
    /// The path without the `/...` suffix (`/` for the catch-all `/...`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Exact or prefix.
    pub fn kind(&self) -> RouteKind {
        self.kind
    }

    /// Whether this route matches a request path (without its query string).
    pub fn matches(&self, path: &str) -> bool {
        match self.kind {
            RouteKind::Exact => path == self.base,
            RouteKind::Prefix => {
                if self.base == "/" {
                    return true;
                }
                match path.strip_prefix(self.base.as_str()) {
                    Some(rest) => rest.is_empty() || rest.starts_with('/'),
                    None => false,
                }
            }
        }
    }
}

impl TryFrom<String> for Route {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let (base, kind) = match text.strip_suffix("/...") {
            Some("") => ("/".to_owned(), RouteKind::Prefix),
            Some(base) => (base.to_owned(), RouteKind::Prefix),
            None => (text.clone(), RouteKind::Exact),
        };
        let problem = if !base.starts_with('/') {
            Some("it must start with `/`")
        } else if base.contains(['?', '#', '*', ' ']) {
            Some("it may not contain `?`, `#`, `*` or spaces; use `/base/...` to match a prefix")
        } else if base.contains("...") {
            Some("`...` is only allowed as the last segment, as in `/orders/...`")
        } else if base.len() > 1 && base.ends_with('/') {
            Some("remove the trailing `/`")
        } else if base.contains("//") {
            Some("it contains an empty segment `//`")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(format!("invalid route `{text}`: {problem}")),
            None => Ok(Route { base, kind }),
        }
    }
}

impl From<Route> for String {
    fn from(route: Route) -> String {
        route.to_string()
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.base.as_str()) {
            (RouteKind::Exact, base) => f.write_str(base),
            (RouteKind::Prefix, "/") => f.write_str("/..."),
            (RouteKind::Prefix, base) => write!(f, "{base}/..."),
        }
    }
}

/// Why a request path is not in the one form routes are matched against, if it is not.
///
/// A canonical path has no empty segment (`//`), no `.` or `..` segment, and no
/// percent-encoding that decodes to an unreserved character or `/`; every `%` is followed by
/// two hex digits. The gateway refuses other paths, so a guest router that normalises
/// `//admin` or `/%61dmin` to `/admin` never sees a path the gateway read otherwise.
pub fn non_canonical_path(path: &str) -> Option<&'static str> {
    let bytes = path.as_bytes();
    if path.contains("//") {
        return Some("an empty segment `//`");
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Some("a `.` or `..` segment");
    }
    for (i, byte) in bytes.iter().enumerate() {
        if *byte != b'%' {
            continue;
        }
        // Checked digit by digit: `u8::from_str_radix` also accepts a sign, as in `%+1`.
        let decoded = bytes
            .get(i + 1..i + 3)
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            None => return Some("a `%` not followed by two hex digits"),
            // RFC 3986: unreserved characters must not be percent-encoded, and an encoded
            // `/` would hide a segment boundary from the router.
            Some(c) if c.is_ascii_alphanumeric() || b"-._~/".contains(&c) => {
                return Some("a percent-encoded letter, digit, `-._~` or `/`");
            }
            Some(_) => {}
        }
    }
    None
}

/// An HTTP method a trigger accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, pattern = "^(GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS|CONNECT|TRACE)$", example = "GET"))]
pub struct Method(String);

impl Method {
    /// The method in upper case, as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

impl TryFrom<String> for Method {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if METHODS.contains(&text.as_str()) {
            Ok(Method(text))
        } else {
            Err(format!(
                "invalid method `{text}`: use one of {}",
                METHODS.join(", ")
            ))
        }
    }
}

impl From<Method> for String {
    fn from(method: Method) -> String {
        method.0
    }
}

/// Why two triggers cannot both be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConflict(String);

impl fmt::Display for RouteConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Two triggers conflict when they have the same route and share a method.
///
/// Nested prefixes (`/api/...` and `/api/orders/...`) and an exact path under a prefix do
/// not conflict: the most specific route wins, as in Spin.
pub fn conflict(a: &HttpTrigger, b: &HttpTrigger) -> Option<RouteConflict> {
    if a.route != b.route {
        return None;
    }
    let shared: Vec<&str> = if a.methods.is_empty() {
        if b.methods.is_empty() {
            return Some(RouteConflict(
                "both accept every method; give them disjoint `methods`".to_owned(),
            ));
        }
        b.methods.iter().map(Method::as_str).collect()
    } else if b.methods.is_empty() {
        a.methods.iter().map(Method::as_str).collect()
    } else {
        a.methods
            .iter()
            .filter(|m| b.methods.contains(m))
            .map(Method::as_str)
            .collect()
    };
    if shared.is_empty() {
        None
    } else {
        Some(RouteConflict(format!("both accept {}", shared.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(text: &str) -> Route {
        Route::try_from(text.to_owned()).unwrap()
    }

    #[test]
    fn exact_route_matches_only_its_path() {
        assert!(route("/hello").matches("/hello"));
        assert!(!route("/hello").matches("/hello/x"));
        assert!(!route("/hello").matches("/hellox"));
    }

    #[test]
    fn prefix_route_matches_base_and_below_but_not_siblings() {
        let r = route("/orders/...");
        assert!(r.matches("/orders"));
        assert!(r.matches("/orders/42"));
        assert!(!r.matches("/ordersx"));
        assert!(route("/...").matches("/anything/at/all"));
    }

    #[test]
    fn refuses_malformed_routes() {
        for bad in ["hello", "/a?b", "/a/*", "/a/.../b", "/a/", "/a//b"] {
            assert!(Route::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_as_written() {
        assert_eq!(route("/orders/...").to_string(), "/orders/...");
        assert_eq!(route("/...").to_string(), "/...");
    }

    #[test]
    fn canonical_paths_pass() {
        for good in [
            "/",
            "/orders/42",
            "/a%20b",
            "/caf%C3%A9",
            "/a.b/..c/.d",
            "/x/",
        ] {
            assert_eq!(non_canonical_path(good), None, "{good}");
        }
    }

    #[test]
    fn non_canonical_paths_say_why() {
        for (bad, why) in [
            ("//admin", "`//`"),
            ("/a/./b", "`.` or `..`"),
            ("/a/..", "`.` or `..`"),
            ("/%61dmin", "percent-encoded letter"),
            ("/a%2Fb", "percent-encoded letter"),
            ("/a%2", "two hex digits"),
            ("/a%zz", "two hex digits"),
            ("/a%+1", "two hex digits"),
        ] {
            let problem = non_canonical_path(bad).unwrap_or_else(|| panic!("{bad} passed"));
            assert!(problem.contains(why), "{bad}: {problem}");
        }
    }
}
