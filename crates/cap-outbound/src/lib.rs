//! Outbound HTTP for functions (`wasi:http/outgoing-handler`), behind the function's policy.
//!
//! Every request — including each hop of a redirect, which the guest follows itself — is
//! checked before any connection is made:
//!
//! 1. its origin (scheme, host, port) must match an `outbound` grant;
//! 2. the host is resolved once, here, and every address must be public unless the grant
//!    itself names an internal destination (an IP literal in a private range, or
//!    `localhost`); a public name that resolves to 127.0.0.1 or 169.254.169.254 is refused;
//! 3. the connection goes to exactly the address that was checked, so a second DNS answer
//!    cannot redirect it (no DNS rebinding).
//!
//! Refusals return `HTTP-request-denied` (policy) or `destination-IP-prohibited`
//! (internal address) to the function, and are audited.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use runway_policy::{Attempt, Capability, Guard, Scheme, address};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// How long a connection may take when the guest sets no connect timeout.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A `--outbound-resolve` entry that is not `host=ip[,ip...]`.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid outbound resolve override `{0}`: write host=ip, for example api.internal=10.0.0.5"
)]
pub struct OverrideError(String);

/// A `--outbound-ca-file` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {path} as extra trusted certificates for outbound https: {reason}")]
pub struct CaFileError {
    /// The file.
    pub path: std::path::PathBuf,
    /// Why.
    pub reason: String,
}

