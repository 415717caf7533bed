//! The egress client against real loopback listeners: refused addresses are never connected to (by IP literal
//! or by a name that resolves to them), allowed CIDRs open them, redirects stay within their origin, the total
//! timeout covers a body that never ends, and bodies over the limit are refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Url;
use slipway_egress::{
    AddressClass, BodyError, ClientSettings, EgressError, EgressPolicy, HttpClient, parse_cidr,
    read_body, refusal,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback HTTP/1.1 server that answers each request with `respond(path)` (raw bytes: status line, headers,
/// body) and counts the connections it accepted, so a test can prove nothing reached it.
struct Listener {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Listener {
    async fn start(respond: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let respond = Arc::new(respond);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let respond = respond.clone();
                // Requests (GETs, no bodies) one after another on the connection, until the client closes it. A
                // response may stall on purpose: the connection then stays open until the client gives up.
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    loop {
                        let mut request = Vec::new();
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => request.extend_from_slice(&buffer[..n]),
                            }
                        }
                        let text = String::from_utf8_lossy(&request);
                        let path = text.split(' ').nth(1).unwrap_or("/").to_string();
                        if stream.write_all(&respond(&path)).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            address,
            connections,
        }
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}{path}", self.address)).unwrap()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn redirect(location: &str) -> Vec<u8> {
    format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n")
        .into_bytes()
}

fn client(policy: EgressPolicy) -> HttpClient {
    HttpClient::new(policy, &ClientSettings::default()).unwrap()
}

fn loopback_allowed() -> EgressPolicy {
    EgressPolicy::allowing([
        parse_cidr("127.0.0.0/8").unwrap(),
        parse_cidr("::1").unwrap(),
    ])
}

#[tokio::test]
async fn a_url_naming_a_refused_address_is_refused_before_any_connection() {
    let listener = Listener::start(|_| ok("secret")).await;
    let port = listener.address.port();
    let http = client(EgressPolicy::default());
    for (url, address, class) in [
        (
            format!("http://127.0.0.1:{port}/"),
            "127.0.0.1",
            AddressClass::Loopback,
        ),
        // The decimal and IPv4-mapped spellings of the same address.
        (
            format!("http://2130706433:{port}/"),
            "127.0.0.1",
            AddressClass::Loopback,
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            "::ffff:127.0.0.1",
            AddressClass::Loopback,
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "169.254.169.254",
            AddressClass::LinkLocal,
        ),
        (
            "https://10.96.0.1/api".to_string(),
            "10.96.0.1",
            AddressClass::ServiceRange("10.96.0.0/12".parse().unwrap()),
        ),
    ] {
        let error = http.get(Url::parse(&url).unwrap()).unwrap_err();
        match &error {
            EgressError::AddressRefused {
                address: refused,
                class: refused_class,
                ..
            } => {
                assert_eq!(refused.to_string(), address, "{url}");
                assert_eq!(*refused_class, class, "{url}");
            }
            other => panic!("{url}: expected AddressRefused, got {other:?}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(&format!("refused to connect to {address} ("))
                && message.contains("--allow-egress"),
            "{message}"
        );
    }
    assert_eq!(
        listener.connections(),
        0,
        "a refused URL reached the listener"
    );
    let error = http
        .get(Url::parse("file:///etc/passwd").unwrap())
        .unwrap_err();
    assert_eq!(
        error,
        EgressError::Scheme {
            scheme: "file".into()
        }
    );
}

#[tokio::test]
async fn a_name_that_resolves_to_a_refused_address_is_refused_when_connecting() {
    let listener = Listener::start(|_| ok("secret")).await;
    let http = client(EgressPolicy::default());
    let url = Url::parse(&format!("http://localhost:{}/", listener.address.port())).unwrap();
    // A name cannot be judged before it is resolved: the request is built, and the resolver refuses it.
    let error = http.get(url).unwrap().send().await.unwrap_err();
    let refused = refusal(&error).unwrap_or_else(|| panic!("not a refusal: {error:?}"));
    match refused {
        EgressError::AddressRefused {
            host,
            address,
            class,
        } => {
            assert_eq!(host, "localhost");
            assert!(address.is_loopback(), "{address}");
            assert_eq!(*class, AddressClass::Loopback);
        }
        other => panic!("expected AddressRefused, got {other:?}"),
    }
    let message = refused.to_string();
    assert!(
        message.starts_with("refused to connect to localhost, which resolves to "),
        "{message}"
    );
    assert_eq!(listener.connections(), 0, "the listener was connected to");
}

#[tokio::test]
async fn allowed_cidrs_open_loopback_by_address_and_by_name() {
    let listener = Listener::start(|_| ok("manifest")).await;
    let http = client(loopback_allowed());
    for url in [
        listener.url("/a.yaml"),
        Url::parse(&format!(
            "http://localhost:{}/a.yaml",
            listener.address.port()
        ))
        .unwrap(),
    ] {
        let response = http.get(url.clone()).unwrap().send().await.unwrap();
        assert_eq!(
            read_body(response, 1024).await.unwrap(),
            b"manifest",
            "{url}"
        );
    }
    assert!(listener.connections() >= 1);

    // Allowing 127.0.0.0/8 alone leaves ::1 refused: a name is allowed only when every address it has is.
    let only_v4 = client(EgressPolicy::allowing([parse_cidr("127.0.0.0/8").unwrap()]));
    let response = only_v4.get(listener.url("/a.yaml")).unwrap().send().await;
    assert!(response.is_ok(), "{response:?}");
    let error = only_v4
        .get(Url::parse("http://[::1]:1/").unwrap())
        .unwrap_err();
    assert!(
        matches!(error, EgressError::AddressRefused { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn redirects_are_followed_within_the_origin_and_refused_across_it() {
    let elsewhere = Listener::start(|_| ok("from elsewhere")).await;
    let other_origin = elsewhere.url("/stolen");
    let origin = Listener::start(move |path| match path {
        "/same" => redirect("/target"),
        "/target" => ok("followed"),
        "/away" => redirect(other_origin.as_str()),
        // Same host and port, another scheme: another origin.
        "/downgrade" => redirect("https://127.0.0.1:1/x"),
        _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
    })
    .await;
    let http = client(loopback_allowed());

    let response = http.get(origin.url("/same")).unwrap().send().await.unwrap();
    assert_eq!(response.url().path(), "/target");
    assert_eq!(read_body(response, 1024).await.unwrap(), b"followed");

    for path in ["/away", "/downgrade"] {
        let error = http
            .get(origin.url(path))
            .unwrap()
            .send()
            .await
            .unwrap_err();
        let refused = refusal(&error).unwrap_or_else(|| panic!("{path}: not a refusal: {error:?}"));
        assert!(
            matches!(refused, EgressError::RedirectLeavesOrigin { from, .. } if *from == format!("http://{}", origin.address)),
            "{path}: {refused:?}"
        );
    }
    assert_eq!(
        elsewhere.connections(),
        0,
        "a redirect reached another origin"
    );
}

#[tokio::test]
async fn the_total_timeout_covers_a_body_that_never_ends() {
    // Headers and a tenth of the body, then nothing, with the connection held open.
    let listener =
        Listener::start(|_| b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec())
            .await;
    let http = HttpClient::new(
        loopback_allowed(),
        &ClientSettings {
            timeout: Duration::from_millis(800),
            ..ClientSettings::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let response = http.get(listener.url("/")).unwrap().send().await.unwrap();
    let error = read_body(response, 1024).await.unwrap_err();
    match error {
        BodyError::Read(e) => assert!(e.is_timeout(), "{e:?}"),
        other => panic!("expected a read timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_declared_or_not() {
    let big = "x".repeat(2000);
    let declared = ok(&big);
    let chunked = format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    )
    .into_bytes();
    let listener = Listener::start(move |path| {
        if path == "/chunked" {
            chunked.clone()
        } else {
            declared.clone()
        }
    })
    .await;
    let http = client(loopback_allowed());
    for path in ["/declared", "/chunked"] {
        let response = http.get(listener.url(path)).unwrap().send().await.unwrap();
        let error = read_body(response, 1000).await.unwrap_err();
        assert!(
            matches!(
                error,
                BodyError::TooLarge(EgressError::BodyTooLarge { limit: 1000 })
            ),
            "{path}: {error:?}"
        );
    }
    let response = http
        .get(listener.url("/declared"))
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(read_body(response, 2000).await.unwrap().len(), 2000);
}
