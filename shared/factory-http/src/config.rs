//! HTTP configuration, read once at start from the environment.

use std::time::Duration;

/// Environment variable: the URL clients reach the factory at (links, talosctl URLs, installer
/// references). `http`/`https` with a host. Default `https://localhost/` (the Go default).
pub const ENV_EXTERNAL_URL: &str = "FACTORY_EXTERNAL_URL";
/// Environment variable: the base URL of the image routes in PXE scripts (`GET /pxe/...`), for a
/// deployment where iPXE reaches the factory at another address than browsers do (e.g. plain
/// `http://` on an internal name, for iPXE builds without HTTPS). Unset: [`ENV_EXTERNAL_URL`],
/// as the Go factory's `http.externalPXEURL`.
pub const ENV_EXTERNAL_PXE_URL: &str = "FACTORY_EXTERNAL_PXE_URL";
/// Environment variable: comma-separated CORS origins, e.g. `https://a.example,https://b.example`;
/// `*` allows any origin. Default `*` (the Go default `["*"]`).
pub const ENV_ALLOWED_ORIGINS: &str = "FACTORY_ALLOWED_ORIGINS";

/// Environment variable: base URL of the CDN in front of the content store (e.g. the CloudFront
/// distribution's `https://dxxxx.cloudfront.net/`). Built assets are then redirected to
/// `<base>/<object key>`. Unset: redirects go to presigned S3 URLs.
pub const ENV_ASSET_BASE_URL: &str = "FACTORY_ASSET_BASE_URL";
/// Environment variable: lifetime of presigned asset URLs in seconds (1 to 604800, S3's limit;
/// default 3600). Used when [`ENV_ASSET_BASE_URL`] is unset.
pub const ENV_ASSET_URL_TTL: &str = "FACTORY_ASSET_URL_TTL_SECONDS";

/// Default lifetime of presigned asset URLs: long enough for a slow multi-GiB download to start
/// (S3 checks the signature when the request starts, not while the body streams).
pub const DEFAULT_ASSET_URL_TTL: Duration = Duration::from_secs(3600);

/// Where the image route redirects a client for the bytes of a built asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetLinks {
    /// `<external URL>/assets/<key>`: this server streams the object itself (the local server).
    ObjectRoute,
    /// `<base>/<object key>`: a CDN serving the content store. Object keys are content
    /// addressed, so the CDN may cache them forever; `?filename=` is appended for the CDN's
    /// viewer-response function to turn into `Content-Disposition`.
    Cdn(String),
    /// A presigned store URL valid this long (no CDN configured); stores without presigned
    /// URLs fall back to the object route.
    Presigned(Duration),
}

/// The Go factory's default external URL.
pub const DEFAULT_EXTERNAL_URL: &str = "https://localhost/";

/// Why the configuration was refused (the process should stop: fail fast at start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{ENV_EXTERNAL_URL}={0:?}: an http:// or https:// URL with a host is required")]
    ExternalUrl(String),
    #[error("{ENV_EXTERNAL_PXE_URL}={0:?}: an http:// or https:// URL with a host is required")]
    ExternalPxeUrl(String),
    #[error("{ENV_ALLOWED_ORIGINS}: origin {0:?} is neither \"*\" nor scheme://host[:port]")]
    Origin(String),
    #[error("{ENV_ASSET_BASE_URL}={0:?}: an http:// or https:// URL with a host is required")]
    AssetBaseUrl(String),
    #[error("{ENV_ASSET_URL_TTL}={0:?}: a number of seconds from 1 to 604800 is required")]
    AssetUrlTtl(String),
}

/// What the HTTP layer needs to know about its deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// See [`ENV_EXTERNAL_URL`].
    pub external_url: String,
    /// See [`ENV_EXTERNAL_PXE_URL`]; `None`: the external URL ([`HttpConfig::pxe_base_url`]).
    pub external_pxe_url: Option<String>,
    /// See [`ENV_ALLOWED_ORIGINS`]; `["*"]` allows any origin.
    pub allowed_origins: Vec<String>,
    /// The `Server` header of every response.
    pub server_name: String,
    /// See [`AssetLinks`]; from the environment: [`ENV_ASSET_BASE_URL`] or presigned URLs.
    pub asset_links: AssetLinks,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            external_url: DEFAULT_EXTERNAL_URL.to_owned(),
            external_pxe_url: None,
            allowed_origins: vec!["*".to_owned()],
            server_name: default_server_name(),
            asset_links: AssetLinks::ObjectRoute,
        }
    }
}

