//! Talos versions: semantic versions written with a `v` (`v1.12.1`, `v1.13.0-alpha.1`), and the
//! rule that turns the tags of the upstream imager repository into the list of versions the
//! factory offers (spec §10.1).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The Go factory's `build.minTalosVersion` default: older releases lack what the imager needs.
pub const DEFAULT_MIN_VERSION: TalosVersion = TalosVersion::new(1, 2, 0);

/// Overlays (single-board computer support) exist from this release on (spec §4.6).
pub const OVERLAYS_SINCE: TalosVersion = TalosVersion::new(1, 7, 0);

/// Why a text is not a Talos version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {input:?}: {reason}")]
pub struct VersionError {
    pub input: String,
    pub reason: String,
}

/// A Talos version. Displayed with a leading `v` (as tags and the Go factory's JSON write it);
/// [`TalosVersion::semver`] gives the bare form used in messages such as
/// `version 1.99.0 is not available`.
///
/// Equality and order are semver precedence, which ignores build metadata, as the Go factory's
/// `blang/semver` comparisons do.
#[derive(Debug, Clone)]
pub struct TalosVersion(semver::Version);

impl TalosVersion {
    /// A release version `major.minor.patch`.
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self(semver::Version::new(major, minor, patch))
    }

    /// Strict semver with an optional leading `v`: what a request may name (`1.12.1`,
    /// `v1.13.0-alpha.1`). `1.12` or leading zeros are refused.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        let bare = input.strip_prefix('v').unwrap_or(input);
        semver::Version::parse(bare).map(Self).map_err(|e| VersionError {
            input: input.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Go's `semver.ParseTolerant`, the rule applied to upstream tags: surrounding blanks and a
    /// leading `v` are dropped, leading zeros of the dot-separated parts removed, and a short
    /// `1` or `1.2` completed with zeros (a short version may not carry a pre-release).
    pub fn parse_tolerant(input: &str) -> Result<Self, VersionError> {
        let trimmed = input.trim();
        let bare = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let mut parts: Vec<String> = bare
            .splitn(3, '.')
            .map(|part| {
                if part.len() > 1 {
                    let stripped = part.trim_start_matches('0');
                    // All zeros, or zeros before a `-`/`+`: keep one zero, as Go does.
                    if stripped.starts_with(|c: char| c.is_ascii_digit()) {
                        stripped.to_owned()
                    } else {
                        format!("0{stripped}")
                    }
                } else {
                    part.to_owned()
                }
            })
            .collect();
        if parts.len() < 3 {
            if parts.last().is_some_and(|p| p.contains(['-', '+'])) {
                return Err(VersionError {
                    input: input.to_owned(),
                    reason: "a short version cannot carry a pre-release or build metadata".to_owned(),
                });
            }
            parts.resize(3, "0".to_owned());
        }
        Self::parse(&parts.join(".")).map_err(|e| VersionError {
            input: input.to_owned(),
            reason: e.reason,
        })
    }

    pub fn major(&self) -> u64 {
        self.0.major
    }

    pub fn minor(&self) -> u64 {
        self.0.minor
    }

    pub fn patch(&self) -> u64 {
        self.0.patch
    }

    /// The pre-release identifiers (`alpha.1`), empty for a release.
    pub fn pre_release(&self) -> &str {
        self.0.pre.as_str()
    }

    pub fn is_pre_release(&self) -> bool {
        !self.0.pre.is_empty()
    }

    /// `major.minor.patch` without pre-release or build: Talos' version gates ("quirks") compare
    /// only this, so a pre-release counts as the release it leads to.
    pub fn core(&self) -> TalosVersion {
        Self::new(self.0.major, self.0.minor, self.0.patch)
    }

    /// The version without the `v` (`1.12.1`), as the Go factory prints it in messages.
    pub fn semver(&self) -> &semver::Version {
        &self.0
    }

    /// Whether overlays exist for this release line (`core() >= 1.7.0`); below, the overlays
    /// catalog is empty by definition.
    pub fn supports_overlays(&self) -> bool {
        self.core() >= OVERLAYS_SINCE
    }

    /// Whether this version passes the pre-release rule of spec §10.1 given the newest version
    /// upstream: releases always do; a pre-release only while its line is the newest one and
    /// when shaped `alpha.N`, `beta.N` or `rc.N` (so `v1.12.0-alpha.0-12-gabc` builds are out).
    fn passes_pre_release_rule(&self, newest: &TalosVersion) -> bool {
        if !self.is_pre_release() {
            return true;
        }
        if (self.major(), self.minor()) != (newest.major(), newest.minor()) {
            return false;
        }
        let identifiers: Vec<&str> = self.pre_release().split('.').collect();
        matches!(
            identifiers.as_slice(),
            [kind, number] if matches!(*kind, "alpha" | "beta" | "rc")
                && !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit())
        )
    }
}

