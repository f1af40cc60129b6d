//! `[ips]` and `[ips.dlp]` of the configuration file: what the IPS loads and how it acts.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::classification::Classifications;
use super::reference::References;
use super::header::Vars;
use super::ips::Options;

/// `[ips]`: rules scanned on decrypted traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpsSettings {
    pub enabled: bool,
    pub mode: super::ips::IpsMode,
    pub level: super::ips::Level,
    /// Load the bundled rules (basic protection and virtual patching).
    pub default_rules: bool,
    /// More rule files (Suricata-compatible subset).
    pub rules: Vec<String>,
    /// Bytes of each HTTP body scanned.
    pub body_depth: usize,
    /// HTTP the followers cannot follow further (a head over 64 KiB, an invalid head or chunk
    /// framing, a broken HTTP/2 frame): "block" (in block mode; the default) or "alert".
    pub unfollowable: super::ips::Unfollowable,
    /// What HTTP body bytes past `body_depth` go through: "skip" (no database) or "stream".
    pub past_body_depth: super::ips::PastBodyDepth,
    /// Source or destination networks whose flows skip the IPS (the protection whitelist).
    pub whitelist: Vec<String>,
    /// Address and port variables of rule headers (`HOME_NET = "[10.0.0.0/8]"`,
    /// `HTTP_PORTS = "[80,443]"`), over Suricata's defaults.
    pub vars: BTreeMap<String, String>,
    /// A `classification.config` of the operator's, instead of the bundled one.
    pub classification: Option<String>,
    /// A `reference.config` of the operator's, instead of the bundled one.
    pub reference: Option<String>,
    /// suricata-update's tuning files (control::update), applied to the rule files in this
    /// order at start and at every reload.
    pub disable_conf: Option<String>,
    pub enable_conf: Option<String>,
    pub drop_conf: Option<String>,
    pub modify_conf: Option<String>,
    pub dlp: DlpSettings,
}

impl IpsSettings {
    /// The compile options these settings give; a bad variable or classification file is an
    /// error naming the setting.
    pub fn options(&self) -> anyhow::Result<Options> {
        let classifications = match &self.classification {
            None => Classifications::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("ips.classification: reading {path}: {e}"))?;
                Classifications::parse(&text).map_err(|e| anyhow::anyhow!("ips.classification: {path}: {e}"))?
            }
        };
        let references = match &self.reference {
            None => References::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("ips.reference: reading {path}: {e}"))?;
                References::parse(&text).map_err(|e| anyhow::anyhow!("ips.reference: {path}: {e}"))?
            }
        };
        Ok(Options {
            mode: self.mode,
            level: self.level,
            body_depth: self.body_depth,
            unfollowable: self.unfollowable,
            past_body_depth: self.past_body_depth,
            vars: Vars::with(&self.vars).map_err(|e| anyhow::anyhow!("{e}"))?,
            classifications,
            references,
        })
    }
}

/// `[ips.dlp]`: data leak detectors on outbound plaintext, each with a threshold and action.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DlpSettings {
    pub enabled: bool,
    pub payment_card: super::dlp::DetectorSettings,
    pub iban: super::dlp::DetectorSettings,
    pub email: super::dlp::DetectorSettings,
    pub aws_access_key: super::dlp::DetectorSettings,
    pub private_key: super::dlp::DetectorSettings,
    pub chinese_id: super::dlp::DetectorSettings,
}

impl Default for DlpSettings {
    fn default() -> Self {
        use super::dlp::DetectorSettings as D;
        Self {
            enabled: true,
            payment_card: D::default(),
            iban: D::default(),
            // One address is correspondence; twenty in one flow is a list leaving.
            email: D { threshold: 20, ..D::default() },
            aws_access_key: D::default(),
            private_key: D::default(),
            chinese_id: D::default(),
        }
    }
}

impl DlpSettings {
    pub fn detectors(&self) -> Vec<(super::dlp::Detector, super::dlp::DetectorSettings)> {
        use super::dlp::Detector as D;
        if !self.enabled {
            return Vec::new();
        }
        vec![
            (D::PaymentCard, self.payment_card),
            (D::Iban, self.iban),
            (D::Email, self.email),
            (D::AwsAccessKey, self.aws_access_key),
            (D::PrivateKey, self.private_key),
            (D::ChineseId, self.chinese_id),
        ]
    }
}

impl Default for IpsSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: super::ips::IpsMode::Monitor,
            level: super::ips::Level::Medium,
            default_rules: true,
            rules: Vec::new(),
            body_depth: 1 << 20,
            unfollowable: super::ips::Unfollowable::Block,
            past_body_depth: super::ips::PastBodyDepth::Skip,
            whitelist: Vec::new(),
            vars: BTreeMap::new(),
            classification: None,
            reference: None,
            disable_conf: None,
            enable_conf: None,
            drop_conf: None,
            modify_conf: None,
            dlp: DlpSettings::default(),
        }
    }
}
