//! The header rewrite against RE2's `GlobalReplace` (expected values worked through RE2's loop
//! by hand), the substitutions refused, the hash of the pieces, and what pilot's rewrite for a
//! baggage member makes of `baggage` headers.

use super::*;
use crate::upstream::balance::{hash_of, hash_of_pieces};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;

fn rewrite(pattern: &str, substitution: &str) -> Result<RegexRewrite, String> {
    RegexRewrite::compile(&RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: pattern.to_string(),
            ..Default::default()
        }),
        substitution: substitution.to_string(),
    })
}

fn replaced(pattern: &str, substitution: &str, value: &str) -> String {
    rewrite(pattern, substitution).unwrap().rewrite(value)
}

#[test]
fn every_match_is_replaced_left_to_right() {
    // RE2's own example.
    assert_eq!(replaced("b+", "d", "yabba dabba doo"), "yada dada doo");
    assert_eq!(
        replaced("^(\\w+)@(\\w+)$", "\\2/\\1", "alice@acme"),
        "acme/alice"
    );
    assert_eq!(replaced("o", "[\\0]", "foo"), "f[o][o]");
    assert_eq!(replaced("-", "\\\\", "a-b"), "a\\b");
    // A group that took no part in the match stands for nothing.
    assert_eq!(replaced("a(x)?b", "<\\1>", "ab axb"), "<> <x>");
}

#[test]
fn a_value_without_a_match_is_unchanged() {
    assert_eq!(replaced("^user=(.*)$", "\\1", "tenant=acme"), "tenant=acme");
    assert_eq!(replaced("z", "", ""), "");
}

#[test]
fn an_empty_match_where_the_last_one_ended_is_skipped() {
    // RE2: empty at 0, skip 'b', "aaa" at 1, skip the empty match at 4, copy 'c', empty at 5.
    assert_eq!(replaced("a*", "-", "baaac"), "-b-c-");
    // Skipping steps over a whole character, never into one.
    assert_eq!(replaced("x*", "-", "é"), "-é-");
    assert_eq!(replaced("", "-", "ab"), "-a-b-");
}

#[test]
fn substitutions_envoy_would_misapply_are_refused() {
    let err = |p: &str, s: &str| rewrite(p, s).unwrap_err();
    assert_eq!(
        err("(a)(b)", "\\3"),
        "substitution \"\\\\3\" names group \\3, the pattern has 2 group(s)"
    );
    assert!(err("a", "\\q").contains("a backslash is followed by 'q'"));
    assert!(err("a", "x\\").contains("a backslash is followed by the end"));
    assert!(err("(", "").starts_with("invalid regex_rewrite pattern \"(\""));
    let no_pattern = RegexRewrite::compile(&RegexMatchAndSubstitute::default());
    assert_eq!(no_pattern.unwrap_err(), "regex_rewrite has no pattern");
}

#[test]
fn the_pieces_hash_as_the_rewritten_value() {
    let r = rewrite("^.*id=([^;]*).*$", "<\\1>").unwrap();
    for value in ["a=1;id=alice;b=2", "no key here", ""] {
        let whole = hash_of(r.rewrite(value).as_bytes());
        assert_eq!(hash_of_pieces(|out| r.write(value, out)), whole, "{value}");
    }
    assert_eq!(
        hash_of_pieces(|out| r.write("id=bob", out)),
        hash_of(b"<bob>")
    );
}

#[test]
fn a_clone_rewrites_alike_on_any_thread() {
    let r = rewrite("(\\d+)", "#\\1").unwrap();
    let copy = r.clone();
    let there = std::thread::spawn(move || copy.rewrite("a1b22"))
        .join()
        .unwrap();
    assert_eq!(there, "a#1b#22");
    assert_eq!(r.rewrite("a1b22"), there);
}

#[test]
fn header_policies_compile_with_their_rewrite() {
    use rt::route_action::hash_policy::{Header, PolicySpecifier};
    let policy = |regex_rewrite| rt::route_action::HashPolicy {
        policy_specifier: Some(PolicySpecifier::Header(Header {
            header_name: "Baggage".into(),
            regex_rewrite,
        })),
        terminal: false,
    };
    let Some(HashKey::Header { name, rewrite: r }) = HashKey::compile(&policy(None)).unwrap()
    else {
        panic!("not a header key");
    };
    assert_eq!((name.as_str(), r.is_none()), ("baggage", true));
    let bad = RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: "(a)".into(),
            ..Default::default()
        }),
        substitution: "\\2".into(),
    };
    let err = HashKey::compile(&policy(Some(bad))).unwrap_err();
    assert!(
        err.starts_with("hash policy on header \"Baggage\": substitution"),
        "{err}"
    );
}

/// What the rewrite pilot sends for `hashKey: {baggage: <member>}` makes of a `baggage` header.
fn member_value(member: &str, header: &str) -> String {
    let rewrite = graymesh_xds::translate::baggage_member_rewrite(member);
    RegexRewrite::compile(&rewrite).unwrap().rewrite(header)
}

#[test]
fn pilots_baggage_rewrite_keeps_only_the_members_value() {
    let cases = [
        ("user-id=alice", "alice"),
        ("user-id=alice,tenant=acme;prop=1", "alice"),
        // in the middle, with properties around it, and last
        ("tenant=acme;p=1,user-id=alice;ttl=5;x,other=1", "alice"),
        ("tenant=acme,user-id=alice", "alice"),
        // optional spaces and tabs around keys, '=', values, ';' and ','
        ("tenant=acme , user-id = alice ;p=1 , x=y", "alice"),
        ("\tuser-id\t=\talice\t", "alice"),
        // a percent-encoded value is hashed as sent
        ("user-id=al%20ice%2C", "al%20ice%2C"),
        // another key ending in the member's name is another member
        ("xuser-id=bob,user-id=alice", "alice"),
        ("user-id=alice,xuser-id=bob", "alice"),
        // twice: the last counts, as OpenTelemetry's propagator keeps it
        ("user-id=1,user-id=2", "2"),
    ];
    for (header, value) in cases {
        assert_eq!(member_value("user-id", header), value, "{header:?}");
    }
}

#[test]
fn without_the_member_the_whole_header_is_the_key() {
    for header in [
        "xuser-id=bob",
        "user-idx=bob",
        // a property is not a member
        "tenant=acme;user-id=bob",
        // keys are case-sensitive
        "User-Id=bob",
        // an empty value (or a broken one) is not a user
        "user-id=",
        "user-id= ;p=1",
        "user-id=al ice",
        "",
    ] {
        assert_eq!(member_value("user-id", header), header, "{header:?}");
    }
}

#[test]
fn the_member_name_is_matched_literally() {
    assert_eq!(member_value("a.b", "axb=1,a.b=2"), "2");
    assert_eq!(member_value("a.b", "axb=1"), "axb=1");
    assert_eq!(member_value("a|b*", "a=1,b=2,a|b*=3"), "3");
    assert_eq!(member_value("$x^", "$x^=4"), "4");
}