/// `Image Factory talos-factory-rs <version>`: the Go factory's `Image Factory <tag>`, naming
/// this implementation so that clients and logs can tell the two apart.
pub fn default_server_name() -> String {
    format!("Image Factory talos-factory-rs {}", env!("CARGO_PKG_VERSION"))
}

impl HttpConfig {
    /// Reads [`ENV_EXTERNAL_URL`], [`ENV_EXTERNAL_PXE_URL`], [`ENV_ALLOWED_ORIGINS`],
    /// [`ENV_ASSET_BASE_URL`] and [`ENV_ASSET_URL_TTL`]; unset or empty variables take their
    /// defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`HttpConfig::from_env`], with the variables looked up by `lookup` (for tests and for
    /// callers with their own configuration source).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut config = Self::default();
        if let Some(url) = set(ENV_EXTERNAL_URL) {
            config = config.with_external_url(&url)?;
        }
        if let Some(url) = set(ENV_EXTERNAL_PXE_URL) {
            config = config.with_external_pxe_url(&url)?;
        }
        if let Some(origins) = set(ENV_ALLOWED_ORIGINS) {
            config = config.with_allowed_origins(origins.split(','))?;
        }
        config.asset_links = match set(ENV_ASSET_BASE_URL) {
            Some(base) => {
                if !is_http_url_with_host(&base) {
                    return Err(ConfigError::AssetBaseUrl(base));
                }
                AssetLinks::Cdn(base)
            }
            None => match set(ENV_ASSET_URL_TTL) {
                None => AssetLinks::Presigned(DEFAULT_ASSET_URL_TTL),
                Some(text) => match text.parse::<u64>() {
                    Ok(secs @ 1..=604_800) => AssetLinks::Presigned(Duration::from_secs(secs)),
                    _ => return Err(ConfigError::AssetUrlTtl(text)),
                },
            },
        };
        Ok(config)
    }

    /// Replaces the external URL after checking it is `http(s)://host...`.
    pub fn with_external_url(mut self, url: &str) -> Result<Self, ConfigError> {
        if !is_http_url_with_host(url) {
            return Err(ConfigError::ExternalUrl(url.to_owned()));
        }
        self.external_url = url.to_owned();
        Ok(self)
    }

    /// Sets the base URL of PXE scripts after checking it is `http(s)://host...`.
    pub fn with_external_pxe_url(mut self, url: &str) -> Result<Self, ConfigError> {
        if !is_http_url_with_host(url) {
            return Err(ConfigError::ExternalPxeUrl(url.to_owned()));
        }
        self.external_pxe_url = Some(url.to_owned());
        Ok(self)
    }

    /// Where PXE scripts point iPXE at the image routes: [`Self::external_pxe_url`], else the
    /// external URL.
    pub fn pxe_base_url(&self) -> &str {
        self.external_pxe_url.as_deref().unwrap_or(&self.external_url)
    }

    /// Replaces where built assets are linked to (a [`AssetLinks::Cdn`] base is checked).
    pub fn with_asset_links(mut self, links: AssetLinks) -> Result<Self, ConfigError> {
        if let AssetLinks::Cdn(base) = &links {
            if !is_http_url_with_host(base) {
                return Err(ConfigError::AssetBaseUrl(base.clone()));
            }
        }
        self.asset_links = links;
        Ok(self)
    }

    /// Replaces the CORS origins; blanks are skipped, an empty list means `*`.
    pub fn with_allowed_origins<'a>(
        mut self,
        origins: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ConfigError> {
        let mut list = Vec::new();
        for origin in origins.into_iter().map(str::trim).filter(|o| !o.is_empty()) {
            if origin != "*" && !is_origin(origin) {
                return Err(ConfigError::Origin(origin.to_owned()));
            }
            list.push(origin.to_owned());
        }
        if list.is_empty() {
            list.push("*".to_owned());
        }
        self.allowed_origins = list;
        Ok(self)
    }
}