/// The versions the factory offers, from the tags of the imager repository (spec §10.1): tags
/// parsed tolerantly (unparsable ones dropped); kept when at least `min`, not in `broken`, and,
/// for pre-releases, on the same major.minor as the newest parsed tag with exactly two
/// identifiers `alpha|beta|rc` `.` number. Ascending semver order. Tags naming the same version
/// (`v1.2.3`, `1.2.3`) give it once.
pub fn filter_versions<S: AsRef<str>>(
    tags: impl IntoIterator<Item = S>,
    min: &TalosVersion,
    broken: &[TalosVersion],
) -> Vec<TalosVersion> {
    let parsed: Vec<TalosVersion> = tags
        .into_iter()
        .filter_map(|tag| TalosVersion::parse_tolerant(tag.as_ref()).ok())
        .collect();
    // The newest line is judged over every parsed tag, kept or not, as the Go factory does.
    let Some(newest) = parsed.iter().max().cloned() else {
        return Vec::new();
    };
    let mut kept: Vec<TalosVersion> = parsed
        .into_iter()
        .filter(|v| v >= min && !broken.contains(v) && v.passes_pre_release_rule(&newest))
        .collect();
    kept.sort();
    kept.dedup();
    kept
}

impl fmt::Display for TalosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl FromStr for TalosVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl PartialEq for TalosVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for TalosVersion {}

impl PartialOrd for TalosVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TalosVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp_precedence(&other.0)
    }
}

impl Hash for TalosVersion {
    // Consistent with `Eq`: build metadata does not take part.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.major.hash(state);
        self.0.minor.hash(state);
        self.0.patch.hash(state);
        self.0.pre.hash(state);
    }
}

