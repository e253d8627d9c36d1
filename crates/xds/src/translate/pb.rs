//! Small builders for the protobuf values translation repeats everywhere.

use envoy_types::pb::envoy::config::core::v3::{
    address, config_source::ConfigSourceSpecifier, socket_address::PortSpecifier, Address,
    AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatcher, StringMatcher,
};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
use graymesh_model::istio::StringMatch;

pub fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn u32v(value: u32) -> UInt32Value {
    UInt32Value { value }
}

pub fn any<T: prost::Message + prost::Name>(msg: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: msg.encode_to_vec(),
    }
}

/// Everything comes over the one ADS stream the client already has.
pub fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

pub fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

pub fn regex(pattern: &str) -> RegexMatcher {
    RegexMatcher {
        regex: pattern.to_string(),
        engine_type: None,
    }
}

pub fn string_matcher(m: &StringMatch, ignore_case: bool) -> StringMatcher {
    let pattern = match m {
        StringMatch::Exact(s) => MatchPattern::Exact(s.clone()),
        StringMatch::Prefix(s) => MatchPattern::Prefix(s.clone()),
        StringMatch::Regex(s) => MatchPattern::SafeRegex(regex(s)),
    };
    StringMatcher {
        ignore_case,
        match_pattern: Some(pattern),
    }
}

/// Istio percentages are floats in 0..=100; Envoy wants parts per million.
pub fn percent(value: f64) -> FractionalPercent {
    let ppm = (value.clamp(0.0, 100.0) * 10_000.0).round() as u32;
    FractionalPercent {
        numerator: ppm,
        denominator: DenominatorType::Million as i32,
    }
}
