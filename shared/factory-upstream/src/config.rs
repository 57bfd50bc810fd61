//! What the factory reads upstream (`artifacts.core.components.*`, spec §11) and how it checks it
//! (`containerSignature.*`).

use crate::verify::Verification;

/// Repository paths of the core release images, relative to the source (the registry adapter adds
/// its namespace prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Components {
    pub imager: String,
    pub installer_base: String,
    pub installer: String,
    pub extensions: String,
    pub overlays: String,
    pub talosctl_all: String,
}

impl Default for Components {
    fn default() -> Self {
        Components {
            imager: "siderolabs/imager".to_string(),
            installer_base: "siderolabs/installer-base".to_string(),
            installer: "siderolabs/installer".to_string(),
            extensions: "siderolabs/extensions".to_string(),
            overlays: "siderolabs/overlays".to_string(),
            talosctl_all: "siderolabs/talosctl-all".to_string(),
        }
    }
}

/// Upstream settings. There is deliberately no `Default`: whether signatures are checked must be
/// an explicit choice of the deployment.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub components: Components,
    pub verification: Verification,
}

impl UpstreamConfig {
    /// The default components with the given verification.
    pub fn new(verification: Verification) -> Self {
        UpstreamConfig {
            components: Components::default(),
            verification,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = Components::default();
        assert_eq!(c.imager, "siderolabs/imager");
        assert_eq!(c.installer_base, "siderolabs/installer-base");
        assert_eq!(c.installer, "siderolabs/installer");
        assert_eq!(c.extensions, "siderolabs/extensions");
        assert_eq!(c.overlays, "siderolabs/overlays");
        assert_eq!(c.talosctl_all, "siderolabs/talosctl-all");
        assert!(matches!(
            UpstreamConfig::new(Verification::Disabled).verification,
            Verification::Disabled
        ));
    }
}