impl Serialize for TalosVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TalosVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> TalosVersion {
        TalosVersion::parse(s).expect("version")
    }

    fn shown(versions: &[TalosVersion]) -> Vec<String> {
        versions.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn parses_with_or_without_v_and_displays_with_v() {
        assert_eq!(v("1.12.1"), v("v1.12.1"));
        assert_eq!(v("1.12.1").to_string(), "v1.12.1");
        assert_eq!(v("v1.13.0-alpha.1").to_string(), "v1.13.0-alpha.1");
        assert_eq!(v("v1.13.0-alpha.1").semver().to_string(), "1.13.0-alpha.1");
        assert_eq!(v("v1.13.0-alpha.1").core(), TalosVersion::new(1, 13, 0));
        assert_eq!(v("1.13.0-alpha.1").pre_release(), "alpha.1");
    }

    #[test]
    fn strict_parse_refuses_what_go_semver_parse_refuses() {
        for bad in [
            "", "v", "1.2", "latest", "01.2.3", "1.2.3.4", "vv1.2.3", "1.2.3-", " 1.2.3", "1.2.3-01",
        ] {
            assert!(TalosVersion::parse(bad).is_err(), "{bad:?} parsed");
        }
        let error = TalosVersion::parse("1.x").expect_err("bad");
        assert!(
            error.to_string().starts_with("invalid version \"1.x\": "),
            "{error}"
        );
    }

    #[test]
    fn tolerant_parse_is_go_parse_tolerant() {
        let t = |s: &str| TalosVersion::parse_tolerant(s).map(|v| v.to_string());
        assert_eq!(t("v1.2").as_deref(), Ok("v1.2.0"));
        assert_eq!(t("1").as_deref(), Ok("v1.0.0"));
        assert_eq!(t(" v01.02.03 ").as_deref(), Ok("v1.2.3"));
        assert_eq!(t("v1.2.00-rc.1").as_deref(), Ok("v1.2.0-rc.1"));
        assert_eq!(
            t("v1.2.3-alpha.0-12-gabc").as_deref(),
            Ok("v1.2.3-alpha.0-12-gabc")
        );
        assert!(t("v1.2-rc.1").is_err());
        assert!(t("latest").is_err());
        assert!(t("sha256-abc.sig").is_err());
    }

    #[test]
    fn order_is_semver_precedence() {
        assert!(v("1.13.0-alpha.1") < v("1.13.0"));
        assert!(v("1.13.0-alpha.2") < v("1.13.0-beta.1"));
        assert!(v("1.13.0-alpha.10") > v("1.13.0-alpha.9"));
        assert!(v("1.9.5") < v("1.10.0"));
        assert_eq!(v("1.2.3+build.1"), v("1.2.3"));
    }

    #[test]
    fn overlays_start_with_the_1_7_line() {
        assert!(!v("1.6.4").supports_overlays());
        assert!(v("1.7.0-alpha.0").supports_overlays());
        assert!(v("1.7.6").supports_overlays());
    }

    #[test]
    fn spec_examples_of_the_filter() {
        let tags = [
            "v1.1.2",
            "v1.2.0",
            "v1.5.0",
            "v1.5.0-alpha.0",
            "v1.5.1",
            "latest",
            "v1.14.2",
            "v1.15.0-alpha.1",
            "v1.15.0-alpha.0-12-gabc",
            "v1.15.0-beta.0",
            "v1.15.0-rc.2",
            "v1.15.0-alpha",
            "v1.15.0-alpha.1.2",
            "v1.15.0-gamma.1",
            "v1.14.0-alpha.1",
            "sha256-0123.sig",
        ];
        let got = filter_versions(tags, &DEFAULT_MIN_VERSION, &[]);
        assert_eq!(
            shown(&got),
            [
                "v1.2.0",
                "v1.5.0",
                "v1.5.1",
                "v1.14.2",
                "v1.15.0-alpha.1",
                "v1.15.0-beta.0",
                "v1.15.0-rc.2"
            ]
        );
    }

    #[test]
    fn pre_releases_leave_once_their_line_is_not_the_newest() {
        let while_newest = filter_versions(["v1.15.0-alpha.1", "v1.14.2"], &DEFAULT_MIN_VERSION, &[]);
        assert_eq!(shown(&while_newest), ["v1.14.2", "v1.15.0-alpha.1"]);
        let later = filter_versions(
            ["v1.15.0-alpha.1", "v1.14.2", "v1.16.0"],
            &DEFAULT_MIN_VERSION,
            &[],
        );
        assert_eq!(shown(&later), ["v1.14.2", "v1.16.0"]);
        // The newest tag counts even when it is itself dropped: a git-describe build of 1.16
        // makes 1.16 the newest line.
        let describe = filter_versions(
            ["v1.15.0-alpha.1", "v1.16.0-alpha.0-3-gdeadbee", "v1.16.0-alpha.0"],
            &DEFAULT_MIN_VERSION,
            &[],
        );
        assert_eq!(shown(&describe), ["v1.16.0-alpha.0"]);
    }

    #[test]
    fn minimum_and_broken_versions_are_dropped() {
        let tags = ["v1.1.2", "v1.2.0-rc.1", "v1.2.0", "v1.13.1", "v1.13.2", "1.13.2"];
        let got = filter_versions(tags, &DEFAULT_MIN_VERSION, &[v("1.13.1")]);
        assert_eq!(shown(&got), ["v1.2.0", "v1.13.2"]);
        let got = filter_versions(tags, &v("1.13.0"), &[]);
        assert_eq!(shown(&got), ["v1.13.1", "v1.13.2"]);
        assert!(filter_versions(Vec::<String>::new(), &DEFAULT_MIN_VERSION, &[]).is_empty());
        assert!(filter_versions(["latest"], &DEFAULT_MIN_VERSION, &[]).is_empty());
    }

    #[test]
    fn the_stand_in_release() {
        let tags = [
            "v1.1.2",
            "v1.6.4",
            "v1.7.6",
            "v1.9.5",
            "v1.10.7",
            "v1.11.3",
            "v1.12.1",
            "v1.13.0-alpha.1",
            "v1.12.0-alpha.0-12-gabc",
        ];
        let got = filter_versions(tags, &DEFAULT_MIN_VERSION, &[]);
        assert_eq!(
            shown(&got),
            [
                "v1.6.4",
                "v1.7.6",
                "v1.9.5",
                "v1.10.7",
                "v1.11.3",
                "v1.12.1",
                "v1.13.0-alpha.1"
            ]
        );
    }

    #[test]
    fn serde_round_trip_uses_the_v_form() {
        let json = serde_json::to_string(&vec![v("1.12.1")]).expect("json");
        assert_eq!(json, "[\"v1.12.1\"]");
        let back: Vec<TalosVersion> = serde_json::from_str("[\"1.12.1\",\"v1.2.0\"]").expect("parse");
        assert_eq!(back, vec![v("1.12.1"), v("1.2.0")]);
    }
}