/// `http://` or `https://` followed by a non-empty authority.
fn is_http_url_with_host(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let authority = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
    authority.is_some_and(|a| !a.is_empty() && !a.contains(char::is_whitespace))
}

/// A browser origin: scheme and authority, nothing after (no path, no trailing slash).
fn is_origin(origin: &str) -> bool {
    origin.split_once("://").is_some_and(|(scheme, authority)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            && !authority.is_empty()
            && !authority.contains(['/', '?', '#'])
            && authority.bytes().all(|b| b.is_ascii_graphic())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<HttpConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        HttpConfig::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_go_factory() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.external_url, "https://localhost/");
        assert_eq!(c.allowed_origins, vec!["*"]);
        assert_eq!(c.external_pxe_url, None);
        assert_eq!(c.pxe_base_url(), "https://localhost/");
        assert!(c.server_name.starts_with("Image Factory talos-factory-rs "));
        assert_eq!(c.asset_links, AssetLinks::Presigned(DEFAULT_ASSET_URL_TTL));
        assert_eq!(HttpConfig::default().asset_links, AssetLinks::ObjectRoute);
    }

    #[test]
    fn asset_links_come_from_the_cdn_base_or_the_presign_ttl() {
        let cdn = config(&[(ENV_ASSET_BASE_URL, "https://d1.cloudfront.net/")]).expect("cdn");
        assert_eq!(
            cdn.asset_links,
            AssetLinks::Cdn("https://d1.cloudfront.net/".into())
        );
        let ttl = config(&[(ENV_ASSET_URL_TTL, "600")]).expect("ttl");
        assert_eq!(ttl.asset_links, AssetLinks::Presigned(Duration::from_secs(600)));
        for bad in ["0", "604801", "ten"] {
            assert_eq!(
                config(&[(ENV_ASSET_URL_TTL, bad)]),
                Err(ConfigError::AssetUrlTtl(bad.into()))
            );
        }
        assert_eq!(
            config(&[(ENV_ASSET_BASE_URL, "d1.cloudfront.net")]),
            Err(ConfigError::AssetBaseUrl("d1.cloudfront.net".into()))
        );
    }

    #[test]
    fn pxe_scripts_use_the_external_pxe_url_when_set() {
        let c = config(&[
            (ENV_EXTERNAL_URL, "https://factory.example.com/"),
            (ENV_EXTERNAL_PXE_URL, "http://pxe.internal:8080/"),
        ])
        .expect("valid");
        assert_eq!(c.external_url, "https://factory.example.com/");
        assert_eq!(c.pxe_base_url(), "http://pxe.internal:8080/");
        let c = config(&[
            (ENV_EXTERNAL_URL, "https://factory.example.com/"),
            (ENV_EXTERNAL_PXE_URL, " "),
        ])
        .expect("blank is unset");
        assert_eq!(c.pxe_base_url(), "https://factory.example.com/");
        assert_eq!(
            config(&[(ENV_EXTERNAL_PXE_URL, "pxe.internal")]),
            Err(ConfigError::ExternalPxeUrl("pxe.internal".into()))
        );
    }

    #[test]
    fn reads_and_checks_the_variables() {
        let c = config(&[
            (ENV_EXTERNAL_URL, "https://factory.example.com"),
            (ENV_ALLOWED_ORIGINS, " https://a.example , ,http://b.example:8080"),
        ])
        .expect("valid");
        assert_eq!(c.external_url, "https://factory.example.com");
        assert_eq!(
            c.allowed_origins,
            vec!["https://a.example", "http://b.example:8080"]
        );

        assert_eq!(
            config(&[(ENV_EXTERNAL_URL, "factory.example.com")]),
            Err(ConfigError::ExternalUrl("factory.example.com".into()))
        );
        assert!(config(&[(ENV_EXTERNAL_URL, "https:///x")]).is_err());
        assert_eq!(
            config(&[(ENV_ALLOWED_ORIGINS, "https://a.example/")]),
            Err(ConfigError::Origin("https://a.example/".into()))
        );
        assert_eq!(
            config(&[(ENV_ALLOWED_ORIGINS, " , ")])
                .expect("blank")
                .allowed_origins,
            vec!["*"]
        );
    }
}
