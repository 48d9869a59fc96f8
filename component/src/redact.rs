//! Redacted forms of credentials and tokens for display (SPEC §6).
//!
//! Short values are hidden entirely: showing 12 characters of a 13-character
//! token would show the token.

/// The client id as its first 4 characters plus `***`.
pub fn client_id(id: &str) -> String {
    if id.chars().count() <= 8 {
        return "***".to_owned();
    }
    let head: String = id.chars().take(4).collect();
    format!("{head}***")
}

/// A token as its first 8 and last 4 characters.
pub fn token(token: &str) -> String {
    let n = token.chars().count();
    if n < 24 {
        return "***".to_owned();
    }
    let head: String = token.chars().take(8).collect();
    let tail: String = token.chars().skip(n - 4).collect();
    format!("{head}...{tail}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn shows_only_the_allowed_parts() {
        assert_eq!(super::client_id("brasilintel-client"), "bras***");
        assert_eq!(super::client_id("short"), "***");
        assert_eq!(
            super::token("eyJhbGciOiJIUzI1NiJ9.payload.signature"),
            "eyJhbGci...ture"
        );
        assert_eq!(super::token("tiny-token"), "***");
    }
}
