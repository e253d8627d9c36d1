//! Header keys compiled with their rewrite, and what pilot's rewrite for a baggage member makes
//! of `baggage` headers.

use super::*;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher};

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
