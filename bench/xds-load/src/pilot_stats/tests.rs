use super::*;

#[test]
fn cpu_is_utime_plus_stime_even_with_spaces_in_the_name() -> anyhow::Result<()> {
    let stat = "42 (gray mesh) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 1 1";
    assert!((cpu_seconds(stat)? - 3.0).abs() < 1e-9);
    Ok(())
}

#[test]
fn status_fields_are_read_in_kib() -> anyhow::Result<()> {
    let status = "Name:\tgraymesh\nVmHWM:\t  20480 kB\nVmRSS:\t  10240 kB\n";
    assert_eq!(status_kib(status, "VmRSS:")?, 10240);
    assert_eq!(status_kib(status, "VmHWM:")?, 20480);
    assert!(status_kib(status, "VmSwap:").is_err());
    Ok(())
}

const BEFORE: &str = "# TYPE h histogram\n\
h_sum 1.0\nh_count 2\n\
h_bucket{le=\"0.1\"} 1\nh_bucket{le=\"0.2\"} 2\nh_bucket{le=\"+Inf\"} 2\n";
const AFTER: &str = "h_sum 4.0\nh_count 12\n\
h_bucket{le=\"0.1\"} 2\nh_bucket{le=\"0.2\"} 10\nh_bucket{le=\"+Inf\"} 12\n";

#[test]
fn histogram_difference_and_quantiles() {
    let before = parse_histogram(BEFORE, "h");
    let after = parse_histogram(AFTER, "h");
    assert_eq!(before.count, 2);
    let d = after.since(&before);
    assert_eq!(d.count, 10);
    assert!((d.sum - 3.0).abs() < 1e-9);
    assert_eq!(d.quantile_bound(0.1), Some(0.1));
    assert_eq!(d.quantile_bound(0.5), Some(0.2));
    assert_eq!(d.quantile_bound(0.99), Some(f64::INFINITY));
    assert_eq!(Histogram::default().quantile_bound(0.5), None);
}