/// Reads PEM certificates (an internal CA, say) to trust for outbound https beside the
/// Mozilla roots.
pub fn load_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, CaFileError> {
    use rustls::pki_types::pem::PemObject;
    let fail = |reason: String| CaFileError {
        path: path.to_path_buf(),
        reason,
    };
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|err| fail(err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| fail(err.to_string()))?;
    if certs.is_empty() {
        return Err(fail("it holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// Name resolution for outbound requests: the system resolver, with optional fixed answers
/// (like curl's `--resolve`) for names the operator pins.
#[derive(Debug, Default)]
pub struct Resolver {
    overrides: HashMap<String, Vec<IpAddr>>,
}

impl Resolver {
    /// A resolver with fixed answers from `host=ip` entries.
    pub fn with_overrides<S: AsRef<str>>(entries: &[S]) -> Result<Resolver, OverrideError> {
        let mut overrides: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for entry in entries {
            let entry = entry.as_ref();
            let (host, ip) = entry
                .split_once('=')
                .ok_or_else(|| OverrideError(entry.to_owned()))?;
            let ip: IpAddr = ip.parse().map_err(|_| OverrideError(entry.to_owned()))?;
            if host.is_empty() {
                return Err(OverrideError(entry.to_owned()));
            }
            overrides
                .entry(host.to_ascii_lowercase())
                .or_default()
                .push(ip);
        }
        Ok(Resolver { overrides })
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, HttpError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some(ips) = self.overrides.get(&host.to_ascii_lowercase()) {
            return Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|err| HttpError::DnsError {
                rcode: Some(err.to_string()),
                info_code: None,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(HttpError::DestinationNotFound);
        }
        Ok(addrs)
    }
}

/// What outbound requests need on a node: the resolver and the TLS roots.
#[derive(Debug, Clone)]
pub struct OutboundNetwork {
    resolver: Arc<Resolver>,
    tls: Arc<rustls::ClientConfig>,
}

impl OutboundNetwork {
    /// Uses `resolver`, the Mozilla root certificates and `extra_roots`.
    pub fn new(
        resolver: Resolver,
        extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> OutboundNetwork {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        roots.add_parsable_certificates(extra_roots);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        OutboundNetwork {
            resolver: Arc::new(resolver),
            tls: Arc::new(tls),
        }
    }

    /// Outbound access for one release, checked by `guard`.
    pub fn for_function(&self, guard: Guard) -> Arc<FunctionOutbound> {
        Arc::new(FunctionOutbound {
            network: self.clone(),
            guard,
        })
    }
}

/// One release's outbound access.
#[derive(Debug)]
pub struct FunctionOutbound {
    network: OutboundNetwork,
    guard: Guard,
}

/// Where a request may connect, once its origin and addresses have been checked.
struct Vetted {
    scheme: Scheme,
    host: String,
    addrs: Vec<SocketAddr>,
}

impl FunctionOutbound {
    async fn vet(&self, method: &str, uri: &http::Uri) -> Result<Vetted, HttpError> {
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return Err(HttpError::HttpRequestUriInvalid),
        };
        let host = uri.host().ok_or(HttpError::HttpRequestUriInvalid)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        let origin = origin(scheme, &host, port);
        let policy = self.guard.policy();
        let grant = policy.outbound_grant(scheme, &host, port);
        self.guard
            .decide(grant.is_some(), || {
                Attempt::new(Capability::Outbound, method, origin.as_str())
            })
            .map_err(|_| HttpError::HttpRequestDenied)?;
        // Internal destinations are reachable only through a grant that names them itself,
        // in audit mode too: audit mode discovers grants, it does not open the node's own
        // network to the function. The origin is still recorded, so it can be suggested.
        let named_internal = grant.is_some_and(|g| g.names_internal_destination());
        let addrs = self.network.resolver.resolve(&host, port).await?;
        if !named_internal
            && let Some(internal) = addrs.iter().find(|a| !address::is_public(a.ip()))
        {
            let attempt = if grant.is_none() && host_names_itself(&host, internal.ip()) {
                // Audit mode, an internal origin no grant names: what a grant would name.
                Attempt::new(Capability::Outbound, method, origin.as_str())
            } else {
                Attempt::new(
                    Capability::Outbound,
                    "connect",
                    format!("{origin} (resolved to internal address {})", internal.ip()),
                )
            };
            self.guard.refuse_always(attempt);
            return Err(HttpError::DestinationIpProhibited);
        }
        Ok(Vetted {
            scheme,
            host,
            addrs,
        })
    }

    async fn send(
        self: Arc<Self>,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<
        (
            http::Response<WasiBody>,
            Box<dyn Future<Output = Result<(), HttpError>> + Send>,
        ),
        HttpError,
    > {
        let vetted = self.vet(request.method().as_str(), request.uri()).await?;
        let connect_timeout = options
            .and_then(|o| o.connect_timeout)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let mut last_error = HttpError::DestinationUnavailable;
        let mut stream = None;
        for addr in &vetted.addrs {
            match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await
            {
                Ok(Ok(tcp)) => {
                    stream = Some(tcp);
                    break;
                }
                Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                    last_error = HttpError::ConnectionRefused;
                }
                Ok(Err(err)) => last_error = HttpError::Connect(err),
                Err(_) => last_error = HttpError::ConnectionTimeout,
            }
        }
        let tcp = stream.ok_or(last_error)?;
        // The request line carries only the path; the Host header names the origin, and
        // never the URL's userinfo (`user:password@`), which would leak to the server and
        // to any proxy in between.
        if let Some(host) = host_header(request.uri()) {
            request.headers_mut().insert(http::header::HOST, host);
        }
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.uri_mut() =
            http::Uri::try_from(path).map_err(|_| HttpError::HttpRequestUriInvalid)?;
        match vetted.scheme {
            Scheme::Http => exchange(TokioIo::new(tcp), request, connect_timeout).await,
            Scheme::Https => {
                let name = rustls::pki_types::ServerName::try_from(vetted.host.clone())
                    .map_err(|_| HttpError::HttpRequestUriInvalid)?;
                let tls = tokio_rustls::TlsConnector::from(self.network.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(HttpError::Tls)?;
                exchange(TokioIo::new(tls), request, connect_timeout).await
            }
        }
    }
}

/// The Host header for a request to `uri`: its authority without any userinfo.
fn host_header(uri: &http::Uri) -> Option<http::HeaderValue> {
    let authority = uri.authority()?.as_str();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    http::HeaderValue::from_str(host).ok()
}

/// Whether the request named the internal address itself (an IP literal or `localhost`)
/// rather than a public-looking name that resolved to it.
fn host_names_itself(host: &str, ip: IpAddr) -> bool {
    host.parse::<IpAddr>() == Ok(ip) || host == "localhost" || host.ends_with(".localhost")
}

fn origin(scheme: Scheme, host: &str, port: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if port == scheme.default_port() {
        format!("{}://{host}", scheme.as_str())
    } else {
        format!("{}://{host}:{port}", scheme.as_str())
    }
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

async fn exchange<S>(
    io: TokioIo<S>,
    request: http::Request<WasiBody>,
    timeout: Duration,
) -> SendResult
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) =
        tokio::time::timeout(timeout, hyper::client::conn::http1::handshake(io))
            .await
            .map_err(|_| HttpError::ConnectionTimeout)??;
    // The connection task ends when the response body has been read or dropped.
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let response = response.map(|body| body.map_err(HttpError::from).boxed_unsync());
    let io: Box<dyn Future<Output = Result<(), HttpError>> + Send> = Box::new(async move {
        match driver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(HttpError::from(err)),
            Err(_) => Err(HttpError::ConnectionTerminated),
        }
    });
    Ok((response, io))
}

/// One invocation's outbound HTTP: the `WasiHttpHooks` the runtime installs.
pub struct OutboundHooks {
    access: Option<Arc<FunctionOutbound>>,
}

impl OutboundHooks {
    /// Outbound HTTP for one invocation; `None` refuses every request.
    pub fn new(access: Option<Arc<FunctionOutbound>>) -> OutboundHooks {
        OutboundHooks { access }
    }
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let access = self.access.clone();
        Box::new(async move {
            match access {
                Some(access) => access.send(request, options).await,
                None => Err(HttpError::HttpRequestDenied),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_never_carries_userinfo() {
        let uri: http::Uri = "https://user:secret@api.example.com:8443/x"
            .parse()
            .unwrap();
        assert_eq!(host_header(&uri).unwrap(), "api.example.com:8443");
        let uri: http::Uri = "http://api.example.com/x".parse().unwrap();
        assert_eq!(host_header(&uri).unwrap(), "api.example.com");
    }
    use runway_policy::{Caller, MemoryAudit, Policy, PolicyMode};

    fn outbound(policy: &str, resolver: Resolver, sink: Arc<MemoryAudit>) -> Arc<FunctionOutbound> {
        let policy: Policy = toml::from_str(policy).unwrap();
        let caller = Caller {
            environment: "prod".into(),
            function: "fetch".into(),
            release: 1,
        };
        let guard = Guard::new(caller, Arc::new(policy), PolicyMode::Enforce, sink);
        OutboundNetwork::new(resolver, Vec::new()).for_function(guard)
    }

    async fn vet(access: &FunctionOutbound, url: &str) -> Result<Vec<SocketAddr>, HttpError> {
        access
            .vet("GET", &url.parse().unwrap())
            .await
            .map(|v| v.addrs)
    }

    #[tokio::test]
    async fn origins_and_addresses_are_checked_before_connecting() {
        let sink = Arc::new(MemoryAudit::default());
        let resolver = Resolver::with_overrides(&[
            "api.example.com=93.184.216.34",
            "rebind.example.com=127.0.0.1",
            "metadata.example.com=169.254.169.254",
        ])
        .unwrap();
        let access = outbound(
            "outbound = [\"https://api.example.com\", \"http://rebind.example.com\", \
             \"http://metadata.example.com\", \"http://127.0.0.1:9000\"]",
            resolver,
            sink.clone(),
        );
        assert_eq!(
            vet(&access, "https://api.example.com/v1").await.unwrap(),
            ["93.184.216.34:443".parse().unwrap()]
        );
        assert!(vet(&access, "http://127.0.0.1:9000/x").await.is_ok());
        for refused in [
            "http://api.example.com/",
            "https://api.example.com:8443/",
            "https://evil.example.com/",
            "http://127.0.0.1:9001/",
            "http://2130706433:9000/",
            "http://[::1]:9000/",
            "http://localhost:9000/",
        ] {
            assert!(
                matches!(
                    vet(&access, refused).await,
                    Err(HttpError::HttpRequestDenied)
                ),
                "{refused}"
            );
        }
        for internal in [
            "http://rebind.example.com/",
            "http://metadata.example.com/latest",
        ] {
            assert!(
                matches!(
                    vet(&access, internal).await,
                    Err(HttpError::DestinationIpProhibited)
                ),
                "{internal}"
            );
        }
        let events = sink.take();
        assert_eq!(events.len(), 9);
        assert!(
            events[8].attempt.target.contains("169.254.169.254"),
            "{:?}",
            events[8]
        );
    }

    #[test]
    fn overrides_must_be_host_equals_ip() {
        assert!(Resolver::with_overrides(&["nohost"]).is_err());
        assert!(Resolver::with_overrides(&["a=not-an-ip"]).is_err());
    }
}
