//! Route text → [`Route`], then [`Route::matches`] on a request path: never panics, and:
//! - an accepted route displays as text that parses back to the same route (a release stores
//!   routes as text);
//! - a function with a route that no request can reach (its base is a path the gateway
//!   refuses before routing, see [`non_canonical_path`]) is refused at deploy time;
//! - its base is itself a valid exact route, and the route matches it;
//! - `matches` agrees with its definition: an exact route matches only its path; a prefix
//!   route matches its base and the paths below it, never a sibling such as `/ordersx`.
//!
//! Input: the route on the first line, the request path after it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runway_manifest::{
    FunctionConfig, FunctionName, HttpTrigger, InvocationAuth, Route, RouteKind, non_canonical_path,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (route_text, path) = text.split_once('\n').unwrap_or((text, "/"));
    let Ok(route) = Route::try_from(route_text.to_owned()) else {
        return;
    };
    let shown = route.to_string();
    assert_eq!(
        Route::try_from(shown.clone()).as_ref(),
        Ok(&route),
        "{route_text:?} → {shown:?}"
    );
    let base = route.base();
    if non_canonical_path(base).is_some() {
        let mut function = FunctionConfig::new(FunctionName::try_from("f").expect("a valid name"));
        function.http.push(HttpTrigger {
            route: route.clone(),
            methods: Vec::new(),
            auth: InvocationAuth::default(),
        });
        assert!(
            !function.problems().is_empty(),
            "route {route_text:?} can never be reached, yet it deploys"
        );
    }
    let exact = Route::try_from(base.to_owned()).expect("a route's base is a valid route");
    assert_eq!(exact.kind(), RouteKind::Exact);
    assert!(
        route.matches(base),
        "{route_text:?} does not match its own base"
    );

    let expected = match route.kind() {
        RouteKind::Exact => path == base,
        RouteKind::Prefix if base == "/" => true,
        RouteKind::Prefix => {
            path == base || (path.starts_with(base) && path.as_bytes()[base.len()] == b'/')
        }
    };
    assert_eq!(route.matches(path), expected, "{route_text:?} on {path:?}");
});
