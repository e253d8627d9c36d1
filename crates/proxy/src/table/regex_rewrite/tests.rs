//! The rewrite against RE2's `GlobalReplace` (expected values worked through RE2's loop by hand),
//! the substitutions refused, and the hash of the pieces.

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
