use super::head::{parse_request, parse_response, Framing, RequestHead, ResponseHead, View};
use crate::http::select::RequestView;

fn parsed(raw: &[u8]) -> Result<RequestHead, (u16, &'static str)> {
    let mut head = RequestHead::default();
    match parse_request(raw, &mut head) {
        Ok(true) => Ok(head),
        Ok(false) => Err((0, "partial")),
        Err(r) => Err((r.status, r.reason)),
    }
}

#[test]
fn a_simple_get_is_parsed_in_place() {
    let raw = b"GET /reviews/1?x=1 HTTP/1.1\r\nHost: Reviews:9080\r\nX-Canary: true\r\nCookie: a=1; user=42\r\n\r\nNEXT";
    let head = parsed(raw).unwrap();
    assert_eq!(head.len, raw.len() - 4);
    assert_eq!(head.framing, Framing::Empty);
    assert!(head.keep_alive);
    let view = View {
        buf: raw,
        head: &head,
    };
    assert_eq!(view.method(), "GET");
    assert_eq!(view.authority(), "Reviews:9080");
    assert_eq!(view.path(), "/reviews/1");
    assert_eq!(view.query(), Some("x=1"));
    assert_eq!(view.header("x-canary"), Some("true"));
    assert_eq!(view.header("x-absent"), None);
    let user = view.find_in_header("cookie", &mut |v: &str| {
        v.split(';').find_map(|c| c.trim().strip_prefix("user="))
    });
    assert_eq!(user, Some("42"));
}

#[test]
fn absolute_form_targets_give_authority_and_path() {
    let raw = b"GET http://reviews:9080/r?q HTTP/1.1\r\nHost: ignored\r\n\r\n";
    let head = parsed(raw).unwrap();
    let view = View {
        buf: raw,
        head: &head,
    };
    assert_eq!(view.authority(), "reviews:9080");
    assert_eq!(view.path_and_query(), "/r?q");
    let bare = b"GET http://reviews:9080 HTTP/1.1\r\n\r\n";
    let head = parsed(bare).unwrap();
    let view = View {
        buf: bare,
        head: &head,
    };
    assert_eq!(
        (view.authority(), view.path_and_query()),
        ("reviews:9080", "/")
    );
}

#[test]
fn framing_and_connection_headers() {
    let head =
        parsed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(head.framing, Framing::Length(5));
    assert!(!head.keep_alive);
    let head = parsed(b"POST / HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n").unwrap();
    assert_eq!(head.framing, Framing::Chunked);
    let head = parsed(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(!head.keep_alive);
    let head = parsed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert!(head.keep_alive);
    let head =
        parsed(b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert!(head.upgrade);
    let head =
        parsed(b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n").unwrap();
    assert!(head.expect_continue);
    let head =
        parsed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").unwrap();
    assert_eq!(head.framing, Framing::Length(5));
}

#[test]
fn ambiguous_framing_is_refused() {
    let cases: [(&[u8], u16); 8] = [
        (
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    ];
    for (raw, status) in cases {
        let got = parsed(raw).map(|_| ()).map_err(|(s, _)| s);
        assert_eq!(got, Err(status), "{}", String::from_utf8_lossy(raw));
    }
    let many: Vec<u8> = [
        b"GET / HTTP/1.1\r\n".to_vec(),
        (0..120)
            .flat_map(|i| format!("X-H{i}: 1\r\n").into_bytes())
            .collect(),
        b"\r\n".to_vec(),
    ]
    .concat();
    assert_eq!(parsed(&many).map(|_| ()).map_err(|(s, _)| s), Err(431));
}

#[test]
fn a_partial_head_asks_for_more() {
    assert_eq!(
        parsed(b"GET / HTTP/1.1\r\nHost: r\r\n").err(),
        Some((0, "partial"))
    );
}

fn response(raw: &[u8], head_request: bool) -> ResponseHead {
    let mut head = ResponseHead::default();
    assert!(parse_response(raw, head_request, &mut head)
        .unwrap()
        .is_some());
    head
}

#[test]
fn response_framing() {
    let r = response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false);
    assert_eq!(
        (r.status, r.framing, r.reusable),
        (200, Framing::Length(3), true)
    );
    let r = response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true);
    assert_eq!(r.framing, Framing::Empty, "a HEAD response has no body");
    let r = response(b"HTTP/1.1 204 No Content\r\n\r\n", false);
    assert_eq!(r.framing, Framing::Empty);
    let r = response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    );
    assert_eq!((r.framing, r.reusable), (Framing::Chunked, true));
    let r = response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        false,
    );
    assert_eq!(
        r.framing,
        Framing::Chunked,
        "chunked as the last coding frames the body"
    );
    let r = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
    assert_eq!((r.framing, r.reusable), (Framing::UntilClose, false));
    let r = response(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
        false,
    );
    assert!(!r.reusable);
    let r = response(b"HTTP/1.0 200 OK\r\n\r\n", false);
    assert_eq!((r.framing, r.reusable), (Framing::UntilClose, false));
    let mut head = ResponseHead::default();
    assert!(parse_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        false,
        &mut head
    )
    .is_err());
}

fn forward_route() -> crate::table::Route {
    use crate::table::{Action, Forward, HeaderOps, PathMatch, Route};
    Route {
        name: "r".into(),
        path: PathMatch::Prefix("/".into()),
        case_sensitive: true,
        headers: Vec::new(),
        query: Vec::new(),
        action: Action::Forward(Forward {
            clusters: Vec::new(),
            total_weight: 0,
            timeout: None,
            retry: None,
            path_rewrite: None,
            host_rewrite: None,
            mirrors: Vec::new(),
            hash: Vec::new(),
        }),
        request_ops: HeaderOps::default(),
        response_ops: HeaderOps::default(),
        fault: None,
    }
}

/// The upstream request head for `raw`, sent with `source`.
fn upstream_head(raw: &[u8], source: Option<&http::HeaderValue>) -> String {
    let head = parsed(raw).unwrap();
    let view = View {
        buf: raw,
        head: &head,
    };
    let route = forward_route();
    let crate::table::Action::Forward(f) = &route.action else {
        unreachable!()
    };
    let mut out = Vec::new();
    let edits = super::encode::Edits::default();
    super::encode::request_head(&mut out, &view, &route, f, &edits, source);
    String::from_utf8(out).unwrap()
}

#[test]
fn a_received_source_header_is_replaced_or_removed_never_passed_on() {
    let raw = b"GET / HTTP/1.1\r\nHost: reviews\r\nX-Graymesh-Source: forged;v9\r\nx-a: 1\r\n\r\n";
    let own = http::HeaderValue::from_static("productpage;v1");
    let sent = upstream_head(raw, Some(&own));
    assert!(!sent.contains("forged"), "{sent}");
    assert_eq!(sent.matches("x-graymesh-source").count(), 1, "{sent}");
    assert!(
        sent.contains("x-graymesh-source: productpage;v1\r\n"),
        "{sent}"
    );
    assert!(sent.contains("x-a: 1\r\n"), "{sent}");
    let sent = upstream_head(raw, None);
    assert!(
        !sent.to_ascii_lowercase().contains("x-graymesh-source"),
        "{sent}"
    );
}
