//! Host names: which environment a request's `Host` names.

/// The environment label of a host name, if it has one: `pr-42` for `pr-42.localhost:8080`
/// or `pr-42.runway.example.com` when `runway.example.com` is one of `domains`.
///
/// A numeric port and one trailing dot are ignored and domains compare case-insensitively;
/// the label is returned as written (the caller lower-cases it).
pub fn environment_label<'a>(host: &'a str, domains: &[String]) -> Option<&'a str> {
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    std::iter::once("localhost")
        .chain(domains.iter().map(String::as_str))
        .find_map(|domain| {
            let label = host.get(..host.len().checked_sub(domain.len() + 1)?)?;
            let rest = &host[label.len()..];
            (rest.as_bytes()[0] == b'.' && rest[1..].eq_ignore_ascii_case(domain)).then_some(label)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_pick_environments() {
        let domains = vec!["runway.example.com".to_owned()];
        let label = |host| environment_label(host, &domains);
        assert_eq!(label("dev.localhost:8080"), Some("dev"));
        assert_eq!(label("dev.localhost"), Some("dev"));
        assert_eq!(label("DEV.LOCALHOST."), Some("DEV"));
        assert_eq!(label("pr-42.runway.example.com"), Some("pr-42"));
        assert_eq!(label("localhost:8080"), None);
        assert_eq!(label("127.0.0.1:8080"), None);
        assert_eq!(label("example.com"), None);
        assert_eq!(label("xlocalhost"), None);
        assert_eq!(label("[::1]:8080"), None);
        assert_eq!(
            label("a.b.localhost"),
            Some("a.b"),
            "no environment has a dot, so 404"
        );
    }
}
